"""The context-parallel problem as every mode sees it (shapes, layout, mask, group), and the
segment descriptions of the rows each rank holds.

Local tensors are handled as packed rows: a fixed-length shard (B, S_local, H, D) is viewed as
(B * S_local, H, D), whose batch entry b is document b of its own stream; a varlen shard
(T_local, H, D) is one stream whose documents are delimited by the global cu_seqlens.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

from . import layout as L
from .layout import Seg

_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 64


@dataclass
class Problem:
    group: object  # torch.distributed process group (None = the default group)
    rank: int  # this rank in `group`
    world: int  # size of `group`
    mode: str  # 'allgather', 'ring', 'halo' or 'ulysses'
    layout: str  # 'contiguous' or 'zigzag'
    batch: int  # B of a fixed-length batch; 1 for varlen
    rows: int  # local rows per batch entry: S_local (fixed) or T_local (varlen)
    total: int  # global rows per batch entry: S = W * S_local, or cu_seqlens[-1]
    bounds: List[int]  # global document offsets of one stream: [0, S] (fixed) or cu_seqlens
    varlen: bool  # packed varlen shards (cu_seqlens given) rather than a fixed-length batch
    hq: int  # query heads
    hkv: int  # kv heads (GQA: hq % hkv == 0)
    dim: int  # head dim
    left: int  # mask: keys visible before the query's position (-1 = unbounded)
    right: int  # mask: keys visible after it (-1 = unbounded; 0 = causal)
    scale: float  # softmax scale on q.k
    deterministic: bool  # bit-identical gradients run to run (handed to the kernel backward)
    heads_k_stride: int  # kv heads per all-gather round (allgather mode)
    fused: bool  # allgather + zigzag forward: one fused kernel call per head group
    verify: bool  # recompute with another decomposition and raise on mismatch
    profile: bool  # NVTX / profiler ranges on communication and compute
    fused_bwd: bool = False  # the same for the backward (see allgather.py)
    _segs: dict = field(default_factory=dict, repr=False)  # segs() memo, per rank

    def key(self) -> tuple:
        """What the plans depend on: the same key gives the same plans (cache key)."""
        return (self.mode, self.layout, self.batch, self.rows, self.total, tuple(self.bounds),
                self.rank, self.world, self.left, self.right)

    def cached(self, what: str, build: Callable):
        """build(), remembered per (what, key): plans are host-side Python work (the halo exchange
        lists touch every global row), done once per shape instead of at every call."""
        k = (what,) + self.key()
        hit = _CACHE.get(k)
        if hit is None:
            hit = _CACHE[k] = build()
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(k)
        return hit

    @property
    def ndocs(self) -> int:
        return len(self.bounds) - 1

    @property
    def max_doc(self) -> int:
        return max((b - a for a, b in zip(self.bounds, self.bounds[1:])), default=0)

    @property
    def local_rows(self) -> int:
        return self.batch * self.rows

    def doc_start(self, doc: int) -> int:
        """Row of a document's first token in the global packed order (batch-major when fixed)."""
        b, d = divmod(doc, self.ndocs)
        return b * self.total + self.bounds[d]

    def segs(self, rank: int) -> List[Seg]:
        """Rank `rank`'s local rows (in its local order) as document segments."""
        if rank not in self._segs:
            cu = self.bounds if self.varlen else None
            ranges = L.local_ranges(self.layout, rank, self.world, self.total, cu)
            one = L.segments(ranges, self.bounds)
            self._segs[rank] = L.batch_segments(one, self.batch, self.rows, self.ndocs)
        return self._segs[rank]

    def doc_segs(self) -> List[Seg]:
        """Every document whole, rows in global packed order (a gathered, reordered key buffer)."""
        return [Seg(self.doc_start(d), n, d, 0) for b in range(self.batch)
                for d, n in ((b * self.ndocs + i, self.bounds[i + 1] - self.bounds[i])
                             for i in range(self.ndocs)) if n]

    def gathered_perm(self) -> Optional[torch.Tensor]:
        """perm (CPU LongTensor) with global_rows = gathered[perm] for the rank-major all-gather of
        every rank's local rows; None when that is already the global order."""
        if self.layout == "contiguous" and self.batch == 1:
            return None
        perm = torch.empty(self.world * self.local_rows, dtype=torch.long)
        for r in range(self.world):
            for s in self.segs(r):
                g = self.doc_start(s.doc) + s.pos
                src = r * self.local_rows + s.row
                perm[g:g + s.n] = torch.arange(src, src + s.n)
        return perm
