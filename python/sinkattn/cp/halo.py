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


def _plans(P: Problem):
    """(rows received from each rank, my local rows each rank needs, halo rows, the rows of
    cat(local keys, halo buffer) that make up the extended key buffer, its calls)."""
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
    index = torch.cat([torch.where(local_part, per_entry + bb * P.rows,
                                   per_entry - P.rows + P.batch * P.rows + bb * n_halo)
                       for bb in range(P.batch)])
    return recv_counts, send_rows, n_halo, index, plan.build(mine, ext_segs, P.left, P.right)


class Halo:
    def __init__(self, P: Problem):
        if P.left < 0 or P.right < 0:
            _fail("window", "mode='halo' needs a bounded window (window=W with causal=True, or "
                  f"bounded (left, right)); got left={P.left}, right={P.right} (-1 = unbounded); "
                  "use mode='ring' or 'allgather' for full attention")
        self.P = P
        (self.recv_counts, self.send_rows, self.n_halo, self.ext_index,
         self.calls) = P.cached("halo", lambda: _plans(P))

    def _on(self, device, which: str, b: int = 0) -> torch.Tensor:
        """An index tensor of the plan on `device`, copied there once (a copy from host memory per
        call would synchronise the stream)."""
        src = self.ext_index if which == "ext" else self.send_rows[b]
        return self.P.cached(f"halo-{which}-{b}-{device}", lambda: src.to(device))

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
                    idx = self._on(kv4.device, "send", b)
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
        pend.wait()
        pieces = [g for g in got if g is not None]  # (B, n) each: the halo buffer is batch-major
        halo = torch.cat(pieces, 1).reshape((-1,) + tuple(kv.shape[1:])) if pieces else kv[:0]
        ext = torch.cat((kv, halo)).index_select(0, self._on(q.device, "ext"))
        self.ext = ext
        T, calls = q.shape[0], self.calls
        with comm.profile_range("sinkattn.cp.halo.fwd", P.profile):
            if len(calls) == 1 and plan.covers(calls[0], T):
                return local.run_one(calls[0], q, ext[:, 0], ext[:, 1], sinks, P.scale)
            out, lse = local.sink_only(q, P.hq, sinks)  # rows no call covers: the sink only
            local.forward_complete(calls, q, ext[:, 0], ext[:, 1], sinks, P.scale, out, lse)
        return out, lse

    def backward(self, dout, q, k, v, out, lse):
        P = self.P
        f32 = dict(dtype=torch.float32, device=q.device)
        ext, T, calls = self.ext, q.shape[0], self.calls
        ext_index = self._on(q.device, "ext")
        with comm.profile_range("sinkattn.cp.halo.bwd", P.profile):
            if len(calls) == 1 and plan.covers(calls[0], T):
                c = calls[0]
                dq, dk_e, dv_e, _ = ops.bwd(
                    dout, q, ext[c.k0:c.k1, 0], ext[c.k0:c.k1, 1], out, lse, None,
                    deterministic=P.deterministic, **local._args(c, q.device, P.scale))
                dext, ext_index = torch.stack((dk_e, dv_e), 1).float(), ext_index[c.k0:c.k1]
            else:
                dq = torch.zeros(q.shape, **f32)
                dext = torch.zeros(ext.shape, **f32)
                local.backward(calls, dout, q, ext[:, 0], ext[:, 1], out, lse, P.scale,
                               P.deterministic, dq, dext[:, 0], dext[:, 1])
        # Back to cat(local keys, halo buffer) rows; the halo rows' grads go home.
        n_local = P.batch * P.rows
        dcat = torch.zeros((n_local + P.batch * self.n_halo,) + tuple(ext.shape[1:]), **f32)
        dcat.index_add_(0, ext_index, dext)
        dkv = dcat[:n_local]
        dkv4 = dkv.view((P.batch, P.rows) + tuple(dkv.shape[1:]))
        gh4 = dcat[n_local:].view((P.batch, self.n_halo) + tuple(dkv.shape[1:]))
        grads, off = [None] * P.world, 0
        for b, n in enumerate(self.recv_counts):
            if n:
                grads[b] = gh4[:, off:off + n]
                off += n
        pend, got = self._exchange(P, dkv4, grads)
        pend.wait()
        for b, g in enumerate(got):
            if g is not None:  # grads of my rows that rank b used as its halo
                dkv4.index_add_(1, self._on(g.device, "send", b), g)
        return dq.to(q.dtype), dkv[:, 0].to(k.dtype), dkv[:, 1].to(v.dtype)
