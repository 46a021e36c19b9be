"""mode='halo' for sliding-window layers: each rank receives only the K/V rows its window reaches.

A query at position p sees keys [p - left, p + right] of its own document, so a rank needs, beyond
its own rows, only the `left` rows before and the `right` rows after each of its chunks (W - 1
and 0 for a causal window=W), within the same document. Which rank holds each of those rows follows
from the layout, so every rank computes the same exchange lists without communicating: rank a
receives from rank b exactly the rows of b it needs (contiguous layout: the tail of rank a - 1;
zigzag: the tails of the chunks before each of a's two chunks, one of which may be a's own).

Each rank's keys become one extended buffer (its rows and the halo pieces in document order), so
one kernel call per document stretch sees all of its rows' keys and applies the sinks itself: no
partial outputs to merge. The backward sends the halo rows' dK/dV (fp32) back to their owners.
The window must be bounded on both sides (that is what makes the halo small).
"""

from __future__ import annotations

from typing import List

import torch

from .. import ops
from . import comm, local, plan
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


def _moves(pos: torch.Tensor) -> List[tuple]:
    """pos[i] = where row i goes, as (from, to, length) runs of consecutive rows: the copies are
    then slices (a few per batch entry) rather than index kernels."""
    if pos.numel() == 0:
        return []
    cut = torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1
    edges = [0] + cut.tolist() + [pos.numel()]
    return [(a, int(pos[a]), b - a) for a, b in zip(edges, edges[1:])]


def _take(src: torch.Tensor, moves: List[tuple], rows: int) -> torch.Tensor:
    """out[i] = src[to] for the rows i the moves bring from `to`: a view for a single move."""
    if len(moves) == 1 and moves[0][0] == 0 and moves[0][2] == rows:
        return src[moves[0][1]:moves[0][1] + rows]
    out = src.new_empty((rows,) + tuple(src.shape[1:]))
    for i, j, n in moves:
        out[i:i + n] = src[j:j + n]
    return out


def _plans(P: Problem):
    """(rows received from each rank, my local rows each rank needs as (start, n) runs, halo
    rows, rows of the extended key buffer, the moves of my rows and of the halo rows into it,
    its calls)."""
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
    # The extended key buffer of one batch entry: my rows and the halo pieces in document order,
    # runs of consecutive positions merged, so that every query row meets ALL of its keys in one
    # segment (one call per document stretch, the sinks inside, nothing merged afterwards).
    # ext_from[i]: the row of cat(local keys, halo buffer) that ext row i copies.
    local_one = L.segments(L.local_ranges(P.layout, r, W, P.total, P.bounds if P.varlen else None),
                           P.bounds)
    pieces = sorted([(s.doc, s.pos, s.n, s.row) for s in local_one] +
                    [(s.doc, s.pos, s.n, P.rows + s.row) for s in one])
    ext_one: List[Seg] = []
    ext_from: List[int] = []
    for doc, pos, n, src in pieces:
        last = ext_one[-1] if ext_one else None
        if last is not None and last.doc == doc and last.pos + last.n == pos:
            ext_one[-1] = Seg(last.row, last.n + n, doc, last.pos)
        else:
            ext_one.append(Seg(len(ext_from), n, doc, pos))
        ext_from += range(src, src + n)
    n_ext = len(ext_from)
    ext_segs = [Seg(s.row + bb * n_ext, s.n, s.doc + bb * P.ndocs, s.pos)
                for bb in range(P.batch) for s in ext_one]
    per_entry = torch.tensor(ext_from, dtype=torch.long)
    # batch entry bb of cat(local (B * rows), halo (B * n_halo)) rows
    local_part = per_entry < P.rows
    index = torch.cat([per_entry.new_empty(0)] +  # an empty batch has no entry
                      [torch.where(local_part, per_entry + bb * P.rows,
                                   per_entry - P.rows + P.batch * P.rows + bb * n_halo)
                       for bb in range(P.batch)])
    # where my rows and the halo rows sit in the extended buffer (ext_index inverted)
    n_local = P.batch * P.rows
    pos = torch.empty(n_local + P.batch * n_halo, dtype=torch.long)
    pos[index] = torch.arange(index.numel())
    moves = (_moves(pos[:n_local]), _moves(pos[n_local:]))
    return (recv_counts, [_runs(rows) for rows in send_rows], n_halo, index.numel(), moves,
            plan.build(mine, ext_segs, P.left, P.right))


class Halo:
    def __init__(self, P: Problem):
        if P.left < 0 or P.right < 0:
            _fail("window", "mode='halo' needs a bounded window (window=W with causal=True, or "
                  f"bounded (left, right)); got left={P.left}, right={P.right} (-1 = unbounded); "
                  "use mode='ring' or 'allgather' for full attention")
        self.P = P
        (self.recv_counts, self.send_runs, self.n_halo, self.n_ext, (self.local_moves,
         self.halo_moves), self.calls) = P.cached("halo", lambda: _plans(P))

    def _exchange(self, sends_by_rank, recv_rows, tail, dtype, device):
        """Sends the (k part, v part) pair sends_by_rank[b] (nothing when None) to each rank b and
        receives such a pair, each (B, recv_rows[b]) + tail, from each rank that has rows for
        me. Returns (pending, received pairs by rank)."""
        P = self.P
        sends, recvs, got = [], [], [None] * P.world
        for b in range(P.world):
            if b == P.rank:
                continue
            for t in sends_by_rank[b] or ():
                sends.append((t.contiguous(), b))
            if recv_rows[b]:
                got[b] = [torch.empty((P.batch, recv_rows[b]) + tail, dtype=dtype, device=device)
                          for _ in range(2)]
                recvs += [(g, b) for g in got[b]]
        with comm.profile_range("sinkattn.cp.halo.exchange", P.profile):
            return comm.exchange(P.group, sends, recvs), got

    def _sent_rows(self, b: int) -> int:
        return sum(n for _, n in self.send_runs[b])

    def forward(self, q, k, v, sinks):
        P = self.P
        tail = tuple(k.shape[1:])
        k4, v4 = k.view((P.batch, P.rows) + tail), v.view((P.batch, P.rows) + tail)

        def rows(x, runs):  # x[:, runs] (a view for one run)
            parts = [x[:, a:a + n] for a, n in runs]
            return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        sends = [None] * P.world
        for b in range(P.world):
            if b != P.rank and self.send_runs[b]:
                sends[b] = (rows(k4, self.send_runs[b]), rows(v4, self.send_runs[b]))
        pend, got = self._exchange(sends, self.recv_counts, tail, k.dtype, k.device)
        # The extended key buffer: my rows copied in while the halo rows travel, then those.
        ext = k.new_empty((self.n_ext, 2) + tail)
        for i, j, n in self.local_moves:
            ext[j:j + n, 0] = k[i:i + n]
            ext[j:j + n, 1] = v[i:i + n]
        pend.wait()
        pieces = [g for g in got if g is not None]  # (B, n) each: the halo buffer is batch-major
        for x in range(2 if pieces else 0):
            halo = (pieces[0][x] if len(pieces) == 1 else
                    torch.cat([g[x] for g in pieces], 1)).reshape((-1,) + tail)
            for i, j, n in self.halo_moves:
                ext[j:j + n, x] = halo[i:i + n]
        self.ext = ext
        T, calls = q.shape[0], self.calls
        with comm.profile_range("sinkattn.cp.halo.fwd", P.profile):
            if len(calls) == 1 and plan.covers(calls[0], T):
                return local.run_one(calls[0], q, ext[:, 0], ext[:, 1], sinks, P.scale)
            out, lse = local.sink_only(q, P.hq, sinks)  # rows no call covers: the sink only
            local.forward_complete(calls, q, ext[:, 0], ext[:, 1], sinks, P.scale, out, lse)
        return out, lse

    def backward(self, dout, q, k, v, out, lse, sinks):
        """(dq, dk, dv, dsink): one call covering every row computes this rank's dsink partial
        in the kernel (the sinks go in); otherwise dsink is None (the caller computes it)."""
        P = self.P
        ext, T, calls, dsink = self.ext, q.shape[0], self.calls, None
        with comm.profile_range("sinkattn.cp.halo.bwd", P.profile):
            if len(calls) == 1 and plan.covers(calls[0], T) and calls[0].k0 == 0 \
                    and calls[0].k1 == self.n_ext:
                c = calls[0]
                dq, dk_e, dv_e, dsink = ops.bwd(
                    dout, q, ext[:, 0], ext[:, 1], out, lse, sinks,
                    deterministic=P.deterministic, **local._args(c, q.device, P.scale))
            else:
                f32 = dict(dtype=torch.float32, device=q.device)
                dq = torch.zeros(q.shape, **f32)
                dext = torch.zeros(ext.shape, **f32)
                local.backward(calls, dout, q, ext[:, 0], ext[:, 1], out, lse, P.scale,
                               P.deterministic, dq, dext[:, 0], dext[:, 1])
                dk_e, dv_e = dext[:, 0], dext[:, 1]
        # My rows' gradients stay (views where my rows are one stretch of the buffer); the halo
        # rows' go home in fp32 (ranks may differ in their path; the owner adds them with one
        # rounding).
        n_local, tail = P.batch * P.rows, tuple(k.shape[1:])
        dk, dv = (_take(g, self.local_moves, n_local) for g in (dk_e, dv_e))
        sends, off = [None] * P.world, 0
        if self.n_halo:
            gk, gv = (_take(g, self.halo_moves, P.batch * self.n_halo).float().view(
                (P.batch, self.n_halo) + tail) for g in (dk_e, dv_e))
            for b, n in enumerate(self.recv_counts):
                if n:
                    sends[b] = (gk[:, off:off + n], gv[:, off:off + n])
                    off += n
        rows = [self._sent_rows(b) for b in range(P.world)]
        pend, got = self._exchange(sends, rows, tail, torch.float32, q.device)
        pend.wait()
        dk4, dv4 = dk.view((P.batch, P.rows) + tail), dv.view((P.batch, P.rows) + tail)
        for b, g in enumerate(got):
            if g is None:
                continue
            o = 0  # grads of my rows that rank b used as its halo, in send order
            for a, n in self.send_runs[b]:
                for t, gx in ((dk4, g[0]), (dv4, g[1])):
                    t[:, a:a + n] = (t[:, a:a + n].float() + gx[:, o:o + n]).to(t.dtype)
                o += n
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dsink
