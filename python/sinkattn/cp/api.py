"""sinkattn.cp.attention: differentiable context-parallel attention over a process group."""

from __future__ import annotations

import os
import struct
import zlib

import torch

from .. import ops
from . import comm, merge
from . import verify as _verify_mod
from .allgather import AllGather
from .halo import Halo
from .layout import LAYOUTS, _cu_list, _fail, check_layout, local_ranges
from .problem import Problem
from .ring import Ring
from .ulysses import Ulysses

MODES = {"allgather": AllGather, "ring": Ring, "halo": Halo, "ulysses": Ulysses}
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


class _CPAttention(torch.autograd.Function):
    """(q, k, v, sinks) packed local rows -> (out, lse); backward via the mode, dsink partial."""

    @staticmethod
    def forward(ctx, q, k, v, sinks, impl):
        out, lse = impl.forward(q, k, v, None if sinks is None else sinks.detach())
        ctx.impl = impl
        ctx.save_for_backward(q, k, v, out, lse, sinks)
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, sinks = ctx.saved_tensors
        if dout is None:
            return None, None, None, None, None
        dout = dout.to(q.dtype)
        want_dsink = sinks is not None and ctx.needs_input_grad[3]
        dq, dk, dv, dsink = ctx.impl.backward(dout, q, k, v, out, lse,
                                              sinks.detach() if want_dsink else None)
        if not want_dsink:
            dsink = None
        elif dsink is None:  # the mode left it to us
            dsink = merge.dsink_partial(dout, out, lse, sinks)
        return dq, dk, dv, dsink, None


def _signature(q, k, v, sinks, cu, mode, layout, causal, window, scale, stride, flags) -> dict:
    """Everything every rank must agree on, as ints (so one all-gather can compare them)."""
    def dims(t, name):
        shape = list(t.shape) + [0] * (4 - t.dim())
        return {f"{name}.shape[{i}]": s for i, s in enumerate(shape[:4])} | {f"{name}.dim": t.dim()}
    sig = {"mode": list(MODES).index(mode) if mode in MODES else -1,
           "layout": LAYOUTS.index(layout) if layout in LAYOUTS else -1}
    for name, t in (("q", q), ("k", k), ("v", v)):
        sig |= dims(t, name)
        sig[f"{name}.dtype"] = _DTYPES.get(t.dtype, -1)
    sig["sinks"] = -1 if sinks is None else sinks.numel()
    sig["cu_seqlens"] = -1 if cu is None else zlib.crc32(struct.pack(f"{len(cu)}q", *cu))
    sig["causal"] = int(bool(causal))
    w = window if isinstance(window, (tuple, list)) else (window, window)
    sig["window"] = zlib.crc32(repr(tuple(w)).encode())
    sig["scale"] = -1 if scale is None else _code(
        scale, lambda x: struct.unpack("q", struct.pack("d", float(x)))[0])
    sig["heads_k_stride"] = -1 if stride is None else _code(stride, int)
    for name, f in flags.items():
        sig[name] = int(bool(f))
    return sig


def _code(value, conv) -> int:
    """conv(value) for the signature; a value conv cannot take gets a code from its repr (the same
    on every rank), and the checks after the comparison refuse it naming the argument."""
    try:
        return conv(value)
    except (TypeError, ValueError, OverflowError):
        return zlib.crc32(repr(value).encode()) + (1 << 40)


def _default_stride(hkv: int) -> int:
    """kv heads per all-gather round: the largest divisor of Hkv up to Hkv / 2, so that at least
    two rounds exist to overlap (1 round when Hkv = 1)."""
    cap = max(1, hkv // 2)
    return max(d for d in range(1, cap + 1) if hkv % d == 0)


def attention(q, k, v, sinks=None, *, group=None, mode: str = "allgather",
              layout: str = "contiguous", cu_seqlens=None, causal: bool = True, window=None,
              scale=None, heads_k_stride=None, fused=None, verify=None, profile=None,
              deterministic: bool = False, return_lse: bool = False, check=None):
    """Context-parallel attention: every rank of `group` holds one shard of the sequence.

    Args:
        q, k, v: this rank's shard. Fixed length: (B, S_local, Hq, D) / (B, S_local, Hkv, D), the
            shard of a (B, S, H, D) tensor along the sequence (S = W * S_local). Packed varlen:
            (T_local, Hq, D) / (T_local, Hkv, D) with `cu_seqlens` the GLOBAL document offsets of
            the whole packed batch (identical on every rank); documents may cross shards.
            Use `sinkattn.cp.shard` to cut full tensors.
        sinks: (Hq,) learned sink logits, replicated on every rank; differentiable. Its gradient is
            THIS RANK'S PARTIAL: the full dL/dsink is the sum over the group (all-reduce the
            .grad over `group`, as for every other parameter replicated across CP ranks).
        group: the process group (None = default). Every rank must pass the same arguments
            except the shards themselves; a mismatch raises ValueError on every rank.
        mode: 'allgather' (llama3: all-gather K/V heads in head groups, reduce-scatter dK/dV),
            'ring' (P2P rotation of K/V; with layout='zigzag' the zigzag ring), 'halo' (sliding
            window layers: only the rows the window reaches are exchanged) or 'ulysses'
            (all-to-all between sequence and head sharding).
        layout: 'contiguous' (rank r holds chunk r of W) or 'zigzag' (chunks r and 2W-1-r of 2W;
            for varlen every document is zigzagged on its own).
        causal, window, scale, deterministic: as in sinkattn.attention, applied to the GLOBAL
            positions (a query sees keys of its own document only, when varlen).
        heads_k_stride: allgather mode: kv heads per all-gather round (must divide Hkv); default
            the largest divisor of Hkv up to Hkv / 2, so the next round's gather overlaps compute.
        fused: allgather + zigzag: one kernel launch per head group for both query chunks (True),
            or the two-call path (False); a (forward, backward) pair chooses per direction.
            Default: fused, unless the environment variable SINKATTN_CP_FUSED=0. Only valid with
            mode='allgather', layout='zigzag'.
        verify: recompute the forward with another decomposition (a fused forward: the unfused
            path; otherwise 'ring', or 'allgather' for ring), and a fused backward with the
            unfused one, and raise RuntimeError on every rank on mismatch. Default:
            SINKATTN_CP_VERIFY.
        profile: NVTX / torch.profiler ranges around communication and compute. Default:
            SINKATTN_CP_PROFILE or SINKATTN_CP_NVTX.
        return_lse: also return the local lse, fp32 (B, Hq, S_local) or (Hq, T_local); it carries
            no gradient.
        check: all-gather a signature of the arguments first so that mismatches across ranks
            raise instead of hanging (one tiny collective per call; on an NCCL-only group also a
            GPU->host read, which a "cpu:gloo,cuda:nccl" process group avoids). Default: on,
            unless the environment variable SINKATTN_CP_CHECK=0.

    Returns: out like q (this rank's rows), or (out, lse).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            _fail(name, f"got {type(t).__name__}, expected a torch.Tensor", TypeError)
    rank, world = comm.rank_world(group)
    cu = _cu_list(cu_seqlens)
    fused, fused_bwd = _fused_flags(fused, mode, layout)
    verify = _env_flag("SINKATTN_CP_VERIFY") if verify is None else verify
    if profile is None:
        profile = _env_flag("SINKATTN_CP_PROFILE") or _env_flag("SINKATTN_CP_NVTX")
    if check is None:
        check = _env_flag("SINKATTN_CP_CHECK", True)
    if check:
        comm.check_consistent(group, q.device, _signature(
            q, k, v, sinks, cu, mode, layout, causal, window, scale, heads_k_stride,
            {"fused": fused, "fused_bwd": fused_bwd, "verify": verify,
             "deterministic": deterministic,
             "return_lse": return_lse}))
    # From here on every rank sees the same arguments, so every rank raises the same error.
    if mode not in MODES:
        _fail("mode", f"got {mode!r}, expected one of {', '.join(map(repr, MODES))}")
    check_layout(layout)
    if (fused or fused_bwd) and not (mode == "allgather" and layout == "zigzag"):
        _fail("fused", f"got True with mode={mode!r}, layout={layout!r}; the fused path is the "
              "zigzag all-gather (mode='allgather', layout='zigzag')")
    sinks, _, _, scale, left, right = ops.resolve(q, sinks, causal, window, scale, deterministic)
    varlen = cu is not None
    if varlen and q.dim() != 3:
        _fail("q", f"got shape {tuple(q.shape)} with cu_seqlens, expected 3 dims "
              "(total_q, heads_q, head_dim)")
    # dtype / device / head checks of the single-device op (varlen as a batch of one)
    ops._check_problem(*(t.unsqueeze(0) if varlen else t for t in (q, k, v)), sinks, None, None)
    if k.shape[-3] != q.shape[-3]:
        _fail("k", f"got {k.shape[-3]} local rows, expected {q.shape[-3]} (the rows of q): "
              "context parallelism shards self-attention, q and k/v cover the same tokens")
    hq, hkv, dim = q.shape[-2], k.shape[-2], q.shape[-1]
    if varlen:
        batch, rows = 1, q.shape[0]
        if cu[-1] != world * rows:
            _fail("cu_seqlens", f"ends at {cu[-1]}, expected group size {world} x {rows} local "
                  "rows; the group must be the one the sequence was sharded over")
        total, bounds = cu[-1], cu
    else:
        batch, rows = q.shape[0], q.shape[1]
        total, bounds = world * rows, [0, world * rows]
    local_ranges(layout, rank, world, total, cu, "cu_seqlens" if varlen else "q")  # divisibility
    stride = _default_stride(hkv) if heads_k_stride is None else heads_k_stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or hkv % stride:
        _fail("heads_k_stride", f"got {heads_k_stride!r}, expected a divisor of the {hkv} kv heads")
    P = Problem(group, rank, world, mode, layout, batch, rows, total, list(bounds), varlen, hq, hkv,
                dim, left, right, scale, deterministic, stride, bool(fused), bool(verify),
                bool(profile), bool(fused_bwd))
    impl = MODES[mode](P)
    qf, kf, vf = (t.reshape(-1, t.shape[-2], dim) for t in (q, k, v))
    out, lse = _CPAttention.apply(qf, kf, vf, sinks, impl)
    if verify:
        _verify(P, qf, kf, vf, sinks, out, lse)
    out = out.view(q.shape)
    if not return_lse:
        return out
    if not varlen:
        lse = lse.view(hq, batch, rows).permute(1, 0, 2)
    return out, lse


def _fused_flags(fused, mode, layout) -> tuple:
    """(forward, backward) fused switches from the argument (None, a bool or a pair) and
    SINKATTN_CP_FUSED; the default is fused for the zigzag all-gather, off elsewhere."""
    if fused is None:
        on = _env_flag("SINKATTN_CP_FUSED", True) and mode == "allgather" and layout == "zigzag"
        return on, on
    if isinstance(fused, (tuple, list)) and len(fused) == 2:
        return bool(fused[0]), bool(fused[1])
    if isinstance(fused, bool):
        return fused, fused
    _fail("fused", f"got {fused!r}, expected None, a bool or a (forward, backward) pair of bools",
          TypeError)


def _verify(P: Problem, q, k, v, sinks, out, lse) -> None:
    """Recomputes the forward with another decomposition (a fused one: unfused); raises on every
    rank when any rank disagrees."""
    alt_mode = "allgather" if P.mode == "ring" or P.fused else "ring"
    alt = Problem(**{**P.__dict__, "mode": alt_mode, "fused": False, "fused_bwd": False,
                     "verify": False, "_segs": {}})
    with torch.no_grad():
        o2, l2 = MODES[alt_mode](alt).forward(q, k, v, None if sinks is None else sinks.detach())
    what = f"mode={P.mode!r}{' (fused)' if P.fused else ''} and mode={alt_mode!r} (unfused)"
    _verify_mod.check_close(P.group, q.dtype, q.device, what,
                            [("out", out, o2, True), ("lse", lse, l2, False)])
