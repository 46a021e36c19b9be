"""mode='halo' for sliding-window layers: each rank receives only the K/V rows its window reaches.

A query at position p sees keys [p - left, p + right] of its own document, so a rank needs, beyond
its own rows, only the `left` rows before and the `right` rows after each of its chunks (W - 1
and 0 for a causal window=W), within the same document. Which rank holds each of those rows follows
from the layout, so every rank computes the same exchange lists without communicating: rank a
receives from rank b exactly the rows of b it needs (contiguous layout: the tail of rank a - 1;
zigzag: the tails of the chunks before each of a's two chunks, one of which may be a's own).

The local block is computed while the halos are in flight, the halo blocks after. The backward
sends the halo rows' dK/dV (fp32) back to their owners, overlapped with the local block's backward.
The window must be bounded on both sides (that is what makes the halo small).
"""

from __future__ import annotations

from typing import List

import torch

from . import comm, local, merge, plan
from . import layout as L
from .layout import Seg, _fail
from .problem import Problem


def _exchange_rows(P: Problem):
    """need[a][b]: (global rows, b-local rows) rank a needs from rank b (b != a), LongTensors in
    increasing global order; the same on every rank."""
    total, W = P.total, P.world
    owner = torch.empty(total, dtype=torch.long)
    local_row = torch.empty(total, dtype=torch.long)
    held = []
    cu = P.bounds if P.varlen else None
    for r in range(W):
        off = 0
        for start, n in L.local_ranges(P.layout, r, W, total, cu):
            owner[start:start + n] = r
            local_row[start:start + n] = torch.arange(off, off + n)
            off += n
        held.append(L.segments(L.local_ranges(P.layout, r, W, total, cu), P.bounds))
    need = []
    for a in range(W):
        want = torch.zeros(total, dtype=torch.bool)
        for s in held[a]:
            d0, d1 = P.bounds[s.doc], P.bounds[s.doc + 1]
            g = d0 + s.pos
            want[max(d0, g - P.left):g] = True
            want[g + s.n:min(d1, g + s.n + P.right)] = True
        rows = torch.nonzero(want & (owner != a)).flatten()
        need.append([(rows[owner[rows] == b], local_row[rows[owner[rows] == b]])
                     for b in range(W)])
    return need


def _runs(rows: torch.Tensor) -> List[tuple]:
    """Sorted global rows as (start, length) runs of consecutive rows."""
    if rows.numel() == 0:
        return []
    cut = torch.nonzero(rows[1:] != rows[:-1] + 1).flatten() + 1
    edges = [0] + cut.tolist() + [rows.numel()]
    return [(int(rows[a]), b - a) for a, b in zip(edges, edges[1:])]


def _plans(P: Problem):
    """(rows received from each rank, my local rows each rank needs, halo rows, local calls,
    halo calls)."""
    r, W = P.rank, P.world
    need = _exchange_rows(P)
    recv_counts = [need[r][b][0].numel() for b in range(W)]
    send_rows = [need[a][r][1] for a in range(W)]
    n_halo = sum(recv_counts)
    mine = P.segs(r)
    # the halo buffer: (B, n_halo) rows, the pieces from rank 0, 1, ... in global order
    one: List[Seg] = []
    off = 0
    for b in range(W):
        for start, n in _runs(need[r][b][0]):
            one += L.segments([(start, n)], P.bounds, off)
            off += n
    segs = [Seg(s.row + bb * n_halo, s.n, s.doc + bb * P.ndocs, s.pos)
            for bb in range(P.batch) for s in one]
    return (recv_counts, send_rows, n_halo, plan.build(mine, mine, P.left, P.right),
            plan.build(mine, segs, P.left, P.right))


class Halo:
    def __init__(self, P: Problem):
        if P.left < 0 or P.right < 0:
            _fail("window", "mode='halo' needs a bounded window (window=W with causal=True, or "
                  f"bounded (left, right)); got left={P.left}, right={P.right} (-1 = unbounded); "
                  "use mode='ring' or 'allgather' for full attention")
        self.P = P
        (self.recv_counts, self.send_rows, self.n_halo, self.calls_local,
         self.calls_halo) = P.cached("halo", lambda: _plans(P))

    def _exchange(self, P, kv4, grads=None):
        """Forward (grads None): sends the rows others need from kv4 (B, n, ...), receives the
        halo pieces. Backward: sends the pieces' grads (B, n_halo, ...) home, receives the grads of
        my rows that others used. Returns (pending, received list by rank)."""
        sends, recvs, got = [], [], [None] * P.world
        tail = tuple(kv4.shape[2:])
        for b in range(P.world):
            if b == P.rank:
                continue
            n_out = self.send_rows[b].numel()
            n_in = self.recv_counts[b]
            if grads is None:
                if n_out:
                    idx = self.send_rows[b].to(kv4.device)
                    sends.append((kv4.index_select(1, idx).contiguous(), b))
                if n_in:
                    got[b] = kv4.new_empty((P.batch, n_in) + tail)
                    recvs.append((got[b], b))
            else:
                if n_in:
                    sends.append((grads[b].contiguous(), b))
                if n_out:
                    got[b] = torch.empty((P.batch, n_out) + tail, dtype=torch.float32,
                                         device=kv4.device)
                    recvs.append((got[b], b))
        with comm.profile_range("sinkattn.cp.halo.exchange", P.profile):
            return comm.exchange(P.group, sends, recvs), got

    def forward(self, q, k, v, sinks):
        P = self.P
        kv = torch.stack((k, v), 1)
        kv4 = kv.view((P.batch, P.rows) + tuple(kv.shape[1:]))
        pend, got = self._exchange(P, kv4)
        acc_out, acc_lse = merge.empty(q.shape[0], P.hq, P.dim, q.device)
        with comm.profile_range("sinkattn.cp.halo.fwd", P.profile):
            local.forward(self.calls_local, q, k, v, P.scale, acc_out, acc_lse)
            pend.wait()
            pieces = [g for g in got if g is not None]
            self.halo = None
            if pieces:
                h = torch.cat(pieces, 1).reshape((P.batch * self.n_halo,) + tuple(kv.shape[1:]))
                self.halo = h
                local.forward(self.calls_halo, q, h[:, 0], h[:, 1], P.scale, acc_out, acc_lse)
        self.kv_shape = kv.shape
        out, lse = merge.add_sink(acc_out, acc_lse, sinks)
        return out.to(q.dtype), lse

    def backward(self, dout, q, k, v, out, lse):
        P = self.P
        f32 = dict(dtype=torch.float32, device=q.device)
        dq = torch.zeros(q.shape, **f32)
        dkv = torch.zeros(self.kv_shape, **f32)
        dkv4 = dkv.view((P.batch, P.rows) + tuple(dkv.shape[1:]))
        grads = [None] * P.world
        if self.halo is not None:
            gh = torch.zeros(self.halo.shape, **f32)
            local.backward(self.calls_halo, dout, q, self.halo[:, 0], self.halo[:, 1], out, lse,
                           P.scale, P.deterministic, dq, gh[:, 0], gh[:, 1])
            gh4 = gh.view((P.batch, self.n_halo) + tuple(gh.shape[1:]))
            off = 0
            for b, n in enumerate(self.recv_counts):
                if n:
                    grads[b] = gh4[:, off:off + n]
                    off += n
        pend, got = self._exchange(P, dkv4, grads)
        with comm.profile_range("sinkattn.cp.halo.bwd", P.profile):
            local.backward(self.calls_local, dout, q, k, v, out, lse, P.scale, P.deterministic,
                           dq, dkv[:, 0], dkv[:, 1])
        pend.wait()
        for b, g in enumerate(got):
            if g is not None:  # grads of my rows that rank b used as its halo
                dkv4.index_add_(1, self.send_rows[b].to(g.device), g)
        return dq.to(q.dtype), dkv[:, 0].to(k.dtype), dkv[:, 1].to(v.dtype)
