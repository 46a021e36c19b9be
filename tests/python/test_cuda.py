"""CUDA tensors (run on a GPU machine; skipped elsewhere): results against the float64 reference,
the caller's stream, CUDA graph capture (no hidden synchronisation), layouts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import sinkattn
from sinkattn import _lib

from cases import leaf, make, make_varlen, run_and_compare

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
    pytest.mark.skipif(not _lib.HAS_CUDA, reason="libsinkattn built without CUDA"),
]
BF16, F16 = torch.bfloat16, torch.float16

GRID = [
    (2, 1, 37, 4, 1, 64, BF16, True, None),
    (1, 113, 203, 3, 3, 64, BF16, True, 64),
    (1, 239, 1, 2, 2, 32, F16, True, None),
    (2, 128, 128, 8, 1, 128, BF16, True, 1),
    (1, 77, 77, 5, 5, 96, F16, False, (10, 3)),
    (1, 40, 90, 4, 2, 256, BF16, False, None),
    (1, 1023, 1024, 2, 1, 128, BF16, True, None),
    (2, 300, 300, 8, 2, 80, BF16, True, 128),      # head dim 80: padded to 96
    (1, 200, 260, 4, 4, 200, F16, False, (20, 9)),  # 200: padded to 256
]


@pytest.mark.parametrize("case", GRID, ids=str)
def test_fixed_length(case):
    b, sq, sk, hq, hkv, d, dtype, causal, window = case
    run_and_compare(*make(b, sq, sk, hq, hkv, d, dtype, device="cuda"), causal=causal,
                    window=window)


@pytest.mark.parametrize("d", [64, 48])
def test_varlen(d):
    q, k, v, s, cu = make_varlen([5, 0, 130, 1, 64], [7, 3, 130, 0, 200], 4, 2, d, BF16,
                                 device="cuda")
    run_and_compare(q, k, v, s, causal=True, window=None, cu=cu, max_seqlen=(130, 200))


def test_varlen_rows_outside_every_sequence():
    """As on the CPU (test_attention.py): rows before the first sequence and after the last are
    written by the library's guard (out 0, lse -inf, gradients 0), the outputs poisoned first."""
    q, k, v, s, cu = make_varlen([5, 0, 130], [7, 3, 200], 4, 2, 64, BF16, lead=(3, 2),
                                 pad=(2, 4), device="cuda")
    run_and_compare(q, k, v, s, causal=True, window=None, cu=cu, max_seqlen=(130, 200))


@pytest.mark.parametrize("broken", ["max_q", "max_k", "decreasing", "past_rows"])
def test_broken_offsets_fill_with_nan_and_raise_later(broken):
    """Passed max lengths are not checked against cu_seqlens on the host (that read would be a
    sync). A call whose offsets break the contract gets every output NaN from the offsets guard
    (src/cuda/offsets_guard.h), where the kernels alone would leave rows unwritten or overlap
    sequences; the same call with sound offsets is exact, so the guard is what fills. The guard
    keeps the rule broken: once it has run, the error names the offset, as the CPU's check
    would, and is reported once."""
    lens_q, lens_k = [5, 0, 130, 1, 64], [7, 3, 130, 0, 200]
    q, k, v, s, (cu_q, cu_k) = make_varlen(lens_q, lens_k, 4, 2, 64, BF16, pad=(0, 1),
                                           device="cuda")
    run_and_compare(q, k, v, s, causal=True, window=None, cu=(cu_q, cu_k), max_seqlen=(130, 201))
    max_q, max_k = 130, 201
    if broken == "max_q":
        max_q = 129  # sequence 2 has 130 rows: its last row would be left unwritten
        error = r"cu_seqlens_q\[3\] .*got a sequence of length 130, expected at most .* 129 "
    elif broken == "max_k":
        max_k = 199  # sequence 4 has 200 keys
        error = r"cu_seqlens_k\[5\] .*got a sequence of length 200, expected at most .* 199 "
    elif broken == "decreasing":
        cu_q = cu_q.clone()
        cu_q[2] = cu_q[1] - 1  # sequences 1 and 2 would overlap
        error = r"cu_seqlens_q\[2\] .*got 4 after 5, expected non-decreasing"
    else:
        cu_k, max_k = cu_k.clone(), 202
        cu_k[-1] += 2  # past k's 341 rows (the kernels would clamp it to 201 keys)
        error = r"cu_seqlens_k\[5\] .*got 342, expected at most the row count 341 "
    out, lse = sinkattn.varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k, s, return_lse=True)
    assert out.isnan().all() and lse.isnan().all()
    with pytest.raises(ValueError, match=r"^sinkattn_deferred_error: problem\." + error):
        sinkattn.check_deferred_error()
    sinkattn.check_deferred_error()  # reported once
    grads = torch.autograd.grad(out, (q, k, v, s), torch.randn_like(out))
    for name, g in zip(("dq", "dk", "dv", "dsink"), grads):
        assert g.isnan().all(), name
    with pytest.raises(ValueError, match=error):  # the backward's own guard
        sinkattn.check_deferred_error()


def test_broken_offsets_fail_the_next_cuda_call():
    """The kept fault fails the next call on CUDA (any shape, before it writes anything), then
    calls run again."""
    q, k, v, s, (cu_q, cu_k) = make_varlen([5, 9], [5, 9], 4, 2, 64, BF16, device="cuda")
    sinkattn.varlen_attention(q, k, v, cu_q, cu_k, 8, 9, s)  # sequence 1 has 9 > 8 queries
    torch.cuda.synchronize()
    x = torch.randn(1, 16, 4, 64, device="cuda", dtype=BF16)
    with pytest.raises(ValueError, match=r"^sinkattn_fwd: problem\.cu_seqlens_q\[2\] of a packed "
                       r"call enqueued earlier on CUDA device \d+ .*length 9, expected at most .* 8 "):
        sinkattn.attention(x, x, x)
    assert sinkattn.attention(x, x, x).isfinite().all()


def test_broken_zigzag_lengths_fill_with_nan():
    """The fused zigzag rules (each query length even, keys = world x queries), checked by the
    guard as the CPU backend checks them."""
    q, k, v, s, (cu_q, cu_k) = make_varlen([4, 6], [8, 12], 4, 2, 64, BF16, device="cuda")
    out, lse = sinkattn.ops.fwd(q, k, v, s, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=6,
                                max_seqlen_k=12, zigzag=(0, 2))
    assert out.isfinite().all() and lse.isfinite().all()
    _, _, _, _, (cu_q, cu_k) = make_varlen([4, 5], [8, 12], 4, 2, 64, BF16, device="cuda")
    out, lse = sinkattn.ops.fwd(q[:9], k, v, s, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                max_seqlen_q=6, max_seqlen_k=12, zigzag=(0, 2))
    assert out.isnan().all() and lse.isnan().all()
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[2\] .*got a query length of 5 "
                       r"\(sequence 1\) with zigzag_world 2, expected an even length"):
        sinkattn.check_deferred_error()
    _, _, _, _, (cu_q, cu_k) = make_varlen([4, 6], [8, 10], 4, 2, 64, BF16, device="cuda")
    sinkattn.ops.fwd(q, k[:18], v[:18], s, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=6,
                     max_seqlen_k=12, zigzag=(0, 2))
    with pytest.raises(ValueError, match=r"cu_seqlens_k\[2\] .*got a key length of 10 "
                       r"\(sequence 1\), expected zigzag_world x query length = 2 x 6 = 12"):
        sinkattn.check_deferred_error()


@pytest.mark.parametrize("case", [(2, 1, 3000, 8, 1, 64, None), (1, 2, 600, 16, 2, 128, 100),
                                  (3, 1, 40, 4, 4, 64, None)], ids=str)
def test_decode_runs_the_packed_group_kernel(case):
    """Decode-sized queries (group x q <= 16 rows) take the packed-group forward, with key splits
    (the first case: 2 kv heads x sequences over 3000 keys) and without; against the reference,
    gradients included (the backward is the usual one, fed by this forward's lse)."""
    b, sq, sk, hq, hkv, d, window = case
    q, k, v, s = make(b, sq, sk, hq, hkv, d, BF16, device="cuda")
    assert sinkattn.kernels(q.detach(), k.detach(), v.detach(), s.detach())["fwd"].startswith(
        "cuda packed group")
    run_and_compare(q, k, v, s, causal=True, window=window)
    qv, kv, vv, sv, cu = make_varlen([1, 0, 2], [2000, 5, 0], hq, hkv, d, BF16, device="cuda")
    run_and_compare(qv, kv, vv, sv, causal=True, window=window, cu=cu, max_seqlen=(2, 2000))


@pytest.mark.parametrize("packed", [True, False])
def test_more_sequences_than_one_launch_takes(packed):
    """70,000 sequences (the CUDA grids take 65,535 a launch): the Python layer runs them in
    chunks of sequences; against the CPU backend on the same bf16 inputs (in fp32). Packed: 0-3
    tokens each; fixed length: one query over 3 keys each (decode)."""
    g = torch.Generator().manual_seed(7)
    n = 70_000
    if packed:
        lens = torch.randint(0, 4, (n,), generator=g, dtype=torch.int32)
        cu = torch.nn.functional.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
        rows = int(cu[-1])
        shapes = [(rows, 4, 64), (rows, 2, 64), (rows, 2, 64)]
    else:
        cu = None
        shapes = [(n, 1, 4, 64), (n, 3, 2, 64), (n, 3, 2, 64)]
    q, k, v = (torch.randn(shape, generator=g).to(BF16) for shape in shapes)
    s = torch.randn(4, generator=g)
    dout = torch.randn(shapes[0], generator=g).to(BF16)

    def attend(q, k, v, s, dev):
        if packed:
            return sinkattn.varlen_attention(q, k, v, cu.to(dev), cu.to(dev), None, None, s,
                                             window=2, return_lse=True)
        return sinkattn.attention(q, k, v, s, window=2, return_lse=True)

    cu_kw = dict(cu_seqlens_q=cu.cuda(), cu_seqlens_k=cu.cuda()) if packed else {}
    assert "calls of at most 65535 sequences" in sinkattn.kernels(
        q.cuda(), k.cuda(), v.cuda(), s.cuda(), **cu_kw)["fwd"]
    results = []
    for dev, dtype in (("cuda", BF16), ("cpu", torch.float32)):
        ins = [leaf(t.to(dev, dtype)) for t in (q, k, v)] + [leaf(s.to(dev))]
        out, lse = attend(*ins, dev)
        grads = torch.autograd.grad(out, ins, dout.to(dev, dtype))
        results.append([t.detach().float().cpu() for t in (out, lse, *grads)])
    for name, got, want in zip(("out", "lse", "dq", "dk", "dv", "dsink"), *results):
        # bf16 against fp32: ~2.5 units of bf16 rounding (2^-8) at the tensor's largest magnitude
        # (the CPU backend's own bf16 run of this test is 0.34-0.38% of it off, dq the most);
        # a chunk computed wrong or not at all is off by the values themselves
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-2 * float(want.abs().max()),
                                   msg=name)


def test_transposed_views_and_lse_gradient():
    q = leaf(torch.randn(2, 4, 100, 64, device="cuda", dtype=BF16)).transpose(1, 2)
    k = leaf(torch.randn(2, 2, 100, 64, device="cuda", dtype=BF16)).transpose(1, 2)
    v = leaf(torch.randn(2, 2, 100, 64, device="cuda", dtype=BF16)).transpose(1, 2)
    s = leaf(torch.randn(4, device="cuda"))
    run_and_compare(q, k, v, s, causal=True, window=33, lse_grad=True)


def test_side_stream():
    q, k, v, s = (t.detach() for t in make(1, 256, 256, 4, 4, 64, BF16, device="cuda"))
    want = sinkattn.attention(q, k, v, s)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = sinkattn.attention(q, k, v, s)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cuda_graph_capture_forward_and_backward():
    q, k, v, s = make(1, 128, 128, 4, 2, 64, BF16, device="cuda")
    dout = torch.randn(1, 128, 4, 64, device="cuda", dtype=BF16)

    def step():  # out detached: a live graph from the warm-up would keep its stream's grad nodes
        out = sinkattn.attention(q, k, v, s, window=64)
        return (out.detach(),) + torch.autograd.grad(out, (q, k, v, s), dout)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        eager = step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


_FIRST_PACKED_CALL_CAPTURED = """
import torch, sinkattn
torch.manual_seed(0)
q, k, v = (torch.randn(300, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
s = torch.randn(4, device="cuda")
cu = torch.tensor([0, 100, 300], device="cuda", dtype=torch.int32)
sinkattn.attention(q[None], k[None], v[None], s)  # kernels loaded; no packed call yet
graphs = [torch.cuda.CUDAGraph() for _ in range(2)]
with torch.cuda.graph(graphs[0]):  # the process's first packed call: its fault record is made
    out = sinkattn.varlen_attention(q, k, v, cu, cu, 200, 200, s)
with torch.cuda.graph(graphs[1]):  # sequence 1 has 200 > 199 rows
    broken = sinkattn.varlen_attention(q, k, v, cu, cu, 199, 200, s)
for g in graphs:
    g.replay()
torch.cuda.synchronize()
try:  # first: a pending fault fails the next call
    sinkattn.check_deferred_error()
except ValueError as e:
    print("raised:", e)
assert torch.equal(out, sinkattn.varlen_attention(q, k, v, cu, cu, 200, 200, s))
assert broken.isnan().all()
"""


def test_first_packed_call_under_graph_capture():
    """The fault record is allocated by a process's first packed call, which may be captured
    (torch.cuda.graph's global capture mode forbids allocations): the capture and its replay
    work, and a replayed broken call's fault is reported. In a fresh process."""
    run = subprocess.run([sys.executable, "-c", _FIRST_PACKED_CALL_CAPTURED], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "raised: sinkattn_deferred_error: problem.cu_seqlens_q[2] of a packed call" in run.stdout
    assert "got a sequence of length 200, expected at most the max length 199" in run.stdout


def test_opcheck_and_compile_on_cuda():
    q, k, v, s = (t.detach() for t in make(1, 64, 80, 4, 2, 64, BF16, device="cuda"))
    torch.library.opcheck(torch.ops.sinkattn.fwd.default,
                          (q, k, v, s, None, None, -1, -1, 0.125, 16, 0, True, False))
    ql, kl, vl, sl = make(1, 64, 80, 4, 2, 64, BF16, device="cuda")
    fn = lambda q, k, v, s: sinkattn.attention(q, k, v, s, window=16).float().square().sum()
    torch._dynamo.reset()
    got = torch.autograd.grad(torch.compile(fn, fullgraph=True)(ql, kl, vl, sl), (ql, kl, vl, sl))
    want = torch.autograd.grad(fn(ql, kl, vl, sl), (ql, kl, vl, sl))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_kernels_names_the_hopper_path_or_the_reason(monkeypatch):
    """sinkattn.kernels reports the kernel family; on sm_90 the Hopper one for d 64 / 128 and the
    portable one, with its reason, where it does not apply or is switched off."""
    q, k, v, s = (t.detach() for t in make(1, 64, 64, 4, 2, 64, BF16, device="cuda"))
    if torch.cuda.get_device_capability() != (9, 0):
        assert sinkattn.kernels(q, k, v, s)["fwd"].startswith("cuda sm80 (portable; sm90 not used")
        return
    got = sinkattn.kernels(q, k, v, s)
    assert got == {"fwd": "cuda sm90 (wgmma, TMA)", "bwd": "cuda sm90 (wgmma, TMA)"}
    # GPT-OSS's sliding layers (a group of 8 query heads, window 128): the GQA-packed band forward
    # and the band dq kernel in the backward; so do causal sequences of up to 129 keys, where
    # causal is a window of 128.
    def is_band(found):
        return (found["fwd"].startswith("cuda sm90 band")
                and found["bwd"].startswith("cuda sm90 (wgmma, TMA; dq by the band kernel"))
    qb, kb, vb, sb = (t.detach() for t in make(1, 200, 200, 8, 1, 64, BF16, device="cuda"))
    assert is_band(sinkattn.kernels(qb, kb, vb, sb, window=128))
    assert sinkattn.kernels(qb, kb, vb, sb)["fwd"] == "cuda sm90 (wgmma, TMA)"
    assert is_band(sinkattn.kernels(qb[:, :129], kb[:, :129], vb[:, :129], sb))
    assert not is_band(sinkattn.kernels(qb[:, :130], kb[:, :130], vb[:, :130], sb))
    cu = torch.tensor([0, 130, 130, 200], dtype=torch.int32, device="cuda")
    assert not is_band(sinkattn.kernels(qb[0], kb[0], vb[0], sb, cu_seqlens_q=cu, cu_seqlens_k=cu))
    cu = torch.tensor([0, 129, 129, 190], dtype=torch.int32, device="cuda")
    assert is_band(sinkattn.kernels(qb[0, :190], kb[0, :190], vb[0, :190], sb, cu_seqlens_q=cu,
                                    cu_seqlens_k=cu))
    q32, k32, v32, s32 = (t.detach() for t in make(1, 64, 64, 4, 2, 32, BF16, device="cuda"))
    assert "head_dim 32" in sinkattn.kernels(q32, k32, v32, s32)["fwd"]
    monkeypatch.setenv("SINKATTN_CUDA_PATH", "sm80")
    assert sinkattn.kernels(q, k, v, s)["bwd"] == (
        "cuda sm80 (portable; sm90 not used: SINKATTN_CUDA_PATH=sm80)")
