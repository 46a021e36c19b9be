"""Turns "these local query rows against these key rows" into a few varlen kernel calls.

Context parallelism hands a rank query rows and key rows that are pieces of documents: positions
[qa, qb) and [ka, kb) of the same document. The kernel aligns a sequence's queries bottom-right
(query i sits at key position i + Sk - Sq), which is the true alignment only when the key piece
ends where the query piece ends. Otherwise the true position is the kernel's plus s = qb - kb, and
the mask `pos - L <= j <= pos + R` becomes the kernel window (L - s, R + s). The kernel needs both
bounds >= 0 (or unbounded), so we first trim the pieces to what the mask can reach:

  keys:    ka >= qa - L        kb <= qb + R        (keys no query sees)
  queries: qb <= kb + L        qa >= ka - R        (queries that see none of these keys)

after which -R <= s <= L. A pair trimmed to nothing is a block no query can see: it is skipped.

Pairs with the same kernel window, whose query rows and key rows both increase, share one varlen
call; the rows in between become dummy sequences (queries without keys: out 0, lse -inf, merged as
empty partials; keys without queries: unread). Plans are plain Python: built once per layout and
reused by forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .layout import Seg


@dataclass
class Call:
    """One kernel call: q rows [q0, q1) of the local q tensor against rows [k0, k1) of a key
    buffer, as a varlen problem. cu_q / cu_k are relative to q0 / k0 (host ints)."""

    q0: int
    q1: int
    k0: int
    k1: int
    left: int  # kernel window bounds: keys before / after the aligned position, -1 = unbounded
    right: int
    cu_q: List[int] = field(default_factory=lambda: [0])
    cu_k: List[int] = field(default_factory=lambda: [0])
    pieces: List[Tuple[int, int]] = field(default_factory=list)  # q rows of real pairs (no gaps)
    # (rank, world): a fused zigzag call (problem.zigzag_rank / zigzag_world of the C ABI): every
    # sequence's query rows are its chunks r and 2W-1-r, its keys the whole gathered document,
    # and left/right apply at those global positions. None: the usual bottom-right alignment.
    zigzag: Optional[Tuple[int, int]] = None

    @property
    def max_q(self) -> int:
        return max((b - a for a, b in zip(self.cu_q, self.cu_q[1:])), default=0)

    @property
    def max_k(self) -> int:
        return max((b - a for a, b in zip(self.cu_k, self.cu_k[1:])), default=0)

    def window(self):
        """(causal, window) arguments for sinkattn.ops.fwd/bwd."""
        if self.right == 0:
            return True, (None if self.left < 0 else self.left, 0)
        return False, (None if self.left < 0 else self.left, None if self.right < 0 else self.right)


Pair = Tuple[int, int, int, int, int, int]  # q row0, q row1, k row0, k row1, left, right


def visible_pair(q: Seg, k: Seg, left: int, right: int):
    """The trimmed pair of two same-document segments as local rows and kernel window, or None
    when no query of q sees a key of k. left/right: the mask's bounds (-1 = unbounded)."""
    if q.doc != k.doc:
        return None
    qa, qb, ka, kb = q.pos, q.pos + q.n, k.pos, k.pos + k.n
    if left >= 0:
        ka = max(ka, qa - left)
    if right >= 0:
        kb = min(kb, qb + right)
    if left >= 0:
        qb = min(qb, kb + left)
    if right >= 0:
        qa = max(qa, ka - right)
    if ka >= kb or qa >= qb:
        return None
    s = qb - kb
    kl = left - s if left >= 0 else -1
    kr = right + s if right >= 0 else -1
    return (q.row + qa - q.pos, q.row + qb - q.pos, k.row + ka - k.pos, k.row + kb - k.pos, kl, kr)


def build(q_segs: Sequence[Seg], k_segs: Sequence[Seg], left: int, right: int) -> List[Call]:
    """Kernel calls covering every visible (query, key) pair of the segments exactly once."""
    by_doc = {}
    for k in k_segs:
        by_doc.setdefault(k.doc, []).append(k)
    pairs: List[Pair] = []
    for q in q_segs:
        for k in by_doc.get(q.doc, ()):
            p = visible_pair(q, k, left, right)
            if p is not None:
                pairs.append(p)
    pairs.sort()
    calls: List[Call] = []
    for p in pairs:
        for c in calls:
            if (c.left, c.right) == p[4:] and c.q1 <= p[0] and c.k1 <= p[2]:
                _append(c, p)
                break
        else:
            c = Call(p[0], p[0], p[2], p[2], p[4], p[5])
            _append(c, p)
            calls.append(c)
    return calls


def _append(c: Call, p: Pair) -> None:
    q0, q1, k0, k1 = p[:4]
    if q0 > c.q1:  # queries in between: a sequence without keys
        c.cu_q.append(c.cu_q[-1] + q0 - c.q1)
        c.cu_k.append(c.cu_k[-1])
    if k0 > c.k1:  # keys in between: a sequence without queries
        c.cu_q.append(c.cu_q[-1])
        c.cu_k.append(c.cu_k[-1] + k0 - c.k1)
    c.cu_q.append(c.cu_q[-1] + q1 - q0)
    c.cu_k.append(c.cu_k[-1] + k1 - k0)
    c.pieces.append((q0, q1))
    c.q1, c.k1 = q1, k1


def covers(c: Call, rows: int) -> bool:
    """Whether the call's real pairs cover rows [0, rows) (so its output needs no copy)."""
    return c.q0 == 0 and c.q1 == rows and sum(b - a for a, b in c.pieces) == rows


def visible_pairs(calls: Sequence[Call]) -> int:
    """Number of (query, key) pairs the calls' kernels look at (for tests and FLOP counts)."""
    n = 0
    for c in calls:
        for (qa, qb), (ka, kb) in zip(zip(c.cu_q, c.cu_q[1:]), zip(c.cu_k, c.cu_k[1:])):
            sq, sk = qb - qa, kb - ka
            for i in range(sq):
                p = i + sk - sq
                lo = 0 if c.left < 0 else max(0, p - c.left)
                hi = sk - 1 if c.right < 0 else min(sk - 1, p + c.right)
                n += max(0, hi - lo + 1)
    return n
