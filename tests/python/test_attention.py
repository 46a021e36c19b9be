"""Forward, lse and every gradient against the float64 reference over the shape grid of DESIGN.md."""

from __future__ import annotations

import pytest
import torch

import sinkattn
from sinkattn import ops

from cases import leaf, make, make_varlen, run_and_compare

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16

# (B, Sq, Sk, Hq, Hkv, D, dtype, causal, window, sinks)
GRID = [
    (1, 1, 1, 1, 1, 64, F32, True, None, True),            # seqlen 1
    (2, 1, 37, 4, 1, 64, BF16, True, None, True),          # decode, GQA 4
    (1, 113, 203, 3, 3, 64, F32, True, None, True),        # odd lengths, bottom-right causal
    (1, 113, 203, 3, 3, 64, BF16, True, 64, True),
    (1, 113, 203, 3, 3, 64, F16, False, None, True),
    (1, 239, 1, 2, 2, 32, F32, True, None, True),          # Sq > Sk: rows that see no key
    (1, 239, 1, 2, 2, 32, F32, True, None, False),         #   ... without a sink: out 0, lse -inf
    (2, 64, 64, 8, 1, 128, BF16, True, 1, True),           # GQA 8, window 1 (the query only)
    (1, 50, 50, 4, 4, 96, F32, True, 100, True),           # window > sequence
    (1, 77, 77, 5, 5, 64, F16, False, (10, 3), True),      # non-causal (left, right), odd heads
    (1, 40, 90, 4, 2, 256, BF16, False, None, False),      # head dim 256, no sink
    (1, 33, 33, 64, 1, 32, F32, True, None, True),         # GQA 64 (MQA)
    (1, 100, 100, 2, 2, 64, F32, False, 16, True),         # non-causal int window: symmetric
    (1, 90, 60, 2, 1, 64, BF16, False, (5, 7), True),      # Sq > Sk, two-sided band
    (2, 70, 130, 4, 2, 128, F16, True, (20, 0), True),     # causal band, Sq < Sk
    (1, 96, 96, 1, 1, 96, BF16, False, (0, None), False),  # looks only ahead
    (1, 0, 5, 2, 1, 64, F32, True, None, True),            # no query
    (1, 5, 0, 2, 1, 64, F32, False, None, True),           # no key: out 0, lse = sink
]


def _id(c):
    b, sq, sk, hq, hkv, d, dt, causal, w, s = c
    return (f"b{b}-{sq}x{sk}-h{hq}:{hkv}-d{d}-{str(dt)[6:]}-{'causal' if causal else 'full'}"
            f"-w{w}-{'sink' if s else 'nosink'}").replace(" ", "")


@pytest.mark.parametrize("case", GRID, ids=_id)
def test_fixed_length(case):
    b, sq, sk, hq, hkv, d, dtype, causal, window, sinks = case
    run_and_compare(*make(b, sq, sk, hq, hkv, d, dtype, sinks), causal=causal, window=window)


def test_long_sequence_bf16():
    """1023 x 1024, one head: long accumulations."""
    run_and_compare(*make(1, 1023, 1024, 1, 1, 64, BF16), causal=True, window=None)


@pytest.mark.parametrize("sink_dtype", [BF16, F16, torch.float64])
def test_sink_dtypes(sink_dtype):
    """Sinks of any float dtype; their gradient comes back in that dtype."""
    run_and_compare(*make(1, 17, 23, 4, 2, 64, BF16, sink_dtype=sink_dtype), causal=True,
                    window=None)


@pytest.mark.parametrize("causal,window", [(True, None), (False, (6, 2))])
def test_gradient_through_lse(causal, window):
    run_and_compare(*make(2, 31, 45, 4, 2, 64, F32), causal=causal, window=window, lse_grad=True)


VARLEN = [
    # (lens_q, lens_k, Hq, Hkv, D, dtype, causal, window, sinks, pad, pass max_seqlen)
    ([5, 0, 13, 1, 0, 40], [7, 3, 13, 0, 0, 33], 4, 2, 64, F32, True, None, True, (0, 0), False),
    ([5, 0, 13, 1, 0, 40], [7, 3, 13, 0, 0, 33], 4, 2, 64, F32, True, None, False, (0, 0), True),
    ([17, 1, 30], [17, 9, 30], 6, 3, 128, BF16, True, 8, True, (0, 0), True),
    ([12, 25], [30, 20], 2, 2, 32, F16, False, (4, 9), True, (0, 0), False),
    ([9, 0, 4], [9, 2, 0], 8, 1, 96, F32, False, None, True, (3, 5), False),  # padding rows
]


@pytest.mark.parametrize("case", VARLEN, ids=lambda c: f"{c[0]}x{c[1]}-h{c[2]}:{c[3]}-d{c[4]}-"
                         f"{str(c[5])[6:]}-{'causal' if c[6] else 'full'}-w{c[7]}".replace(" ", ""))
def test_varlen(case):
    lens_q, lens_k, hq, hkv, d, dtype, causal, window, sinks, pad, pass_max = case
    q, k, v, s, cu = make_varlen(lens_q, lens_k, hq, hkv, d, dtype, sinks, pad)
    max_seqlen = (max(lens_q), max(lens_k)) if pass_max else None
    run_and_compare(q, k, v, s, causal=causal, window=window, cu=cu, max_seqlen=max_seqlen)


@pytest.mark.parametrize("window", [None, 4])
def test_varlen_rows_outside_every_sequence(window):
    """Rows before the first sequence and after the last (cu_seqlens[0] > 0, cu_seqlens[-1] below
    the row count) are written by the library, in outputs the tests poison with NaN: out 0, lse
    -inf, their gradients 0."""
    q, k, v, s, cu = make_varlen([5, 0, 13], [7, 3, 13], 4, 2, 64, F32, lead=(3, 2), pad=(2, 4))
    run_and_compare(q, k, v, s, causal=True, window=window, cu=cu, max_seqlen=(13, 13))


@pytest.mark.parametrize("case", VARLEN[:1] + VARLEN[2:], ids=lambda c: f"d{c[4]}-w{c[7]}")
def test_varlen_in_chunks_of_sequences(case, monkeypatch):
    """More sequences than one call takes (CUDA: 65535, the grids' limit) run as a call per chunk
    of sequences; here the limit is 2 on the CPU. Against the fp64 reference, and the same as one
    call."""
    lens_q, lens_k, hq, hkv, d, dtype, causal, window, sinks, pad, pass_max = case
    q, k, v, s, cu = make_varlen(lens_q, lens_k, hq, hkv, d, dtype, sinks, pad)
    max_seqlen = (max(lens_q), max(lens_k)) if pass_max else None
    whole = sinkattn.varlen_attention(q, k, v, *cu, *(max_seqlen or (None, None)), s,
                                      causal=causal, window=window, return_lse=True)
    grads = torch.autograd.grad(whole[0].square().sum(), [t for t in (q, k, v, s) if t is not None])
    monkeypatch.setitem(ops._SEQUENCE_LIMIT, "cpu", 2)
    # the calls above left plans for the whole batch, which a chunked call never would
    monkeypatch.setattr(ops, "_fwd_plans", {})
    monkeypatch.setattr(ops, "_bwd_plans", {})
    run_and_compare(q, k, v, s, causal=causal, window=window, cu=cu, max_seqlen=max_seqlen,
                    lse_grad=True)
    chunked = sinkattn.varlen_attention(q, k, v, *cu, *(max_seqlen or (None, None)), s,
                                        causal=causal, window=window, return_lse=True)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    for a, b in zip(torch.autograd.grad(chunked[0].square().sum(),
                                        [t for t in (q, k, v, s) if t is not None]), grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    calls = (len(lens_q) + 1) // 2
    assert sinkattn.kernels(q, k, v, s, cu_seqlens_q=cu[0], cu_seqlens_k=cu[1])["fwd"] == (
        f"cpu, in {calls} calls of at most 2 sequences" if calls > 1 else "cpu")


@pytest.mark.parametrize("case", [GRID[1], GRID[7], GRID[14]], ids=_id)
def test_fixed_length_in_chunks_of_sequences(case, monkeypatch):
    """A batch of more sequences than one call takes (CUDA: 65535) runs as a call per chunk of
    batch entries; here the limit is 1 on the CPU."""
    b, sq, sk, hq, hkv, d, dtype, causal, window, sinks = case
    assert b > 1
    monkeypatch.setitem(ops._SEQUENCE_LIMIT, "cpu", 1)
    monkeypatch.setattr(ops, "_fwd_plans", {})
    monkeypatch.setattr(ops, "_bwd_plans", {})
    q, k, v, s = make(b, sq, sk, hq, hkv, d, dtype, sinks)
    run_and_compare(q, k, v, s, causal=causal, window=window, lse_grad=True)
    assert sinkattn.kernels(q, k, v, s)["bwd"] == f"cpu, in {b} calls of at most 1 sequences"


def test_varlen_lse_gradient():
    q, k, v, s, cu = make_varlen([6, 0, 11], [9, 4, 11], 4, 2, 64, F32)
    run_and_compare(q, k, v, s, causal=True, window=None, cu=cu, lse_grad=True)


def test_varlen_matches_fixed_length():
    """One full-length sequence per batch entry: varlen and fixed-length give the same numbers."""
    q, k, v, s = make(3, 21, 34, 4, 1, 64, F32)
    cu_q = torch.arange(4, dtype=torch.int32) * 21
    cu_k = torch.arange(4, dtype=torch.int32) * 34
    out, lse = sinkattn.attention(q, k, v, s, window=9, return_lse=True)
    vout, vlse = sinkattn.varlen_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu_q,
                                           cu_k, 21, 34, s, window=9, return_lse=True)
    torch.testing.assert_close(vout.view_as(out), out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vlse.view(4, 3, 21).transpose(0, 1), lse, rtol=1e-6, atol=1e-6)


def test_deterministic_gradients_repeat_bitwise():
    q, k, v, s = make(1, 64, 64, 4, 1, 64, BF16)
    runs = []
    for _ in range(2):
        out = sinkattn.attention(q, k, v, s, deterministic=True)
        runs.append(torch.autograd.grad(out.sum(), (q, k, v, s)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("causal,window,same_as", [
    (True, 10**12, None),                    # an int window past every position: unbounded
    (False, (10**12, 3), (None, 3)),         # a bound past every position in a tuple
    (False, (2, 2**40), (2, None)),
])
def test_window_past_every_position_is_unbounded(causal, window, same_as):
    # The core takes int32 positions; the Python layer maps larger bounds to "unbounded".
    q, k, v = torch.randn(1, 9, 4, 32), torch.randn(1, 9, 2, 32), torch.randn(1, 9, 2, 32)
    sinks = torch.randn(4)
    got = sinkattn.attention(q, k, v, sinks, causal=causal, window=window)
    want = sinkattn.attention(q, k, v, sinks, causal=causal, window=same_as)
    assert torch.equal(got, want)


# Head dims the kernels are not built for run zero-padded to the next one (ops._pad_dim); the
# fp64 reference works at the real head dim, so the padding must change nothing but the cost.
PADDED = [
    # (B, Sq, Sk, Hq, Hkv, D, dtype, causal, window, sinks)
    (1, 37, 37, 4, 2, 80, F32, True, None, True),          # 80 -> 96 (Phi-2, StableLM)
    (2, 21, 29, 2, 1, 48, BF16, True, 8, True),            # 48 -> 64, window, Sq < Sk
    (1, 19, 19, 3, 3, 8, F32, False, (3, 4), True),        # 8 -> 32, two-sided band
    (1, 25, 25, 2, 2, 200, F16, True, None, False),        # 200 -> 256, no sink
    (1, 13, 13, 2, 1, 1, F32, True, None, True),           # 1 -> 32
    (1, 23, 23, 2, 2, 129, F32, True, None, True),         # 129 -> 256, odd
]


@pytest.mark.parametrize("case", PADDED, ids=_id)
def test_padded_head_dims(case):
    b, sq, sk, hq, hkv, d, dtype, causal, window, sinks = case
    run_and_compare(*make(b, sq, sk, hq, hkv, d, dtype, sinks), causal=causal, window=window,
                    lse_grad=True)


def test_padded_head_dim_varlen_and_scale():
    q, k, v, s, cu = make_varlen([5, 0, 13], [7, 3, 13], 4, 2, 112, F32, True)
    run_and_compare(q, k, v, s, causal=True, window=None, cu=cu)  # default scale 1/sqrt(112)
    run_and_compare(q, k, v, s, causal=False, window=(2, 5), cu=cu, scale=0.3)


def test_padded_head_dim_refusals_name_the_argument():
    q, k, v, s = make(1, 8, 8, 4, 2, 264, F32)
    with pytest.raises(ValueError, match="q: got head_dim 264"):
        sinkattn.attention(q, k, v, s)
    q, k, v, s = make(1, 8, 8, 4, 2, 80, F32)
    with pytest.raises(ValueError, match="k: got head_dim 64, expected 80"):
        sinkattn.attention(q, k[..., :64], v[..., :64], s)
    with pytest.raises(ValueError, match="q: got head_dim 0"):
        sinkattn.attention(q[..., :0], k[..., :0], v[..., :0], s)


def test_padded_head_dim_low_level_ops_and_layouts():
    """ops.fwd / ops.bwd (what context parallelism calls) pad as well; the gradients keep the
    layouts of q, k and v, here transposed views of (B, H, S, D) tensors."""
    q, k, v, s = (t.detach() for t in make(2, 9, 14, 4, 2, 72, F32))
    qt, kt, vt = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    out, lse = ops.fwd(qt, kt, vt, s, window=5, scale=0.2)
    want, want_lse = sinkattn.attention(q, k, v, s, window=5, scale=0.2, return_lse=True)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=0)
    dout = torch.randn_like(out)
    dq, dk, dv, dsink = ops.bwd(dout, qt, kt, vt, out, lse, s, window=5, scale=0.2)
    assert dq.shape == q.shape and dk.stride() == kt.stride() and dv.stride() == vt.stride()
    qg, kg, vg, sg = (leaf(t) for t in (q, k, v, s))
    torch.autograd.backward(sinkattn.attention(qg, kg, vg, sg, window=5, scale=0.2), dout)
    for got, ref in ((dq, qg.grad), (dk, kg.grad), (dv, vg.grad), (dsink, sg.grad)):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_kernels_says_a_head_dim_is_padded():
    q, k, v, s = make(1, 8, 8, 4, 2, 80, F32)
    assert sinkattn.kernels(q, k, v, s) == {"fwd": "cpu, head_dim 80 padded to 96",
                                            "bwd": "cpu, head_dim 80 padded to 96"}


def test_kernels_names_the_path_and_refuses_like_the_call():
    q, k, v, s = make(1, 8, 8, 4, 2, 64, F32)
    assert sinkattn.kernels(q, k, v, s) == {"fwd": "cpu", "bwd": "cpu"}
    with pytest.raises(ValueError, match="sinks"):
        sinkattn.kernels(q, k, v, s[:3])


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("varlen", [False, True])
def test_deterministic_reaches_the_backward(monkeypatch, varlen, fast):
    """The CPU backward is deterministic either way, so only the argument itself can show that
    deterministic=True reaches the library (CUDA's dK / dV reduction depends on it)."""
    monkeypatch.setattr(ops, "_eager_fast_path", fast)
    seen = []
    real = ops.bwd_impl

    def spy(*args, **kw):
        seen.append(args[15])  # bwd_impl's deterministic
        return real(*args, **kw)
    monkeypatch.setattr(ops, "bwd_impl", spy)
    for det in (True, False):
        q = torch.randn(6, 4, 32, requires_grad=True)
        k, v = torch.randn(6, 2, 32), torch.randn(6, 2, 32)
        if varlen:
            cu = torch.tensor([0, 2, 6], dtype=torch.int32)
            out = sinkattn.varlen_attention(q, k, v, cu, cu, deterministic=det)
        else:
            out = sinkattn.attention(q[None], k[None], v[None], deterministic=det)
        out.sum().backward()
    assert seen == [True, False]
