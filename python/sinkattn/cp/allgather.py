"""mode='allgather' (llama3 style): gather K/V from every rank, attend the local queries to them.

Only the Hkv heads are gathered (no GQA repetition), `heads_k_stride` kv heads at a time: the next
head group's all-gather is in flight while the current one computes. The gathered rows are put in
global order (a no-op for the contiguous layout with one sequence), so a query chunk sees its keys
as one range per document: with the contiguous layout one varlen call per head group, documents
crossing chunk boundaries included.

With the zigzag layout a rank's two query chunks r and 2W-1-r of every document need overlapping
key ranges [0, (r+1)C) and [0, (2W-r)C) of that document. FUSED (the default): one kernel call per
head group for both chunks of every document, the kernel placing each row at its global position
(problem.zigzag_rank / zigzag_world of the C ABI), so the short chunk's tiles fill the SMs next to
the long chunk's. UNFUSED (fused=False, SINKATTN_CP_FUSED=0): two calls per head group, one per
query chunk, each bottom-right aligned on its own key range [0, end of the chunk). The forward and
the backward choose separately (flash_compat's use_fused_kernel_forward / _backward).

The backward gathers K/V again, computes dK/dV for the whole gathered range and reduce-scatters
them (fp32) back to their owners, overlapped with the next head group. With verify, a fused
backward is recomputed unfused and compared (the forward is compared in api._verify).
"""

from __future__ import annotations

import torch

from . import comm, local, plan, verify
from .problem import Problem


def fused_call(P: Problem) -> plan.Call:
    """Every document's two zigzag chunks (of every batch entry) as ONE varlen call against the
    gathered keys in global order: sequence d has the 2 * len_d / (2W) local query rows of
    document d (local offsets = global / W) and all len_d gathered key rows."""
    cu_q, cu_k = [0], [0]
    for _ in range(P.batch):
        for a, b in zip(P.bounds, P.bounds[1:]):
            cu_q.append(cu_q[-1] + (b - a) // P.world)
            cu_k.append(cu_k[-1] + b - a)
    return plan.Call(0, cu_q[-1], 0, cu_k[-1], P.left, P.right, cu_q, cu_k, [(0, cu_q[-1])],
                     zigzag=(P.rank, P.world))


class AllGather:
    def __init__(self, P: Problem):
        self.P = P
        self._perm_cpu = P.cached("allgather-perm", P.gathered_perm)
        # forward / backward kernel calls (fused: one per head group; see the module docstring)
        self.fwd_calls = self._calls(P.fused)
        self.bwd_calls = self._calls(P.fused_bwd)
        g = P.heads_k_stride
        self.groups = [(h, h + g) for h in range(0, P.hkv, g)]
        self.rep = P.hq // P.hkv

    def _calls(self, fused: bool):
        P = self.P
        if fused:
            return P.cached("allgather-fused", lambda: [fused_call(P)])
        return P.cached("allgather-calls",
                        lambda: plan.build(P.segs(P.rank), P.doc_segs(), P.left, P.right))

    def _perm(self, device):
        if self._perm_cpu is None:
            return None
        return self.P.cached(f"allgather-perm-{device}", lambda: self._perm_cpu.to(device))

    def _start(self, k, v, h0, h1) -> comm.Pending:
        with comm.profile_range("sinkattn.cp.allgather.kv", self.P.profile):
            return comm.all_gather_rows(torch.stack((k[:, h0:h1], v[:, h0:h1]), 1), self.P.group,
                                        self.P.world)

    def _keys(self, pending: comm.Pending):
        with comm.profile_range("sinkattn.cp.allgather.wait", self.P.profile):
            kv = pending.wait()
        perm = self._perm(kv.device)
        if perm is not None:
            kv = kv.index_select(0, perm)
        return kv

    def _gathered(self, k, v):
        """Yields (h0, h1, kv) per head group, kv (rows, 2, h1 - h0, D) gathered in key order;
        the next group's all-gather is in flight while the caller computes on this one."""
        nxt = self._start(k, v, *self.groups[0])
        for i, (h0, h1) in enumerate(self.groups):
            kv = self._keys(nxt)
            if i + 1 < len(self.groups):
                nxt = self._start(k, v, *self.groups[i + 1])
            yield h0, h1, kv

    def forward(self, q, k, v, sinks):
        # Every local row meets all of its keys in exactly one call (one key range per document),
        # so the calls take the sinks themselves and nothing is merged.
        P, T = self.P, q.shape[0]
        calls = self.fwd_calls
        if len(self.groups) == 1 and len(calls) == 1 and plan.covers(calls[0], T):
            kv = self._keys(self._start(k, v, 0, P.hkv))
            with comm.profile_range("sinkattn.cp.allgather.fwd", P.profile):
                return local.run_one(calls[0], q, kv[:, 0], kv[:, 1], sinks, P.scale)
        out, lse = local.sink_only(q, P.hq, sinks)  # rows no call covers see only the sink
        for h0, h1, kv in self._gathered(k, v):
            hs = slice(h0 * self.rep, h1 * self.rep)
            with comm.profile_range("sinkattn.cp.allgather.fwd", P.profile):
                local.forward_complete(calls, q[:, hs], kv[:, 0], kv[:, 1],
                                       None if sinks is None else sinks[hs], P.scale, out[:, hs],
                                       lse[hs])
        return out, lse

    def backward(self, dout, q, k, v, out, lse, sinks):  # dsink: None, api.py computes it
        P = self.P
        dq, dk, dv = self._backward(self.bwd_calls, dout, q, k, v, out, lse)
        if P.verify and P.fused_bwd:
            with torch.no_grad():
                dq2, dk2, dv2 = self._backward(self._calls(False), dout, q, k, v, out, lse)
            verify.check_close(P.group, q.dtype, q.device, "fused and unfused zigzag backward",
                               [("dq", dq, dq2, True), ("dk", dk, dk2, True),
                                ("dv", dv, dv2, True)])
        return dq.to(q.dtype), dk, dv, None

    def _backward(self, calls, dout, q, k, v, out, lse):
        """(dq fp32, dk, dv) of this rank's rows through `calls`."""
        P = self.P
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        scattering = []
        for h0, h1, kv in self._gathered(k, v):
            hs = slice(h0 * self.rep, h1 * self.rep)
            dkv = torch.zeros(kv.shape, dtype=torch.float32, device=kv.device)
            with comm.profile_range("sinkattn.cp.allgather.bwd", P.profile):
                local.backward(calls, dout[:, hs], q[:, hs], kv[:, 0], kv[:, 1], out[:, hs],
                               lse[hs], P.scale, P.deterministic, dq[:, hs], dkv[:, 0], dkv[:, 1])
            perm = self._perm(kv.device)
            if perm is not None:  # back to the rank-major order of the all-gather
                dkv = torch.empty_like(dkv).index_copy_(0, perm, dkv)
            with comm.profile_range("sinkattn.cp.allgather.reduce_scatter", P.profile):
                scattering.append((h0, h1, comm.reduce_scatter_rows(dkv, P.group, P.world)))
        for h0, h1, pending in scattering:
            g = pending.wait()
            dk[:, h0:h1] = g[:, 0]
            dv[:, h0:h1] = g[:, 1]
        return dq, dk, dv
