"""Plans (_plans.py, ops.py): a repeated call reuses the first call's packed params with only the
data pointers patched. Results must be bit-identical to a call without a plan, every refusal must
still happen, and a plan must never carry a pointer of the call that made it."""

from __future__ import annotations

import threading

import pytest
import torch

import sinkattn
from sinkattn import _lib, _plans, ops


@pytest.fixture(autouse=True)
def fresh_plans():
    ops._fwd_plans.clear()
    ops._bwd_plans.clear()
    yield
    ops._fwd_plans.clear()
    ops._bwd_plans.clear()


def _no_plans(fn, *args, **kwargs):
    """fn run on the first-call path (checks, packing, size query)."""
    ops._fwd_plans.clear()
    ops._bwd_plans.clear()
    return fn(*args, **kwargs)


def _fixed(b=2, sq=5, sk=9, hq=4, hkv=2, d=64):
    return torch.randn(b, sq, hq, d), torch.randn(b, sk, hkv, d), torch.randn(b, sk, hkv, d)


def _packed(lens_q=(3, 0, 4), lens_k=(5, 2, 4), hq=4, hkv=2, d=32, extra_rows=1):
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32)
    tq, tk = int(cu_q[-1]) + extra_rows, int(cu_k[-1])
    return (torch.randn(tq, hq, d), torch.randn(tk, hkv, d), torch.randn(tk, hkv, d), cu_q, cu_k)


CASES = [
    dict(),
    dict(causal=False, window=(3, 2)),
    dict(window=4, scale=0.3),
]


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("sinks", [False, True])
def test_fixed_length_hit_matches_first_call(kw, sinks):
    s = torch.randn(4) if sinks else None
    sinkattn.attention(*_fixed(), s, **kw)  # leaves a plan
    assert len(ops._fwd_plans) == 1
    for _ in range(2):  # new tensors, same key: hits
        q, k, v = _fixed()
        out, lse = sinkattn.attention(q, k, v, s, return_lse=True, **kw)
        assert len(ops._fwd_plans) == 1 and out.is_contiguous() and lse.is_contiguous()
        ref_out, ref_lse = _no_plans(sinkattn.attention, q, k, v, s, return_lse=True, **kw)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
        torch.testing.assert_close(lse, ref_lse, rtol=0, atol=0)


def _other_layout(t):
    """t's values with other strides: a slice of a tensor 8 elements wider per head."""
    wide = torch.zeros(*t.shape[:-1], t.shape[-1] + 8, dtype=t.dtype)
    return wide[..., :t.shape[-1]].copy_(t)


def _fwd_call(q, k, v, s, **kw):
    return sinkattn.attention(q, k, v, s, return_lse=True, **kw)


# Each variant differs from the base call (_fixed(), sinks, causal, no window) in one thing that
# reaches the params; a plan the base call left must not serve it with the base call's values.
FWD_VARIANTS = {
    "q layout": lambda q, k, v, s: _fwd_call(_other_layout(q), k, v, s),
    "k layout": lambda q, k, v, s: _fwd_call(q, _other_layout(k), v, s),
    "v layout": lambda q, k, v, s: _fwd_call(q, k, _other_layout(v), s),
    "scale": lambda q, k, v, s: _fwd_call(q, k, v, s, scale=0.3),
    "window": lambda q, k, v, s: _fwd_call(q, k, v, s, window=3),
    "causal": lambda q, k, v, s: _fwd_call(q, k, v, s, causal=False),
    "no sinks": lambda q, k, v, s: _fwd_call(q, k, v, None),
}


@pytest.mark.parametrize("variant", FWD_VARIANTS)
def test_fwd_plan_serves_only_its_key(variant):
    q, k, v = _fixed()
    s = torch.randn(4)
    _fwd_call(q, k, v, s)  # leaves the base call's plan
    got = FWD_VARIANTS[variant](q, k, v, s)
    assert len(ops._fwd_plans) == 2  # its own key
    ref = _no_plans(FWD_VARIANTS[variant], q, k, v, s)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _bwd_call(dout, q, k, v, out, lse, s, **kw):
    return sinkattn.ops.bwd(dout, q, k, v, out, lse, s, **kw)


BWD_VARIANTS = {
    "dout layout": lambda d, q, k, v, o, l, s: _bwd_call(_other_layout(d), q, k, v, o, l, s),
    "out layout": lambda d, q, k, v, o, l, s: _bwd_call(d, q, k, v, _other_layout(o), l, s),
    "v layout": lambda d, q, k, v, o, l, s: _bwd_call(d, q, k, _other_layout(v), o, l, s),
    # lse's strides are not in the key: a hit must still read its values, not its memory.
    "lse strides": lambda d, q, k, v, o, l, s: _bwd_call(
        d, q, k, v, o, l.transpose(1, 2).contiguous().transpose(1, 2), s),
    "scale": lambda d, q, k, v, o, l, s: _bwd_call(d, q, k, v, o, l, s, scale=0.3),
    "deterministic": lambda d, q, k, v, o, l, s: _bwd_call(d, q, k, v, o, l, s,
                                                           deterministic=True),
    "no sinks": lambda d, q, k, v, o, l, s: _bwd_call(d, q, k, v, o, l, None),
}


@pytest.mark.parametrize("variant", BWD_VARIANTS)
def test_bwd_plan_serves_only_its_key(variant):
    q, k, v = _fixed()
    s = torch.randn(4)
    out, lse = sinkattn.ops.fwd(q, k, v, s)
    dout = torch.randn_like(out)
    _bwd_call(dout, q, k, v, out, lse, s)  # leaves the base call's plan
    got = BWD_VARIANTS[variant](dout, q, k, v, out, lse, s)
    # Its own key (the CPU backward is deterministic either way: only the key tells the flag
    # apart here), but lse's strides: the hit reads its values.
    assert len(ops._bwd_plans) == (1 if variant == "lse strides" else 2)
    ref = _no_plans(BWD_VARIANTS[variant], dout, q, k, v, out, lse, s)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_strided_views_hit():
    """transformers' (B, H, S, D) tensors viewed as (B, S, H, D): planned like contiguous ones."""
    def views():
        return [torch.randn(2, h, s, 64).transpose(1, 2) for h, s in ((4, 7), (2, 11), (2, 11))]
    sinkattn.attention(*views())
    q, k, v = views()
    out = sinkattn.attention(q, k, v)
    assert len(ops._fwd_plans) == 1
    torch.testing.assert_close(out, _no_plans(sinkattn.attention, q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize("max_given", [False, True])
def test_varlen_hit_with_other_offsets(max_given, monkeypatch):
    """Same shapes, other cu_seqlens contents: lengths are read per call when not given; rows past
    cu_seqlens[-1] stay out = 0, lse = -inf (not NaN-poisoned here, so that they can be checked)."""
    monkeypatch.setattr(ops, "_poison_outputs", False)
    max_q, max_k = (4, 5) if max_given else (None, None)
    q, k, v, cu_q, cu_k = _packed()
    sinkattn.varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k, torch.randn(4))
    cu_q2 = torch.tensor([0, 4, 4, 6], dtype=torch.int32)  # also 3 sequences, 2 rows unused
    cu_k2 = torch.tensor([0, 1, 5, 10], dtype=torch.int32)
    s = torch.randn(4)
    out, lse = sinkattn.varlen_attention(q, k, v, cu_q2, cu_k2, max_q, max_k, s, return_lse=True)
    assert len(ops._fwd_plans) == 1
    ref = _no_plans(sinkattn.varlen_attention, q, k, v, cu_q2, cu_k2, max_q, max_k, s,
                    return_lse=True)
    torch.testing.assert_close(out, ref[0], rtol=0, atol=0)
    torch.testing.assert_close(lse, ref[1], rtol=0, atol=0)
    assert (out[6:] == 0).all() and (lse[:, 6:] == -torch.inf).all()


def test_backward_hit_matches_first_call():
    def grads(q, k, v, s, dout):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, s)]
        sinkattn.attention(*leaves, window=5).backward(dout)
        return [t.grad for t in leaves]
    q, k, v = _fixed()
    grads(q, k, v, torch.randn(4), torch.randn(2, 5, 4, 64))
    assert len(ops._bwd_plans) == 1
    q, k, v = _fixed()
    s, dout = torch.randn(4), torch.randn(2, 5, 4, 64)
    got = grads(q, k, v, s, dout)
    assert len(ops._bwd_plans) == 1
    for a, b in zip(got, _no_plans(grads, q, k, v, s, dout)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_low_level_bwd_hit_without_dsink():
    q, k, v = _fixed()
    out, lse = sinkattn.ops.fwd(q, k, v)
    dout = torch.randn_like(out)
    first = sinkattn.ops.bwd(dout, q, k, v, out, lse)
    again = sinkattn.ops.bwd(dout, q, k, v, out, lse)
    assert len(ops._bwd_plans) == 1 and first[3] is None and again[3] is None
    for a, b in zip(first[:3], again[:3]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_plans_hold_no_pointers():
    """A patch the hit path forgot would hand the library NULL (refused), never a freed address."""
    sinkattn.varlen_attention(*_packed(), sinks=torch.randn(4))
    q, k, v = _fixed()
    out, lse = sinkattn.ops.fwd(q, k, v, torch.randn(4))
    sinkattn.ops.bwd(torch.randn_like(out), q, k, v, out, lse, torch.randn(4))
    for plans, cls in ((ops._fwd_plans, _lib.FwdWords), (ops._bwd_plans, _lib.BwdWords)):
        assert plans
        for plan in plans.values():
            words = cls.from_buffer_copy(plan.words)
            ptrs = _lib.pointer_words(_lib.FwdParams if cls is _lib.FwdWords else _lib.BwdParams)
            assert [words[i] for i in ptrs] == [0] * len(ptrs)


def test_refusals_after_a_plan():
    """Every Python-level refusal is a function of the key: a plan never lets bad input through."""
    q, k, v = _fixed()
    s = torch.randn(4)
    sinkattn.attention(q, k, v, s)
    with pytest.raises(TypeError, match="^sinkattn: k:"):
        sinkattn.attention(q, k.double(), v, s)
    with pytest.raises(ValueError, match="^sinkattn: sinks:"):
        sinkattn.attention(q, k, v, torch.randn(3))
    with pytest.raises(ValueError, match="^sinkattn: v:"):
        sinkattn.attention(q, k, v[:, :-1], s)
    out, lse = sinkattn.ops.fwd(q, k, v, s)
    sinkattn.ops.bwd(out, q, k, v, out, lse, s)
    with pytest.raises(ValueError, match="^sinkattn: lse:"):
        sinkattn.ops.bwd(out, q, k, v, out, lse[:, :, :-1], s)
    with pytest.raises(TypeError, match="^sinkattn: lse:"):
        sinkattn.ops.bwd(out, q, k, v, out, lse.double(), s)


def test_library_refusals_after_a_plan():
    """The library still checks every call: bad offsets behind a planned key are refused."""
    q, k, v, cu_q, cu_k = _packed()
    sinkattn.varlen_attention(q, k, v, cu_q, cu_k, 4, 5)
    bad = torch.tensor([0, 3, 2, 7], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[2\]"):
        sinkattn.varlen_attention(q, k, v, bad, cu_k, 4, 5)
    with pytest.raises(ValueError, match="max length"):
        sinkattn.varlen_attention(q, k, v, cu_q, cu_k, 4, 1)  # another key: first-call path
    sinkattn.varlen_attention(q, k, v, cu_q, cu_k, 4, 1 + 4)
    with pytest.raises(ValueError, match="max length"):
        sinkattn.varlen_attention(q, k, v, torch.tensor([0, 1, 1, 7], dtype=torch.int32), cu_k,
                                  4, 5)


def test_non_contiguous_cu_seqlens_read_as_values():
    """The library reads offsets as a dense int32 array: a strided view must be made dense first
    (before, its memory was read as if dense: wrong offsets, or reads past a stride-0 view)."""
    q, k, v, cu_q, cu_k = _packed()
    wide_q = torch.stack([cu_q, torch.full_like(cu_q, 99)], 1)[:, 0]  # stride 2
    wide_k = torch.stack([cu_k, torch.full_like(cu_k, -7)], 1)[:, 0]
    assert wide_q.stride() == (2,)
    ref = sinkattn.varlen_attention(q, k, v, cu_q, cu_k)
    for _ in range(2):  # first call, then a hit
        out = sinkattn.varlen_attention(q, k, v, wide_q, wide_k)
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)  # poisoned spare row


def test_plan_count_is_bounded(monkeypatch):
    monkeypatch.setattr(_plans, "_PLAN_LIMIT", 3)
    for sq in range(1, 8):
        sinkattn.attention(*_fixed(sq=sq))
        assert len(ops._fwd_plans) <= 3


def test_layout_copies_leave_no_plan():
    """Inputs the core cannot read in place are copied; such calls take the first-call path."""
    q = torch.randn(1, 4, 2, 128)[..., ::2]  # head dim not contiguous
    k, v = torch.randn(1, 6, 2, 64), torch.randn(1, 6, 2, 64)
    out = sinkattn.attention(q, k, v)
    assert not ops._fwd_plans
    torch.testing.assert_close(out, sinkattn.attention(q.contiguous(), k, v), rtol=0, atol=0)


def test_lse_skipped_when_nobody_needs_it(monkeypatch):
    """No grad and no return_lse: the library gets lse = NULL; out is the same, on the first call
    and on a hit, and a later call that wants lse still gets it written."""
    allocated = []
    real = ops._fwd_outputs

    def spy(out_like, lse_like, want_lse):
        out, lse = real(out_like, lse_like, want_lse)
        allocated.append(lse is not None)
        return out, lse
    monkeypatch.setattr(ops, "_fwd_outputs", spy)
    q, k, v = _fixed()
    s = torch.randn(4)
    ref, ref_lse = _no_plans(sinkattn.attention, q, k, v, s, return_lse=True)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(sinkattn.attention(q, k, v, s), ref, rtol=0, atol=0)
        out, lse = sinkattn.attention(q, k, v, s, return_lse=True)
    torch.testing.assert_close(lse, ref_lse, rtol=0, atol=0)
    assert allocated == [True, False, False, True]
    qg = q.clone().requires_grad_()
    _, lse = sinkattn.attention(qg, k, v, s, return_lse=True)  # recorded: lse saved for backward
    torch.testing.assert_close(lse.detach(), ref_lse, rtol=0, atol=0)
    assert allocated[-1] is True


def test_threads_share_plans_safely():
    """ctypes releases the GIL during the call: every call patches its own copy of the params."""
    inputs = [(*_fixed(), torch.randn(4)) for _ in range(4)]
    refs = [_no_plans(sinkattn.attention, *x) for x in inputs]
    errors = []

    def work(i):
        try:
            for _ in range(30):
                torch.testing.assert_close(sinkattn.attention(*inputs[i]), refs[i], rtol=0, atol=0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ops._fwd_plans) == 1

cuda = pytest.mark.skipif(not (torch.cuda.is_available() and _lib.HAS_CUDA),
                          reason="needs a GPU and a CUDA build")


@cuda
def test_cuda_misaligned_base_behind_a_plan_is_copied():
    """A plan fixes strides, not addresses: a view 2 bytes off a 16-byte boundary with a planned key
    must take the copying path, forward and backward."""
    shape = (1, 8, 2, 64)
    def misaligned():
        buf = torch.randn(torch.Size(shape).numel() + 1, device="cuda", dtype=torch.bfloat16)
        return buf[1:].view(shape)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    sinkattn.attention(q, k, v)  # plans the key
    qm = misaligned().requires_grad_()
    assert qm.data_ptr() % 16 and qm.stride() == q.stride()
    out = sinkattn.attention(qm, k, v)
    qc = qm.detach().contiguous().requires_grad_()
    ref = sinkattn.attention(qc, k, v)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout)
    torch.testing.assert_close(qm.grad, qc.grad, rtol=0, atol=0)


@cuda
def test_cuda_hit_runs_on_the_current_stream():
    q, k, v = (torch.randn(2, 64, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = sinkattn.attention(q, k, v)  # plans the key on the default stream
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = sinkattn.attention(q, k, v)
        assert len(ops._fwd_plans) == 1
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
