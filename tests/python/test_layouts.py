"""Strided inputs: read in place when the core accepts them (no copy), copied otherwise; results and
gradients (in the inputs' layouts) match the contiguous case."""

from __future__ import annotations

import pytest
import torch

import sinkattn
from sinkattn import ops

from cases import leaf, run_and_compare


@pytest.fixture
def copies(monkeypatch):
    """Counts the inputs the Python layer had to copy."""
    made = []
    real = ops._in

    def spy(t, cuda):
        out = real(t, cuda)
        if out is not t:
            made.append(tuple(t.stride()))
        return out
    monkeypatch.setattr(ops, "_in", spy)
    return made


def test_transposed_views_no_copy(copies):
    """What transformers passes: (B, H, S, D) tensors viewed as (B, S, H, D)."""
    q = leaf(torch.randn(2, 4, 37, 64)).transpose(1, 2)
    k = leaf(torch.randn(2, 2, 50, 64)).transpose(1, 2)
    v = leaf(torch.randn(2, 2, 50, 64)).transpose(1, 2)
    s = leaf(torch.randn(4))
    run_and_compare(q, k, v, s, causal=True, window=20)
    assert copies == []
    _assert_grads_in_input_layout(q, k, v, s)


def _assert_grads_in_input_layout(q, k, v, s):
    seen = {}
    for name, t in zip("qkv", (q, k, v)):
        t.register_hook(lambda g, name=name: seen.update({name: g.stride()}))
    out = sinkattn.attention(q, k, v, s)
    out.backward(torch.randn_like(out))
    for name, t in zip("qkv", (q, k, v)):
        assert seen[name] == t.stride(), f"d{name} not in the layout of {name}"


def test_slices_of_a_fused_qkv_no_copy(copies):
    """q, k, v as column slices of one packed projection: strides larger than the shape."""
    base = leaf(torch.randn(2, 30, 8, 64))
    q, k, v = base[:, :, :4], base[:, :, 4:6], base[:, :, 6:]
    out = sinkattn.attention(q, k, v, None, causal=False)
    ref = sinkattn.attention(q.contiguous(), k.contiguous(), v.contiguous(), None, causal=False)
    assert copies == []
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    g = torch.autograd.grad(out.square().sum(), base)[0]
    assert g.shape == base.shape and torch.isfinite(g).all()


def test_mixed_layouts_no_copy(copies):
    """q, k and v each with other strides (contiguous, a transposed view, a slice of a wider
    tensor), fixed-length and packed: reading one with another's strides fails here, where
    tensors that share their strides would hide it."""
    q = leaf(torch.randn(2, 37, 4, 64))
    k = leaf(torch.randn(2, 2, 50, 64)).transpose(1, 2)
    v = leaf(torch.randn(2, 50, 2, 72))[..., :64]
    s = leaf(torch.randn(4))
    run_and_compare(q, k, v, s, causal=True, window=20)
    qv = leaf(torch.randn(4, 90, 64)).transpose(0, 1)
    kv = leaf(torch.randn(70, 2, 64))
    vv = leaf(torch.randn(70, 2, 80))[..., :64]
    cu_q, cu_k = (torch.tensor(x, dtype=torch.int32) for x in ([0, 40, 40, 90], [0, 30, 45, 70]))
    run_and_compare(qv, kv, vv, s, causal=True, window=None, cu=(cu_q, cu_k))
    assert copies == []


def test_head_dim_not_contiguous_is_copied(copies):
    q = leaf(torch.randn(1, 64, 9, 4)).permute(0, 2, 3, 1)  # (1, 9, 4, 64) with stride(-1) != 1
    k = leaf(torch.randn(1, 64, 11, 2)).permute(0, 2, 3, 1)
    v = leaf(torch.randn(1, 11, 2, 64))
    s = leaf(torch.randn(4))
    run_and_compare(q, k, v, s, causal=True, window=None)
    assert len(copies) >= 2
    _assert_grads_in_input_layout(q, k, v, s)


def test_expanded_kv_zero_stride():
    """k, v broadcast over the batch (stride 0) are read in place."""
    k = leaf(torch.randn(1, 12, 2, 64))
    v = leaf(torch.randn(1, 12, 2, 64))
    q = leaf(torch.randn(3, 12, 4, 64))
    out = sinkattn.attention(q, k.expand(3, -1, -1, -1), v.expand(3, -1, -1, -1))
    ref = sinkattn.attention(q, k.expand(3, -1, -1, -1).contiguous(),
                             v.expand(3, -1, -1, -1).contiguous())
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    gk, gk_ref = (torch.autograd.grad(o.sum(), k)[0] for o in (out, ref))
    torch.testing.assert_close(gk, gk_ref, rtol=1e-6, atol=1e-5)


def test_varlen_strided_rows():
    """Packed q with a row stride larger than heads * head_dim (a slice of a fused projection)."""
    base = leaf(torch.randn(10, 6, 32))
    q, k, v = base[:, :2], base[:, 2:4], base[:, 4:]
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    out = sinkattn.varlen_attention(q, k, v, cu, cu, 6, 6)
    ref = sinkattn.varlen_attention(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, 6, 6)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
