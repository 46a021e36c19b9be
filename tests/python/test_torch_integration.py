"""opcheck of every op, torch.compile(fullgraph=True) forward and backward, gradcheck, and the
eager fast path against the dispatcher path."""

from __future__ import annotations

import os

import pytest
import torch

import sinkattn
from sinkattn import ops

from cases import leaf, make, make_varlen


def _fwd_args(varlen, sinks=True, dtype=torch.float32, d=None):
    """d: the head dim (default 32 varlen, 64 fixed; one the kernels lack runs padded)."""
    if varlen:
        q, k, v, s, (cu_q, cu_k) = make_varlen([3, 0, 5], [4, 2, 5], 4, 2, d or 32, dtype, sinks)
        return (q, k, v, s, cu_q, cu_k, 5, 5, 0.2, -1, 0, True, False)
    q, k, v, s = make(2, 5, 7, 4, 2, d or 64, dtype, sinks)
    return (q, k, v, s, None, None, -1, -1, 0.125, 3, 2, False, False)


def _bwd_args(fwd_args):
    q, k, v, s = (t.detach() for t in fwd_args[:4] if t is not None) if fwd_args[3] is not None \
        else (*(t.detach() for t in fwd_args[:3]), None)
    out, lse = ops.fwd_impl(*fwd_args)
    return (torch.randn_like(out), q, k, v, out, lse, s, *fwd_args[4:], s is not None)


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("sinks", [True, False])
def test_opcheck_fwd(varlen, sinks):
    torch.library.opcheck(torch.ops.sinkattn.fwd.default, _fwd_args(varlen, sinks))


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("d", [None, 40])
def test_opcheck_bwd(varlen, d):
    ops._poison_outputs = False  # opcheck compares runs; the library writes every element anyway
    torch.library.opcheck(torch.ops.sinkattn.bwd.default, _bwd_args(_fwd_args(varlen, d=d)))


@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck_fwd_padded_head_dim(varlen):
    torch.library.opcheck(torch.ops.sinkattn.fwd.default, _fwd_args(varlen, d=40))


def test_fast_path_equals_dispatcher_path():
    args = _fwd_args(False)
    results = []
    for fast in (True, False):
        ops._eager_fast_path = fast
        q, k, v, s = (leaf(t) for t in args[:4])
        out, lse = sinkattn.attention(q, k, v, s, causal=False, window=(3, 2), scale=0.125,
                                      return_lse=True)
        results.append((out, lse, *torch.autograd.grad((out.sum() + lse.sum()), (q, k, v, s))))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_compile_fullgraph_both_apis_forward_and_backward():
    """One compiled function calls attention and varlen_attention; no graph break (fullgraph), the
    backward runs through the compiled graph, and everything matches eager."""
    q, k, v, s = make(2, 9, 12, 4, 2, 64, torch.float32)
    vq, vk, vv, vs, (cu_q, cu_k) = make_varlen([4, 0, 7], [6, 3, 7], 4, 1, 32, torch.float32)

    def fn(q, k, v, s, vq, vk, vv, vs):
        a, lse = sinkattn.attention(q, k, v, s, window=5, return_lse=True)
        b = sinkattn.varlen_attention(vq, vk, vv, cu_q, cu_k, 7, 7, vs, causal=False,
                                      window=(2, 3))
        return a.square().sum() + b.square().sum() + lse.sum()

    inputs = (q, k, v, s, vq, vk, vv, vs)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = compiled(*inputs)
    got_grads = torch.autograd.grad(got, inputs)
    want = fn(*inputs)
    want_grads = torch.autograd.grad(want, inputs)
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)


@pytest.mark.skipif(not os.environ.get("SINKATTN_SLOW_TESTS"),
                    reason="inductor's C++ compile takes ~40 s on 2 cores; SINKATTN_SLOW_TESTS=1")
def test_compile_inductor_forward():
    """The real compiler stack on the forward (inductor compiles the surrounding ops)."""
    q, k, v, s = (t.detach() for t in make(1, 8, 8, 2, 1, 64, torch.float32))
    fn = lambda q, k, v, s: sinkattn.attention(q * 2, k, v, s).sum(-1)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(fn, fullgraph=True)(q, k, v, s), fn(q, k, v, s))


def test_compile_fullgraph_padded_head_dim():
    """A head dim the kernels are not built for: the padding and the cut trace into the graph."""
    q, k, v, s = make(1, 11, 11, 4, 2, 80, torch.float32)

    def fn(q, k, v, s):
        return sinkattn.attention(q, k, v, s, window=4).square().sum()

    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, k, v, s)
    want = fn(q, k, v, s)
    torch.testing.assert_close(got, want)
    inputs = (q, k, v, s)
    for g, w in zip(torch.autograd.grad(got, inputs), torch.autograd.grad(want, inputs)):
        torch.testing.assert_close(g, w)


def test_compile_varlen_without_max_seqlen():
    """max_seqlen None: the host read of cu_seqlens happens inside the op, so no graph break."""
    vq, vk, vv, vs, (cu_q, cu_k) = make_varlen([4, 0, 7], [6, 3, 7], 4, 1, 32, torch.float32)
    fn = lambda q, k, v: sinkattn.varlen_attention(q, k, v, cu_q, cu_k, sinks=vs.detach())
    torch._dynamo.reset()
    with torch.no_grad():
        args = (vq.detach(), vk.detach(), vv.detach())
        torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="aot_eager")(*args),
                                   fn(*args))


@pytest.mark.parametrize("varlen", [False, True])
def test_gradcheck(varlen):
    """Finite differences of the library's own forward against its backward, sinks and the lse
    output included. The core has no float64, so the inputs are float32 behind a float64 wrapper:
    with eps 1e-3 the check resolves the Jacobian to about 1e-3 relative - it proves the backward is
    the derivative of the forward (right formulas, right masking, right GQA and sink sums), not
    float32 accuracy, which test_attention checks against float64."""
    if varlen:
        q, k, v, s, (cu_q, cu_k) = make_varlen([3, 0, 2], [2, 1, 3], 2, 1, 32, torch.float32)
        call = lambda q, k, v, s: sinkattn.varlen_attention(q, k, v, cu_q, cu_k, sinks=s,
                                                            causal=False, window=(1, 1),
                                                            return_lse=True)
    else:
        q, k, v, s = make(1, 3, 4, 2, 1, 32, torch.float32)
        call = lambda q, k, v, s: sinkattn.attention(q, k, v, s, window=2, return_lse=True)
    ops._poison_outputs = False

    def f(*xs):
        out, lse = call(*(x.float() for x in xs))
        return out.double(), lse.double()

    inputs = tuple(leaf(t.double()) for t in (q, k, v, s))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-3, atol=2e-3, rtol=2e-3)
