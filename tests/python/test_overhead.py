"""The cheap per-call path (ops.py: run_fwd's inlined eager checks, the plan key, fwd_impl's inline
hit with torch's direct allocator) with outputs *not* NaN-poisoned, since poisoning sends hits down
the general path: results bit-identical to a first call, no plan reused across a key change, the
same refusals; and the overhead module runs."""

from __future__ import annotations

import pytest
import torch

import sinkattn
from sinkattn import ops, overhead


@pytest.fixture(autouse=True)
def unpoisoned(monkeypatch):
    monkeypatch.setattr(ops, "_poison_outputs", False)
    ops._fwd_plans.clear()
    yield
    ops._fwd_plans.clear()


def _qkv(b=2, sq=5, sk=9, hq=4, hkv=2, d=64, dtype=torch.float32):
    return (torch.randn(b, sq, hq, d, dtype=dtype), torch.randn(b, sk, hkv, d, dtype=dtype),
            torch.randn(b, sk, hkv, d, dtype=dtype))


def _first_call(*args, **kwargs):
    """The same call on the first-call path (full checks, fresh params)."""
    saved = dict(ops._fwd_plans)
    ops._fwd_plans.clear()
    try:
        return sinkattn.attention(*args, **kwargs)
    finally:
        ops._fwd_plans.clear()
        ops._fwd_plans.update(saved)


def _same(a, b):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert x.shape == y.shape and x.stride() == y.stride() and x.dtype == y.dtype
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("kw", [dict(), dict(return_lse=True), dict(window=3, scale=0.2),
                                dict(causal=False, window=(2, 1))])
@pytest.mark.parametrize("sinks", [None, torch.float32, torch.bfloat16])
def test_hits_match_first_call(kw, sinks):
    s = None if sinks is None else torch.randn(4).to(sinks)
    with torch.no_grad():
        sinkattn.attention(*_qkv(), s, **kw)  # leaves the plan
        (plan,) = ops._fwd_plans.values()
        assert plan.empty is not None  # the direct allocator passed its check on this torch
        for _ in range(2):
            q, k, v = _qkv()
            got = sinkattn.attention(q, k, v, s, **kw)
            assert len(ops._fwd_plans) == 1
            _same(got, _first_call(q, k, v, s, **kw))
    assert not (got[0] if isinstance(got, tuple) else got).requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_hits_with_a_workspace_match_first_call():
    """On the Hopper path a d 64 forward takes a workspace (its tile counter): its hits stay on
    the inline path, which allocates the workspace with the direct allocator too."""
    q, k, v = (t.to("cuda", torch.bfloat16) for t in _qkv(b=1, sq=700, sk=700, hq=8, hkv=1))
    s = torch.randn(8, device="cuda")
    with torch.no_grad():
        sinkattn.attention(q, k, v, s)
        (plan,) = ops._fwd_plans.values()
        assert plan.empty is not None
        if "sm90" in sinkattn.kernels(q, k, v, s)["fwd"]:
            assert plan.ws_like is not None and len(plan.specs) == 3
        for _ in range(2):
            got = sinkattn.attention(q, k, v, s)
            _same(got, _first_call(q, k, v, s))


def test_recorded_hits_match_first_call():
    def grads(q, k, v, s, dout):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, s)]
        out, lse = sinkattn.attention(*leaves, return_lse=True)
        (out * dout).sum().add(lse.sum()).backward()
        return [out.detach(), lse.detach()] + [t.grad for t in leaves]
    q, k, v = _qkv()
    s, dout = torch.randn(4), torch.randn(2, 5, 4, 64)
    first = grads(q, k, v, s, dout)
    again = grads(q, k, v, s, dout)  # forward and backward on their plans
    assert len(ops._fwd_plans) == 1
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inference_mode_outputs():
    q, k, v = _qkv()
    with torch.inference_mode():
        sinkattn.attention(q, k, v)
        out, lse = sinkattn.attention(q, k, v, return_lse=True)
    assert out.is_inference() and lse.is_inference()
    _same((out, lse), _first_call(q, k, v, return_lse=True))


def _variants(q, k, v):
    """Calls that differ from attention(q, k, v) in one thing the plan key must see."""
    def t(x):  # the same shape, other strides
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    yield (t(q), k, v), {}
    yield (q, t(k), v), {}
    yield (q, k, t(v)), {}
    yield (q[:, :4], k, v), {}
    yield (q, k[:, :7], v[:, :7]), {}
    yield (q.bfloat16(), k.bfloat16(), v.bfloat16()), {}
    yield (q, k, v, torch.randn(4)), {}
    yield (q, k, v), dict(scale=0.3)
    yield (q, k, v), dict(window=2)
    yield (q, k, v), dict(causal=False)


def test_no_plan_reused_across_a_key_change():
    q, k, v = _qkv()
    with torch.no_grad():
        for args, kw in _variants(q, k, v):
            sinkattn.attention(q, k, v)  # the base plan
            got = sinkattn.attention(*args, **kw)
            _same(got, _first_call(*args, **kw))
        assert len(ops._fwd_plans) == 1 + sum(1 for _ in _variants(q, k, v))


def test_refusals_after_a_plan():
    q, k, v = _qkv()
    s = torch.randn(4)
    with torch.no_grad():
        sinkattn.attention(q, k, v, s)
        for args, exc, arg in [
                ((q, k.bfloat16(), v, s), TypeError, "k"),
                ((q, k, v.bfloat16(), s), TypeError, "v"),
                ((q, k, v.to("meta"), s), ValueError, "v"),
                ((q, k, v, s.to("meta")), ValueError, "sinks"),
                ((q, k, v, torch.randn(3)), ValueError, "sinks"),
                ((q, k[:, :, :1], v, s), ValueError, "v")]:
            with pytest.raises(exc, match=f"^sinkattn: {arg}:"):
                sinkattn.attention(*args)
        with pytest.raises(TypeError, match="^sinkattn: causal:"):
            sinkattn.attention(q, k, v, s, causal=1)


def test_overhead_module_runs():
    r = overhead.measure(iters=20, repeats=1)
    assert set(r) >= {"c_fwd", "alloc_c_fwd", "fwd", "fwd_op", "fwd_grad", "fwd_bwd"}
    assert all(us > 0 for us in r.values())
