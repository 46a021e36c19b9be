"""Plain torch reference for sinkattn, written the transformers-eager way and sharing no code with
the library: build the mask with broadcasting, append the sink logit as an extra score column,
softmax, drop the column. Differentiable, so torch autograd gives the reference gradients.

Run it on float64 copies of the inputs for the truth, and in the inputs' own dtype for "the same
math done by torch in low precision" (the tolerance yardstick of DESIGN.md)."""

from __future__ import annotations

import torch


def visible(sq: int, sk: int, causal: bool, left: int, right: int, device=None) -> torch.Tensor:
    """(sq, sk) bool: query i sits at key position i + sk - sq (bottom-right alignment)."""
    pos = torch.arange(sq, device=device)[:, None] + (sk - sq)
    j = torch.arange(sk, device=device)[None, :]
    ok = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if causal:
        ok &= j <= pos
    elif right >= 0:
        ok &= j <= pos + right
    if left >= 0:
        ok &= j >= pos - left
    return ok


def attention(q, k, v, sinks=None, *, causal=True, left=-1, right=-1, scale=None, dtype=None):
    """q (B, Sq, Hq, D), k/v (B, Sk, Hkv, D) -> out (B, Sq, Hq, D), lse (B, Hq, Sq) (fp32 unless
    dtype is float64), computed in `dtype` (default: q's)."""
    dtype = dtype or q.dtype
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    group = hq // hkv
    qh = q.to(dtype).transpose(1, 2)                                   # B, Hq, Sq, D
    kh = k.to(dtype).repeat_interleave(group, dim=2).transpose(1, 2)   # B, Hq, Sk, D
    vh = v.to(dtype).repeat_interleave(group, dim=2).transpose(1, 2)
    scores = (qh @ kh.transpose(-1, -2)) * scale                       # B, Hq, Sq, Sk
    ok = visible(sq, sk, causal, left, right, q.device)
    scores = scores.masked_fill(~ok, float("-inf"))
    # Without a sink a row that sees nothing has no softmax: give it finite scores, zero it below.
    empty = ~ok.any(-1)[:, None]
    if sinks is not None:
        empty = torch.zeros_like(empty)
    scores = scores.masked_fill(empty, 0.0)
    if sinks is not None:
        col = sinks.to(dtype).view(1, hq, 1, 1).expand(b, hq, sq, 1)
        scores = torch.cat([scores, col], dim=-1)
    lse = torch.logsumexp(scores.to(torch.float32) if dtype != torch.float64 else scores, dim=-1)
    probs = torch.softmax(scores, dim=-1)[..., :sk].masked_fill(empty, 0.0)
    out = (probs @ vh).transpose(1, 2)
    lse = lse.masked_fill(empty[:, 0], float("-inf"))
    return out.to(q.dtype if dtype != torch.float64 else dtype), lse


def varlen_attention(q, k, v, cu_q, cu_k, sinks=None, **kw):
    """Packed: q (Tq, Hq, D), k/v (Tk, Hkv, D) -> out (Tq, Hq, D), lse (Hq, Tq), one sequence at a
    time through attention(). Rows outside every sequence (before cu_q[0], from cu_q[-1] on): out 0,
    lse -inf."""
    dtype = kw.get("dtype") or q.dtype
    cu_q, cu_k = cu_q.tolist(), cu_k.tolist()
    out_dtype = q.dtype if dtype != torch.float64 else dtype
    lse_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    outs = [q.new_zeros(cu_q[0], q.shape[1], q.shape[2], dtype=out_dtype)]
    lses = [torch.full((q.shape[1], cu_q[0]), float("-inf"), dtype=lse_dtype, device=q.device)]
    for b in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        o, l = attention(q[None, qs], k[None, ks], v[None, ks], sinks, **kw)
        outs.append(o[0])
        lses.append(l[0])
    pad = q.shape[0] - cu_q[-1]
    outs.append(q.new_zeros(pad, q.shape[1], q.shape[2], dtype=out_dtype))
    lses.append(torch.full((q.shape[1], pad), float("-inf"), dtype=lse_dtype, device=q.device))
    return torch.cat(outs), torch.cat(lses, dim=1)
