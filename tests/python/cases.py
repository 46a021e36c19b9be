"""Builds inputs, runs the library and both references, and compares forward, lse and gradients."""

from __future__ import annotations

import torch

import reference
import sinkattn
from compare import check


def window_bounds(window, causal):
    """The test's own reading of the public `window` argument (see sinkattn.attention)."""
    if window is None:
        return -1, -1
    if isinstance(window, int):
        return window - 1, (-1 if causal else window - 1)
    left, right = (-1 if w is None else w for w in window)
    return left, right


def leaf(t):
    return t.detach().clone().requires_grad_()


def run_and_compare(q, k, v, sinks, *, causal, window, lse_grad=False, cu=None, max_seqlen=None,
                    deterministic=False, scale=None):
    """q, k, v, sinks: leaf tensors (sinks may be None). cu: (cu_seqlens_q, cu_seqlens_k) for varlen.
    Checks out, lse and the gradients of sum(out * dout) (+ sum(lse * dlse) when lse_grad)."""
    dtype = q.dtype
    left, right = window_bounds(window, causal)
    if cu is None:
        out, lse = sinkattn.attention(q, k, v, sinks, causal=causal, window=window, scale=scale,
                                      return_lse=True, deterministic=deterministic)
        ref = lambda *a, **kw: reference.attention(*a, causal=causal, left=left, right=right,
                                                   scale=scale, **kw)
    else:
        mq, mk = max_seqlen or (None, None)
        out, lse = sinkattn.varlen_attention(q, k, v, cu[0], cu[1], mq, mk, sinks, causal=causal,
                                             window=window, scale=scale, return_lse=True,
                                             deterministic=deterministic)
        ref = lambda q_, k_, v_, s_, **kw: reference.varlen_attention(
            q_, k_, v_, cu[0], cu[1], s_, causal=causal, left=left, right=right, scale=scale, **kw)
    inputs = [t for t in (q, k, v, sinks) if t is not None]
    inputs64 = [leaf(t.double()) for t in inputs]
    with_sinks = sinks is not None
    q64, k64, v64, s64 = inputs64 + [None] * (not with_sinks)
    out64, lse64 = ref(q64, k64, v64, s64, dtype=torch.float64)
    out_lo, lse_lo = ref(q, k, v, sinks, dtype=dtype)

    check("out", out, out64, out_lo, dtype)
    check("lse", lse, lse64, lse_lo, torch.float32)
    assert out.is_contiguous() and out.dtype == dtype and lse.dtype == torch.float32

    dout = torch.randn_like(out)
    dlse = torch.randn_like(lse) if lse_grad else None

    def loss(o, l):
        total = (o * dout.to(o.dtype)).sum()
        return total + (l * dlse.to(l.dtype)).sum() if lse_grad else total

    grads = torch.autograd.grad(loss(out, lse), inputs)
    grads64 = torch.autograd.grad(loss(out64, lse64), inputs64, retain_graph=True)
    grads_lo = torch.autograd.grad(loss(out_lo, lse_lo), inputs)
    # The float64 backward of a kernel that reads its stored out (delta_i = dout_i . out_i, as
    # FlashAttention-style backwards do): d lse_i / d x_ij = P_ij, so adding
    # (delta64_i - delta_api_i) lse_i to the loss moves dS_ij by that difference times P_ij. Its
    # error is a further yardstick for dq and dk: where P is near 1, dP - delta amplifies the
    # rounding of out (a single visible key next to a small sink, say).
    shift = (out64.detach() - out.detach().double()).mul(dout.double()).sum(-1)
    shift = shift.t() if cu is not None else shift.transpose(1, 2)  # lse's layout
    finite_lse = torch.where(torch.isfinite(lse64), lse64, torch.zeros_like(lse64))
    grads64_at_api = torch.autograd.grad((shift * finite_lse).sum(), inputs64, allow_unused=True)
    # The backward's own scale, for compare.py's relative bound of dq, dk and dv: a gradient that
    # cancels to exactly 0 carries fp32 residues of its terms, which grow with the others.
    scale_qkv = max((g.abs().max().item() for g in grads64[:3] if g.numel()), default=0.0)
    for name, t, g, g64, glo, gapi in zip("q k v sinks".split(), inputs, grads, grads64, grads_lo,
                                          grads64_at_api):
        assert g.dtype == t.dtype and g.shape == t.shape, f"d{name}: {g.dtype} {g.shape}"
        stored = (g64 + gapi,) if name in ("q", "k") and gapi is not None else None
        if name == "sinks":
            # The contract defines dsink through the stored out: on the reference out rounded
            # once, and on the out the API returned (its forward error is checked above). The
            # backward itself must reproduce the formula on the API's own outputs closely.
            own = _dsink_from_stored_out(out, lse, s64, dout, dlse, cu is not None)
            stored = (_dsink_from_stored_out(out64, lse64, s64, dout, dlse, cu is not None), own)
            gap = (g.detach().double() - own).abs().max().item()
            rounding = (own.to(g.dtype).double() - own).abs().max().item()  # sinks' own dtype
            assert gap <= 2 * rounding + 1e-4 * own.abs().max().item() + 1e-5, (
                f"dsinks: {gap:.3e} from the contract's formula on the returned out and lse")
        check("d" + name, g, g64, glo, t.dtype, stored, scale_qkv if name != "sinks" else 0.0)
    return out, lse, grads


def _dsink_from_stored_out(out64, lse64, s64, dout, dlse, varlen):
    """dsink_h = -sum_i exp(s_h - lse_i) (dout_i . out_i - dlse_i) in float64 on the outputs as the
    API stores them (out in its dtype, lse in float32): what any backward reading them can reach."""
    out = out64.detach().to(dout.dtype).double()
    delta = (dout.double() * out).sum(-1)                      # (.., rows, heads)
    delta = delta.t() if varlen else delta.transpose(1, 2)     # lse's layout
    if dlse is not None:
        delta = delta - dlse.double()
    lse = lse64.detach().float().double()
    p_sink = torch.exp(s64.detach().view(-1, 1) - lse)  # lse's layout
    p_sink = torch.where(torch.isfinite(lse), p_sink, 0.0)  # rows outside every sequence
    return -(p_sink * delta).sum(1 if varlen else (0, 2))


def make(b, sq, sk, hq, hkv, d, dtype, sinks=True, sink_dtype=torch.float32, device="cpu"):
    q = leaf(torch.randn(b, sq, hq, d, dtype=dtype, device=device))
    k = leaf(torch.randn(b, sk, hkv, d, dtype=dtype, device=device))
    v = leaf(torch.randn(b, sk, hkv, d, dtype=dtype, device=device))
    s = leaf(torch.randn(hq, dtype=sink_dtype, device=device) * 2) if sinks else None
    return q, k, v, s


def make_varlen(lens_q, lens_k, hq, hkv, d, dtype, sinks=True, pad=(0, 0), device="cpu",
                lead=(0, 0)):
    """Packed inputs for per-sequence lengths; `lead` / `pad` extra rows (of q, of k and v) before
    the first sequence / after the last."""
    cu_q = torch.tensor([lead[0]] + lens_q, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    cu_k = torch.tensor([lead[1]] + lens_k, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    tq, tk = int(cu_q[-1]) + pad[0], int(cu_k[-1]) + pad[1]
    cu_q, cu_k = cu_q.to(device), cu_k.to(device)
    q = leaf(torch.randn(tq, hq, d, dtype=dtype, device=device))
    k = leaf(torch.randn(tk, hkv, d, dtype=dtype, device=device))
    v = leaf(torch.randn(tk, hkv, d, dtype=dtype, device=device))
    s = leaf(torch.randn(hq, device=device) * 2) if sinks else None
    return q, k, v, s, (cu_q, cu_k)
