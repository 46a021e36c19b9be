"""One refusal per bad-input rule: ValueError / TypeError naming the argument, raised before the C
ABI is touched. Layouts the core cannot read are not refused but copied (see test_layouts.py)."""

from __future__ import annotations

import math

import pytest
import torch

import sinkattn
from sinkattn import _lib, ops


@pytest.fixture(autouse=True)
def no_c_calls(monkeypatch):
    def touched(*_):
        raise AssertionError("the C ABI was called")
    for name in ("fwd", "bwd", "fwd_workspace_size", "bwd_workspace_size"):
        monkeypatch.setattr(_lib, name, touched)


def qkv(b=1, sq=4, sk=6, hq=4, hkv=2, d=64, dtype=torch.float32):
    return (torch.randn(b, sq, hq, d, dtype=dtype), torch.randn(b, sk, hkv, d, dtype=dtype),
            torch.randn(b, sk, hkv, d, dtype=dtype))


def packed(hq=4, hkv=2, d=64):
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    return torch.randn(7, hq, d), torch.randn(7, hkv, d), torch.randn(7, hkv, d), cu, cu.clone()


def refused(exc, arg):
    return pytest.raises(exc, match=f"^sinkattn: {arg}:")


def test_q_not_a_tensor():
    q, k, v = qkv()
    with refused(TypeError, "q"):
        sinkattn.attention(q.tolist(), k, v)


def test_dtype():
    with refused(TypeError, "q"):
        sinkattn.attention(*qkv(dtype=torch.float64))


def test_dtype_mismatch():
    q, k, v = qkv()
    with refused(TypeError, "v"):
        sinkattn.attention(q, k, v.half())


def test_device_mismatch():
    q, k, v = qkv()
    with refused(ValueError, "k"):
        sinkattn.attention(q, k.to("meta"), v)


def test_rank():
    q, k, v = qkv()
    with refused(ValueError, "q"):
        sinkattn.attention(q[0], k, v)


def test_kv_shape_mismatch():
    q, k, v = qkv()
    with refused(ValueError, "v"):
        sinkattn.attention(q, k, v[:, :-1])


def test_batch_mismatch():
    q, k, v = qkv(b=2)
    with refused(ValueError, "k"):
        sinkattn.attention(q, k[:1], v[:1])


def test_head_dim():
    with refused(ValueError, "q"):  # up to 256 any head dim runs (padded); beyond it none does
        sinkattn.attention(*qkv(d=264))


def test_head_dim_mismatch():
    q, k, v = qkv()
    with refused(ValueError, "k"):
        sinkattn.attention(q, k[..., :32], v[..., :32])


def test_heads_not_divisible():
    with refused(ValueError, "k"):
        sinkattn.attention(*qkv(hq=4, hkv=3))


def test_sinks_length():
    with refused(ValueError, "sinks"):
        sinkattn.attention(*qkv(hq=4), torch.zeros(3))


def test_sinks_dtype():
    with refused(TypeError, "sinks"):
        sinkattn.attention(*qkv(), torch.zeros(4, dtype=torch.int64))


def test_sinks_device():
    with refused(ValueError, "sinks"):
        sinkattn.attention(*qkv(), torch.zeros(4, device="meta"))


def test_cu_seqlens_dtype():
    q, k, v, cu_q, cu_k = packed()
    with refused(TypeError, "cu_seqlens_q"):
        sinkattn.varlen_attention(q, k, v, cu_q.long(), cu_k)


def test_cu_seqlens_device():
    q, k, v, cu_q, cu_k = packed()
    with refused(ValueError, "cu_seqlens_k"):
        sinkattn.varlen_attention(q, k, v, cu_q, cu_k.to("meta"))


def test_cu_seqlens_length():
    q, k, v, cu_q, cu_k = packed()
    with refused(ValueError, "cu_seqlens_k"):
        sinkattn.varlen_attention(q, k, v, cu_q, cu_k[:-1])


def test_cu_seqlens_rank():
    q, k, v, cu_q, cu_k = packed()
    with refused(ValueError, "cu_seqlens_q"):
        sinkattn.varlen_attention(q, k, v, cu_q[None], cu_k)


def test_cu_seqlens_missing():
    q, k, v, cu_q, _ = packed()
    with refused(TypeError, "cu_seqlens_k"):
        sinkattn.varlen_attention(q, k, v, cu_q, None)


def test_varlen_rank():
    q, k, v, cu_q, cu_k = packed()
    with refused(ValueError, "q"):
        sinkattn.varlen_attention(q[None], k, v, cu_q, cu_k)


@pytest.mark.parametrize("max_q,max_k,arg", [(-1, 4, "max_seqlen_q"), (4, 2**31, "max_seqlen_k")])
def test_max_seqlen(max_q, max_k, arg):
    q, k, v, cu_q, cu_k = packed()
    with refused(ValueError, arg):
        sinkattn.varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k)


def test_decreasing_cu_seqlens_found_where_max_seqlen_is_read():
    # Without max_seqlen the layer reads the offsets anyway (a sync on CUDA, where the library
    # does not check them), so it refuses a decrease itself.
    q, k, v, cu_q, _ = packed()
    with refused(ValueError, "cu_seqlens_k") as e:
        sinkattn.varlen_attention(q, k, v, cu_q, torch.tensor([0, 5, 4], dtype=torch.int32))
    assert "[2] = 4 is below [1] = 5" in str(e.value)


@pytest.mark.parametrize("window", [0, -3])
def test_window_below_one(window):
    with refused(ValueError, "window"):
        sinkattn.attention(*qkv(), window=window)


def test_window_tuple_bound():
    with refused(ValueError, "window"):
        sinkattn.attention(*qkv(), causal=False, window=(-2, 3))


def test_window_looks_ahead_while_causal():
    with refused(ValueError, "window"):
        sinkattn.attention(*qkv(), causal=True, window=(4, 2))


def test_window_type():
    with refused(TypeError, "window"):
        sinkattn.attention(*qkv(), window=2.5)


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf, 0.0, -0.5, 1e300, 1e-300])
def test_scale_not_finite_or_not_positive(scale):
    with refused(ValueError, "scale"):
        sinkattn.attention(*qkv(), scale=scale)


def test_scale_type():
    with refused(TypeError, "scale"):
        sinkattn.attention(*qkv(), scale="0.1")


def test_causal_type():
    with refused(TypeError, "causal"):
        sinkattn.attention(*qkv(), causal=1)


def test_bwd_lse_shape():
    q, k, v = qkv()
    out = torch.randn_like(q)
    with refused(ValueError, "lse"):
        ops.bwd(torch.randn_like(out), q, k, v, out, torch.zeros(1, 4, 5))


def test_bwd_dout_dtype():
    q, k, v = qkv()
    out = torch.randn_like(q)
    with refused(TypeError, "dout"):
        ops.bwd(out.half(), q, k, v, out, torch.zeros(1, 4, 4))
