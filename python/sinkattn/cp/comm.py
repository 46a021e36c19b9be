"""Communication for context parallelism over torch.distributed (NCCL on GPU, gloo on CPU).

Every transfer is issued with async_op=True one block ahead of the compute that needs it (double
buffering: the modes keep two buffers, the one being computed on and the one being filled) and
waited on just before its result is read. On CUDA the transfers run on NCCL's internal stream: at
issue it waits for the work already queued on the compute stream (which produced the send
buffers), and `wait()` makes the compute stream wait for the transfer, so the compute launched in
between overlaps it. On the CPU (gloo) the same code runs the transfers on gloo's threads.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Sequence

import torch
import torch.distributed as dist

from .layout import _fail


def rank_world(group):
    if not dist.is_available() or not dist.is_initialized():
        _fail("group", "torch.distributed is not initialised; call "
              "torch.distributed.init_process_group first", RuntimeError)
    rank = dist.get_rank(group)
    if rank < 0:
        _fail("group", f"this process (global rank {dist.get_rank()}) is not a member of it")
    return rank, dist.get_world_size(group)


def global_rank(group, r: int) -> int:
    return r if group is None else dist.get_global_rank(group, r)


def check_consistent(group, device, fields: Dict[str, int]) -> None:
    """Raises ValueError on every rank when some rank passed different values (shapes, dtype, mode,
    window ...): one small all-gather, so a mismatch is an error and not a hang in a later
    collective whose sizes disagree. `fields` keep their order; the first differing one is named.
    With an NCCL-only group the comparison reads a GPU tensor back (a sync per call); a group
    that also has gloo for CPU tensors keeps it on the host."""
    names = list(fields)
    if "gloo" in str(dist.get_backend(group)):
        # e.g. init_process_group("cpu:gloo,cuda:nccl"): compare on the host, no GPU sync
        device = torch.device("cpu")
    mine = torch.tensor([fields[n] for n in names], dtype=torch.int64, device=device)
    world = dist.get_world_size(group)
    got = torch.empty(world, len(names), dtype=torch.int64, device=device)
    dist.all_gather_into_tensor(got.view(-1), mine, group=group)
    got = got.cpu()
    for j, n in enumerate(names):
        col = got[:, j].tolist()
        if any(x != col[0] for x in col):
            _fail(n, f"differs across the ranks of the group: {col} (rank order); every rank must "
                  "pass the same value")


def profile_range(name: str, enabled: bool):
    """A named range for profilers: NVTX on CUDA (visible in nsys) plus a torch.profiler label."""
    if not enabled:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.profiler.record_function(name))
    if torch.cuda.is_available():
        stack.enter_context(torch.cuda.nvtx.range(name))
    return stack


class Pending:
    """Async work handles plus the tensors they fill; wait() returns the tensors."""

    def __init__(self, works: Sequence, tensors, keep=()):
        # keep: send buffers, held until the transfer is done
        self.works, self.tensors, self.keep = list(works), tensors, keep

    def wait(self):
        for w in self.works:
            w.wait()
        self.works, self.keep = [], ()
        return self.tensors


def all_gather_rows(x: torch.Tensor, group, world: int) -> Pending:
    """Starts gathering (T, ...) from every rank into (W*T, ...), rank-major."""
    x = x.contiguous()
    out = x.new_empty((world * x.shape[0],) + tuple(x.shape[1:]))
    w = dist.all_gather_into_tensor(out, x, group=group, async_op=True)
    return Pending([w], out, (x,))


def reduce_scatter_rows(full: torch.Tensor, group, world: int) -> Pending:
    """Starts summing (W*T, ...) over ranks and keeping this rank's (T, ...) rows."""
    full = full.contiguous()
    out = full.new_empty((full.shape[0] // world,) + tuple(full.shape[1:]))
    w = dist.reduce_scatter_tensor(out, full, group=group, async_op=True)
    return Pending([w], out, (full,))


def exchange(group, sends: Sequence[tuple], recvs: Sequence[tuple]) -> Pending:
    """Starts point-to-point transfers: sends (tensor, group rank) and recvs (tensor, group rank),
    batched so that NCCL pairs them without deadlock. Returns the recv tensors."""
    ops: List = []
    for t, peer in sends:
        ops.append(dist.P2POp(dist.isend, t, global_rank(group, peer), group))
    for t, peer in recvs:
        ops.append(dist.P2POp(dist.irecv, t, global_rank(group, peer), group))
    works = dist.batch_isend_irecv(ops) if ops else []
    return Pending(works, [t for t, _ in recvs], [t for t, _ in sends])


def all_to_all(x: torch.Tensor, group, world: int, scatter_dim: int,
               gather_dim: int) -> torch.Tensor:
    """Splits x into W pieces along scatter_dim, sends piece j to rank j and concatenates the
    received pieces along gather_dim (synchronous: Ulysses needs the result right away)."""
    send = torch.stack(x.chunk(world, scatter_dim)).contiguous()  # (W, ...)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return torch.cat(recv.unbind(0), gather_dim)
