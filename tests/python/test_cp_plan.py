"""Context parallelism without processes: layouts, the block planner and the partial merge.

The planner is checked against a plain mask count: over all (query rank, key rank) blocks, the
kernel calls it emits must look at exactly the (query, key) pairs the global mask makes visible,
each once, so that no block is computed twice, none is missed, and blocks no query sees are
skipped."""

from __future__ import annotations

import math

import pytest
import torch

from sinkattn.cp import layout as L
from sinkattn.cp import merge, plan
from sinkattn.cp.problem import Problem


def _visible(bounds, left, right) -> int:
    """Pairs (i, j) of the same document with i - left <= j <= i + right (-1 = unbounded)."""
    n = 0
    for a, b in zip(bounds, bounds[1:]):
        for i in range(b - a):
            lo = 0 if left < 0 else max(0, i - left)
            hi = b - a - 1 if right < 0 else min(b - a - 1, i + right)
            n += max(0, hi - lo + 1)
    return n


def _problem(world, rank, layout, bounds, left, right, batch=1):
    total = bounds[-1]
    return Problem(None, rank, world, "ring", layout, batch, total // world, total, bounds,
                   len(bounds) > 2, 4, 2, 32, left, right, 1.0, False, 1, False, False, False)


CASES = [  # world, layout, bounds
    (2, "contiguous", [0, 5, 22, 22, 52, 64]),
    (4, "contiguous", [0, 5, 22, 22, 52, 64]),
    (4, "contiguous", [0, 64]),
    (2, "zigzag", [0, 12, 12, 32, 40, 64]),
    (4, "zigzag", [0, 24, 24, 64]),
    (3, "zigzag", [0, 36, 48]),
]
MASKS = [(-1, 0), (4, 0), (-1, -1), (3, 2), (0, 0), (100, 0)]


@pytest.mark.parametrize("world,layout,bounds", CASES)
@pytest.mark.parametrize("left,right", MASKS)
def test_ring_blocks_cover_the_mask_exactly_once(world, layout, bounds, left, right):
    total = 0
    for r in range(world):
        P = _problem(world, r, layout, bounds, left, right)
        for src in range(world):
            total += plan.visible_pairs(plan.build(P.segs(r), P.segs(src), left, right))
    assert total == _visible(bounds, left, right)


@pytest.mark.parametrize("world,layout,bounds", CASES)
@pytest.mark.parametrize("left,right", MASKS)
def test_gathered_keys_cover_the_mask_exactly_once(world, layout, bounds, left, right):
    total, calls = 0, 0
    for r in range(world):
        P = _problem(world, r, layout, bounds, left, right)
        c = plan.build(P.segs(r), P.doc_segs(), left, right)
        total += plan.visible_pairs(c)
        rows = sorted(p for call in c for p in call.pieces)  # each row in one call at most:
        assert all(a[1] <= b[0] for a, b in zip(rows, rows[1:]))  # allgather passes sinks there
        calls = max(calls, len(c))
    assert total == _visible(bounds, left, right)
    if len(bounds) == 2 and right == 0:  # one sequence, causal: one call per query chunk
        assert calls == (1 if layout == "contiguous" else 2)


@pytest.mark.parametrize("world,layout,bounds", CASES)
@pytest.mark.parametrize("left,right", [m for m in MASKS if m[0] >= 0 and m[1] >= 0])
def test_halo_blocks_cover_the_mask_exactly_once(world, layout, bounds, left, right):
    from sinkattn.cp.halo import Halo
    total = 0
    for r in range(world):
        P = _problem(world, r, layout, bounds, left, right)
        h = Halo(P)
        rows = [i for c in h.calls for a, b in c.pieces for i in range(a, b)]
        assert len(rows) == len(set(rows))  # each query row meets all of its keys in one call
        total += plan.visible_pairs(h.calls)
        assert h.n_halo <= len(P.segs(r)) * (left + right)  # only rows the window reaches
    assert total == _visible(bounds, left, right)


def test_blocks_outside_a_window_are_skipped():
    # 4 ranks x 16 rows, window 5 (left 4): each rank only needs the previous rank's block.
    P = _problem(4, 3, "contiguous", [0, 64], 4, 0)
    blocks = [plan.build(P.segs(3), P.segs(src), 4, 0) for src in range(4)]
    assert [bool(b) for b in blocks] == [False, False, True, True]
    assert plan.visible_pairs(blocks[2]) == 4 + 3 + 2 + 1  # the first 4 queries reach back
    from sinkattn.cp.ring import Ring
    assert Ring(P).steps == 2  # the rotation stops after one hop


def test_layouts_partition_the_stream():
    cu = [0, 8, 8, 24, 40]
    for layout in L.LAYOUTS:
        for world in (1, 2, 4):
            rows = torch.cat([L.local_index(layout, r, world, 40 if layout == "contiguous" else 40,
                                            cu if layout == "zigzag" else None)
                              for r in range(world)])
            assert sorted(rows.tolist()) == list(range(40))
    # zigzag: rank r holds chunks r and 2W-1-r
    assert L.local_ranges("zigzag", 1, 2, 16) == [(4, 4), (8, 4)]
    assert L.local_ranges("zigzag", 0, 2, 16) == [(0, 4), (12, 4)]
    x = torch.arange(16).view(1, 16)
    assert L.shard(x, "zigzag", rank=1, world_size=2).tolist() == [[4, 5, 6, 7, 8, 9, 10, 11]]
    assert L.local_cu_seqlens(cu, "zigzag", 0, 2).tolist() == [0, 4, 4, 12, 20]
    assert L.local_cu_seqlens(cu, "contiguous", 1, 2).tolist() == [0, 4, 20]


def test_layout_refusals_name_the_argument():
    with pytest.raises(ValueError, match="q: global length 14 is not divisible by 2"):
        L.local_ranges("zigzag", 0, 2, 14)
    with pytest.raises(ValueError, match="cu_seqlens: document at row 4 of length 5"):
        L.local_ranges("zigzag", 0, 2, 9, [0, 4, 9], "cu_seqlens")
    with pytest.raises(ValueError, match="layout"):
        L.check_layout("striped")
    x = torch.zeros(1, 8, 2)
    for kw, exc, words in [
        (dict(dim=3, rank=0, world_size=2), ValueError, "dim: got 3, expected a dimension of"),
        (dict(dim="1", rank=0, world_size=2), TypeError, "dim: got '1', expected an int"),
        (dict(rank=1), TypeError, "world_size: got None, expected an int"),
        (dict(rank=2, world_size=2), ValueError, "rank: got 2 with world_size 2"),
        (dict(rank=0, world_size=2, cu_seqlens=[0, 4, 9]), ValueError, "cu_seqlens: ends at 9"),
        (dict(rank=0, world_size=2, cu_seqlens="08"), TypeError, "cu_seqlens: got '08'"),
    ]:
        with pytest.raises(exc, match=f"^sinkattn.cp: {words}"):
            L.shard(x, **kw)
    assert L.shard(x, dim=-2, rank=1, world_size=2).shape == (1, 4, 2)  # negative dims count back


def test_merge_is_exact_and_never_nan():
    torch.manual_seed(0)
    h, t, d = 3, 5, 8
    logits = torch.randn(h, t, 12)
    vals = torch.randn(12, d)
    sinks = torch.randn(h)
    full = torch.cat([logits, sinks.view(h, 1, 1).expand(h, t, 1)], -1)
    p = torch.softmax(full, -1)[..., :12]
    want_out = torch.einsum("htj,jd->thd", p, vals)
    want_lse = torch.logsumexp(full, -1)
    acc_out, acc_lse = merge.empty(t, h, d, "cpu")
    for sl in (slice(0, 5), slice(5, 5), slice(5, 12)):  # an empty block in the middle
        lg = logits[..., sl]
        lse = torch.logsumexp(lg, -1) if lg.shape[-1] else torch.full((h, t), -math.inf)
        out = torch.einsum("htj,jd->thd", torch.softmax(lg, -1), vals[sl]) if lg.shape[-1] \
            else torch.zeros(t, h, d)
        merge.merge_into(acc_out, acc_lse, out, lse)
    out, lse = merge.add_sink(acc_out, acc_lse, sinks)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(lse, want_lse)
    # two empty partials: out 0, lse -inf; with a sink: out 0, lse = s
    e_out, e_lse = merge.empty(t, h, d, "cpu")
    merge.merge_into(e_out, e_lse, torch.zeros(t, h, d), torch.full((h, t), -math.inf))
    assert not e_out.isnan().any() and (e_out == 0).all() and (e_lse == -math.inf).all()
    s_out, s_lse = merge.add_sink(e_out, e_lse, sinks)
    assert (s_out == 0).all() and torch.equal(s_lse, sinks.view(h, 1).expand(h, t))


@pytest.mark.parametrize("world,bounds,left,right", [
    (2, [0, 8, 8, 32, 44], -1, 0),  # causal, packed documents (one empty)
    (3, [0, 12, 48], 5, 0),          # causal window, chunks of 2 and 8 rows
    (2, [0, 40], 3, 2),              # a band: keys ahead of the query too
    (4, [0, 16], -1, -1),            # bidirectional
])
def test_fused_zigzag_call_is_each_ranks_rows_of_the_full_attention(world, bounds, left, right):
    """allgather.fused_call (one kernel call, problem.zigzag_*) against the keys in global order
    gives every rank exactly its rows of the full sequence's out, lse and dq, and the ranks' dK/dV
    sum to the full ones (single process, CPU, fp32)."""
    from sinkattn import ops
    from sinkattn.cp import allgather, local

    g = torch.Generator().manual_seed(7)
    T, hq, hkv, d = bounds[-1], 4, 2, 32
    q, dout = (torch.randn(T, hq, d, generator=g) for _ in range(2))
    k, v = (torch.randn(T, hkv, d, generator=g) for _ in range(2))
    sinks = torch.randn(hq, generator=g)
    cu = torch.tensor(bounds, dtype=torch.int32)
    mask = dict(causal=right == 0, window=None if left < 0 and right < 0 else
                (None if left < 0 else left, None if right < 0 else right))
    out, lse = ops.fwd(q, k, v, sinks, cu_seqlens_q=cu, cu_seqlens_k=cu, **mask)
    dq, dk, dv, _ = ops.bwd(dout, q, k, v, out, lse, sinks, cu_seqlens_q=cu, cu_seqlens_k=cu,
                            **mask)
    dk_sum, dv_sum = torch.zeros_like(k), torch.zeros_like(v)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6)  # noqa: E731
    for rank in range(world):
        P = Problem(None, rank, world, "allgather", "zigzag", 1, T // world, T, bounds, True, hq,
                    hkv, d, left, right, d ** -0.5, False, 1, True, False, False, True)
        call = allgather.fused_call(P)
        assert call.zigzag == (rank, world) and len(call.cu_q) == len(bounds)
        sh = lambda t, dim=0: L.shard(t, "zigzag", dim=dim, cu_seqlens=bounds,  # noqa: E731
                                      rank=rank, world_size=world)
        o, l = local.run_one(call, sh(q), k, v, sinks, P.scale)
        close(o, sh(out))
        close(l, sh(lse, 1))
        gq = torch.zeros(sh(q).shape)
        local.backward([call], sh(dout), sh(q), k, v, sh(out), sh(lse, 1), P.scale, False, gq,
                       dk_sum, dv_sum)
        close(gq, sh(dq))
    close(dk_sum, dk)
    close(dv_sum, dv)


def test_fused_zigzag_refusals_name_the_argument():
    from sinkattn import ops

    q = torch.randn(8, 2, 32)
    k = torch.randn(16, 2, 32)
    cu_q, cu_k = torch.tensor([0, 8], dtype=torch.int32), torch.tensor([0, 16], dtype=torch.int32)
    kw = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    with pytest.raises(TypeError, match="zigzag"):
        ops.fwd(q, k, k, zigzag=(1,), **kw)
    with pytest.raises(ValueError, match="problem.zigzag_rank"):
        ops.fwd(q, k, k, zigzag=(2, 2), **kw)
    with pytest.raises(ValueError, match=r"problem.cu_seqlens_k\[1\]"):
        ops.fwd(q, k, k, zigzag=(0, 3), **kw)  # 16 keys, expected 3 x 8


def test_local_backward_hands_deterministic_to_the_kernel(monkeypatch):
    """The CPU backward is deterministic either way: only the argument shows it reaches ops.bwd."""
    from sinkattn import ops
    from sinkattn.cp import local

    seen = []
    real = ops.bwd
    monkeypatch.setattr(ops, "bwd", lambda *a, **kw: seen.append(kw["deterministic"]) or real(*a, **kw))
    T, hq, hkv, d = 8, 4, 2, 32
    q, dout = torch.randn(T, hq, d), torch.randn(T, hq, d)
    k, v = torch.randn(T, hkv, d), torch.randn(T, hkv, d)
    (call,) = plan.build([L.Seg(0, T, 0, 0)], [L.Seg(0, T, 0, 0)], -1, 0)  # causal, one call
    out, lse = local.run_one(call, q, k, v, None, d ** -0.5)
    for det in (True, False):
        grads = [torch.zeros(t.shape) for t in (q, k, v)]
        local.backward([call], dout, q, k, v, out, lse, d ** -0.5, det, *grads)
    assert seen == [True, False]
