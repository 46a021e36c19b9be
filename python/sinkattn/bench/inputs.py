"""Random inputs for a workload, in the library's token-major layout, shared by every peer."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from .suites import Workload


@dataclasses.dataclass
class Inputs:
    q: torch.Tensor                # (B, Sq, Hq, D), or (Tq, Hq, D) for varlen
    k: torch.Tensor                # (B, Sk, Hkv, D), or (Tk, Hkv, D)
    v: torch.Tensor                # like k
    sinks: Optional[torch.Tensor]  # (Hq,) in the workload dtype (as GPT-OSS stores them), or None
    dout: torch.Tensor             # like q: the upstream gradient for fwd+bwd
    cu_seqlens: Optional[torch.Tensor]  # (N + 1,) int32 for varlen (q and k share it), else None

    def leaves(self, with_sinks: bool) -> List[torch.Tensor]:
        """Tensors a backward differentiates: q, k, v (and sinks when the peer uses them)."""
        out = [self.q, self.k, self.v]
        if with_sinks and self.sinks is not None:
            out.append(self.sinks)
        return out

    def nbytes(self) -> int:
        ts = [self.q, self.k, self.v, self.dout]
        return sum(t.numel() * t.element_size() for t in ts)


def set_bytes(wl: Workload) -> int:
    """Bytes of one input set (q, k, v, dout), without allocating it."""
    elem = torch.empty((), dtype=getattr(torch, wl.dtype)).element_size()
    return elem * wl.head_dim * (2 * wl.rows_q * wl.heads_q + 2 * wl.rows_k * wl.heads_kv)


def make_inputs(wl: Workload, device: torch.device, seed: int, requires_grad: bool) -> Inputs:
    """Fresh N(0,1) q/k/v/dout (never zeros: they hide unwritten outputs) and sinks around 4,
    large enough that a missing sink term shows clearly above bf16 rounding in the check."""
    dtype = getattr(torch, wl.dtype)
    g = torch.Generator(device=device).manual_seed(seed)  # on the device: 64k-token sets are GBs

    def rnd(*shape):
        t = torch.randn(*shape, generator=g, device=device, dtype=dtype)
        return t.requires_grad_(requires_grad)

    if wl.varlen:
        qs = (wl.rows_q, wl.heads_q, wl.head_dim)
        ks = (wl.rows_k, wl.heads_kv, wl.head_dim)
        cu = [0]
        for n in wl.doc_lens:
            cu.append(cu[-1] + n)
        cu_seqlens = torch.tensor(cu, dtype=torch.int32, device=device)
    else:
        qs = (wl.batch, wl.seqlen_q, wl.heads_q, wl.head_dim)
        ks = (wl.batch, wl.seqlen_k, wl.heads_kv, wl.head_dim)
        cu_seqlens = None
    sinks = None
    if wl.sinks:
        sinks = (4.0 + rnd(wl.heads_q).detach()).requires_grad_(requires_grad)
    dout = rnd(*qs).detach()
    return Inputs(rnd(*qs), rnd(*ks), rnd(*ks), sinks, dout, cu_seqlens)
