"""Runs a plan's kernel calls on this rank: forward partials merged into accumulators, backward
gradients (from the FINAL out and lse) added into gradient accumulators.

Tensors are packed varlen views: q (T, hq, D), keys (Tk, hkv, D); hq / hkv may be a head group
(a slice of the heads: q heads [i * g, (i + g') * g) read kv heads [i, i + g')). Partials are
computed without sinks and the caller merges the sink once at the end (merge.add_sink), except in
forward_complete, whose calls each hold all of their rows' keys and so take the sinks directly.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import ops
from . import merge
from .plan import Call


def _cu(call: Call, device) -> tuple:
    """The call's cu_seqlens as int32 tensors on `device`, made once per call and device."""
    cache = call.__dict__.setdefault("_cu", {})
    key = str(device)
    if key not in cache:
        cache[key] = (torch.tensor(call.cu_q, dtype=torch.int32, device=device),
                      torch.tensor(call.cu_k, dtype=torch.int32, device=device))
    return cache[key]


def _args(c: Call, device, scale) -> dict:
    cu_q, cu_k = _cu(c, device)
    causal, window = c.window()
    args = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=c.max_q, max_seqlen_k=c.max_k,
                causal=causal, window=window, scale=scale)
    if c.zigzag is not None:
        args["zigzag"] = c.zigzag
    return args


def forward(calls: Sequence[Call], q, k, v, scale, acc_out, acc_lse) -> None:
    """Merges every call's partial into acc_out (T, hq, D) fp32 / acc_lse (hq, T) fp32."""
    for c in calls:
        out, lse = ops.fwd(q[c.q0:c.q1], k[c.k0:c.k1], v[c.k0:c.k1], None,
                           **_args(c, q.device, scale))
        merge.merge_into(acc_out[c.q0:c.q1], acc_lse[:, c.q0:c.q1], out, lse)


def sink_only(q, hq: int, sinks) -> tuple:
    """(out, lse) of rows that see no key: out 0 in q's shape and dtype, lse (hq, T) the sink or
    -inf; forward_complete then overwrites the rows its calls cover."""
    T = q.shape[0]
    out = q.new_zeros(q.shape)
    lse = q.new_full((hq, T), -torch.inf, dtype=torch.float32)
    if sinks is not None:
        lse.copy_(sinks.detach().float().unsqueeze(1).expand(hq, T))
    return out, lse


def forward_complete(calls: Sequence[Call], q, k, v, sinks, scale, out, lse) -> None:
    """For plans where every query row is in at most one call, together with ALL the keys it can
    see (the gathered-K/V plans): each call runs with the sinks, so its output is final and
    nothing is merged. out (T, hq, D) and lse (hq, T) come pre-filled with a row that sees no key
    (out 0, lse = the sink, or -inf) for the rows no call covers."""
    for c in calls:
        o, l = ops.fwd(q[c.q0:c.q1], k[c.k0:c.k1], v[c.k0:c.k1], sinks, **_args(c, q.device, scale))
        for a, b in c.pieces:  # not the gaps: their rows may belong to another call
            out[a:b] = o[a - c.q0:b - c.q0]
            lse[:, a:b] = l[:, a - c.q0:b - c.q0]


def run_one(c: Call, q, k, v, sinks, scale):
    """One call's (out, lse) as the kernel returns them."""
    return ops.fwd(q[c.q0:c.q1], k[c.k0:c.k1], v[c.k0:c.k1], sinks, **_args(c, q.device, scale))


def backward(calls: Sequence[Call], dout, q, k, v, out, lse, scale, deterministic, dq, dk,
             dv) -> None:
    """Adds every call's dq, dk, dv (fp32 accumulators shaped like q, k, v) computed against the
    final out (q's dtype) and lse (hq, T)."""
    for c in calls:
        gq, gk, gv, _ = ops.bwd(dout[c.q0:c.q1], q[c.q0:c.q1], k[c.k0:c.k1], v[c.k0:c.k1],
                                out[c.q0:c.q1], lse[:, c.q0:c.q1], None,
                                deterministic=deterministic, **_args(c, q.device, scale))
        dq[c.q0:c.q1] += gq
        dk[c.k0:c.k1] += gk
        dv[c.k0:c.k1] += gv
