"""Plain fp64 reference (dense scores, explicit mask, a sink column) and the pre-timing check.

Written from the semantics in include/sinkattn/sinkattn.h, sharing nothing with any peer: every
implementation is compared with this on a small slice of each workload before it is timed.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from . import flops
from .inputs import Inputs
from .suites import FWD, Workload

# ||x - ref|| / ||ref|| a correct implementation stays under, per input dtype: bf16/fp16 operands
# give 1e-3..1e-2 (softmax in bf16 for the eager path, the upper end); fp32 lands far under 1e-4.
TOLERANCE = {"bfloat16": 3e-2, "float16": 1e-2, "float32": 1e-4}


def _attend(q, k, v, sinks: Optional[torch.Tensor], left: int, right: int, scale: float):
    """One sequence: q (Sq, Hq, D), k/v (Sk, Hkv, D), fp64 -> out (Sq, Hq, D)."""
    sq, hq, _ = q.shape
    sk, hkv, _ = k.shape
    if sq == 0 or sk == 0:  # an empty document: no rows, or rows that see no key (output 0)
        return q.new_zeros(sq, hq, v.shape[-1])
    k = k.repeat_interleave(hq // hkv, dim=1)
    v = v.repeat_interleave(hq // hkv, dim=1)
    logits = torch.einsum("qhd,khd->hqk", q, k) * scale
    pos = torch.arange(sq).unsqueeze(1) + (sk - sq)  # bottom-right aligned query positions
    key = torch.arange(sk).unsqueeze(0)
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        visible &= key >= pos - left
    if right >= 0:
        visible &= key <= pos + right
    logits = logits.masked_fill(~visible, -math.inf)
    if sinks is not None:  # the sink joins the denominator as one more column with no value
        logits = torch.cat([logits, sinks.view(hq, 1, 1).expand(hq, sq, 1)], dim=-1)
    m = logits.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # a row that sees nothing
    e = torch.exp(logits - m)
    den = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(den == 0, torch.ones_like(den), den)
    p = p[..., :sk]
    return torch.einsum("hqk,khd->qhd", p, v)


def reference(wl: Workload, inp: Inputs, with_sinks: bool, mode: str) -> Dict[str, torch.Tensor]:
    """fp64 CPU results: 'out', and for fwd+bwd 'dq', 'dk', 'dv' (and 'dsink')."""
    want_grad = mode != FWD
    leaves = [t.detach().to("cpu", torch.float64).requires_grad_(want_grad)
              for t in inp.leaves(with_sinks)]
    q, k, v = leaves[:3]
    sinks = leaves[3] if len(leaves) > 3 else None
    left, right = flops.window_bounds(wl.causal, wl.window)
    with torch.enable_grad() if want_grad else torch.no_grad():
        if wl.varlen:
            cu = inp.cu_seqlens.tolist()
            out = torch.cat([_attend(q[a:b], k[a:b], v[a:b], sinks, left, right, wl.scale)
                             for a, b in zip(cu[:-1], cu[1:])])
        else:
            out = torch.stack([_attend(q[b], k[b], v[b], sinks, left, right, wl.scale)
                               for b in range(wl.batch)])
        res = {"out": out.detach()}
        if want_grad:
            grads = torch.autograd.grad(out, leaves, inp.dout.to("cpu", torch.float64))
            for name, g in zip(("dq", "dk", "dv", "dsink"), grads):
                res[name] = g
    return res


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref||; inf when x has a NaN/inf or the wrong shape."""
    x = x.detach().to("cpu", torch.float64)
    if x.shape != ref.shape or not torch.isfinite(x).all():
        return math.inf
    den = ref.norm().item()
    return (x - ref).norm().item() / (den if den > 0 else 1.0)


def compare(results: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Relative error of each output the reference has."""
    return {name: rel_err(results[name], r) if name in results else math.inf
            for name, r in ref.items()}
