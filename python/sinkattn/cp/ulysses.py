"""mode='ulysses' (DeepSpeed-Ulysses): all-to-all from sequence shards to head shards and back.

Rank r gets the whole sequence for query heads [r Hq/W, (r+1) Hq/W) and their kv heads, runs one
ordinary kernel call on it (the sink slice of those heads included: each row's softmax is complete
in that call, so the sink is counted once) and sends the output back to the sequence shards. K/V
heads are sent unrepeated when W divides Hkv; when Hkv divides W (more ranks than kv heads) each
kv head is repeated W/Hkv times so that every rank gets the one kv head its query heads read, and
the backward sums the repeated heads' gradients. The zigzag layout is supported by reordering the
gathered sequence into global order (and back).
"""

from __future__ import annotations

import torch

from .. import ops
from . import comm
from .layout import _fail
from .problem import Problem


def _perms(P: Problem):
    """(perm, inverse) between the all-to-all's rank-major rows and global order, or Nones."""
    perm = P.gathered_perm()
    if perm is None:
        return None, None
    return perm, torch.empty_like(perm).index_copy_(0, perm, torch.arange(perm.numel()))


class Ulysses:
    def __init__(self, P: Problem):
        W = P.world
        if P.hq % W:
            _fail("group", f"has {W} ranks, but mode='ulysses' needs a group size that divides "
                  f"the {P.hq} query heads")
        if P.hkv % W and W % P.hkv:
            _fail("group", f"has {W} ranks, but mode='ulysses' needs a group size that divides the "
                  f"{P.hkv} kv heads or is a multiple of it")
        self.P = P
        self.kv_rep = 1 if P.hkv % W == 0 else W // P.hkv
        self.perm, self.inv = P.cached("ulysses", lambda: _perms(P))
        h = P.hq // W
        self.heads = slice(P.rank * h, (P.rank + 1) * h)
        self.cu = None if not P.varlen else torch.tensor(P.bounds, dtype=torch.int32)


    def _on(self, device, which: str):
        return self.P.cached(f"ulysses-{which}-{device}", lambda: getattr(self, which).to(device))

    # rows: local packed (B*n, H, D) <-> global packed (B*S, H/W, D), global order
    def _to_heads(self, x):
        P = self.P
        y = comm.all_to_all(x, P.group, P.world, 1, 0)  # rank-major rows
        if self.perm is not None:
            y = y.index_select(0, self._on(y.device, "perm"))
        return y

    def _to_rows(self, y):
        P = self.P
        if self.perm is not None:
            y = y.index_select(0, self._on(y.device, "inv"))
        return comm.all_to_all(y, P.group, P.world, 0, 1)

    def _kernel_args(self, t, device):
        P = self.P
        if P.varlen:
            cu = self.P.cached(f"ulysses-cu-{device}", lambda: self.cu.to(device))
            return dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=P.max_doc,
                        max_seqlen_k=P.max_doc), t
        return {}, t.view((P.batch, P.total) + tuple(t.shape[1:]))

    def _mask(self):
        P = self.P
        causal = P.right == 0
        left = None if P.left < 0 else P.left
        right = 0 if causal else (None if P.right < 0 else P.right)
        return causal, (left, right)

    def forward(self, q, k, v, sinks):
        P = self.P
        if self.kv_rep > 1:
            k, v = (t.repeat_interleave(self.kv_rep, dim=1) for t in (k, v))
        with comm.profile_range("sinkattn.cp.ulysses.a2a", P.profile):
            qh, kh, vh = (self._to_heads(t) for t in (q, k, v))
        s = None if sinks is None else sinks[self.heads].contiguous()
        causal, window = self._mask()
        extra, q4 = self._kernel_args(qh, q.device)
        k4, v4 = (self._kernel_args(t, q.device)[1] for t in (kh, vh))
        with comm.profile_range("sinkattn.cp.ulysses.fwd", P.profile):
            o4, l4 = ops.fwd(q4, k4, v4, s, causal=causal, window=window, scale=P.scale, **extra)
        lse_h = l4 if P.varlen else l4.permute(1, 0, 2).reshape(l4.shape[1], -1)  # (h, rows)
        self.saved = (qh, kh, vh, o4, l4, s, q4.shape, k4.shape)
        with comm.profile_range("sinkattn.cp.ulysses.a2a", P.profile):
            out = self._to_rows(o4.reshape(qh.shape))
            lse = self._to_rows(lse_h.t().unsqueeze(-1)).squeeze(-1).t()  # (Hq, local rows)
        return out, lse.contiguous()

    def backward(self, dout, q, k, v, out, lse, sinks):  # dsink: None, api.py computes it
        P = self.P
        qh, kh, vh, o4, l4, s, qs, ks = self.saved
        doh = self._to_heads(dout)
        causal, window = self._mask()
        extra, _ = self._kernel_args(qh, q.device)
        dq4, dk4, dv4, _ = ops.bwd(doh.view(qs), qh.view(qs), kh.view(ks), vh.view(ks), o4, l4, s,
                                   causal=causal, window=window, scale=P.scale,
                                   deterministic=P.deterministic, **extra)
        dq = self._to_rows(dq4.reshape(qh.shape))
        dk, dv = (self._to_rows(t.reshape(kh.shape)) for t in (dk4, dv4))
        if self.kv_rep > 1:  # sum the gradients of each kv head's copies
            dk, dv = (t.view(t.shape[0], P.hkv, self.kv_rep, t.shape[-1]).sum(2) for t in (dk, dv))
        return dq, dk, dv, None
