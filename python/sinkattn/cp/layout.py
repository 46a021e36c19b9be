"""Which tokens of the full sequence each rank holds: the contiguous and zigzag layouts.

Tokens are numbered by their row in the *global stream*: the sequence dimension of a fixed-length
batch (every batch entry is laid out the same way), or the rows of a packed varlen batch whose
documents are delimited by the global ``cu_seqlens``.

- ``contiguous``: the stream is cut into W equal chunks; rank r holds chunk r. Packed documents may
  cross chunk boundaries (the llama3 / all-gather setting).
- ``zigzag``: the stream is cut into 2W equal chunks; rank r holds chunks r and 2W-1-r, which
  balances causal work. For packed varlen batches every document is zigzagged on its own (each
  document's length must be divisible by 2W), as ring-flash-attention's zigzag varlen functions do;
  the local rows are then [doc0 chunk r, doc0 chunk 2W-1-r, doc1 chunk r, ...] and the local
  cu_seqlens are the global ones divided by W.

Everything here is host-side index arithmetic on Python ints (no communication).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

LAYOUTS = ("contiguous", "zigzag")

Ranges = List[Tuple[int, int]]  # (global start row, length) in local order


def _fail(arg: str, why: str, exc=ValueError):
    raise exc(f"sinkattn.cp: {arg}: {why}")


def check_layout(layout) -> str:
    if layout not in LAYOUTS:
        _fail("layout", f"got {layout!r}, expected 'contiguous' or 'zigzag'")
    return layout


def local_ranges(layout: str, rank: int, world: int, total: int,
                 cu_seqlens: Optional[Sequence[int]] = None, arg: str = "q") -> Ranges:
    """The global rows rank `rank` holds, as (start, length) ranges in local order.

    total: rows of the global stream (sequence length, or cu_seqlens[-1] for varlen).
    cu_seqlens: the global document offsets for zigzag varlen (per-document zigzag), else None.
    `arg` names the argument blamed when the stream cannot be split as the layout needs."""
    check_layout(layout)
    if layout == "contiguous":
        if total % world:
            _fail(arg, f"global length {total} is not divisible by the group size {world} "
                  "(the contiguous layout gives every rank the same number of tokens)")
        n = total // world
        return [(rank * n, n)]
    if cu_seqlens is None:
        docs = [(0, total)]
    else:
        docs = [(a, b - a) for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:])]
    out: Ranges = []
    for start, length in docs:
        if length % (2 * world):
            what = "global length" if cu_seqlens is None else f"document at row {start} of length"
            _fail(arg, f"{what} {length} is not divisible by 2 * group size = {2 * world} "
                  "(the zigzag layout cuts every sequence into 2W equal chunks)")
        c = length // (2 * world)
        if c:
            out += [(start + rank * c, c), (start + (2 * world - 1 - rank) * c, c)]
    return out


def local_index(layout: str, rank: int, world: int, total: int,
                cu_seqlens: Optional[Sequence[int]] = None) -> torch.Tensor:
    """local_ranges as a LongTensor of global rows (CPU)."""
    ranges = local_ranges(layout, rank, world, total, cu_seqlens)
    parts = [torch.arange(s, s + n) for s, n in ranges]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def gathered_to_global(layout: str, world: int, total: int,
                       cu_seqlens: Optional[Sequence[int]] = None) -> Optional[torch.Tensor]:
    """perm with global_stream = gathered[perm], where `gathered` concatenates every rank's local
    rows in rank order (what all_gather_into_tensor produces); None when that is the identity."""
    if layout == "contiguous":
        return None
    src = torch.cat([local_index(layout, r, world, total, cu_seqlens) for r in range(world)])
    perm = torch.empty_like(src)
    perm[src] = torch.arange(src.numel())
    return perm


# ---- segments: local rows tagged with their document and position --------------------------------


@dataclass(frozen=True)
class Seg:
    """`n` consecutive rows of a local tensor: rows [row, row + n) hold positions [pos, pos + n)
    of document `doc` (a batch entry of a fixed-length batch, or a packed document)."""

    row: int
    n: int
    doc: int
    pos: int


def segments(ranges: Ranges, doc_bounds: Sequence[int], row0: int = 0) -> List[Seg]:
    """Cuts global-row ranges at document boundaries. `doc_bounds` is the global cu_seqlens
    ([0, S] for one fixed-length sequence); local rows start at row0 and follow `ranges`."""
    out: List[Seg] = []
    row = row0
    for start, n in ranges:
        end = start + n
        d = _doc_of(doc_bounds, start) if n else 0
        while start < end:
            while doc_bounds[d + 1] <= start:
                d += 1
            stop = min(end, doc_bounds[d + 1])
            out.append(Seg(row, stop - start, d, start - doc_bounds[d]))
            row += stop - start
            start = stop
    return out


def _doc_of(bounds: Sequence[int], row: int) -> int:
    lo, hi = 0, len(bounds) - 2
    while lo < hi:  # last d with bounds[d] <= row
        mid = (lo + hi + 1) // 2
        if bounds[mid] <= row:
            lo = mid
        else:
            hi = mid - 1
    return lo


def batch_segments(segs: List[Seg], batch: int, rows_per_batch: int, ndocs: int) -> List[Seg]:
    """Repeats one batch entry's segments for every entry of a flattened fixed-length batch: entry
    b's rows are offset by b * rows_per_batch and its documents are numbered b * ndocs + d."""
    return [Seg(s.row + b * rows_per_batch, s.n, s.doc + b * ndocs, s.pos)
            for b in range(batch) for s in segs]


# ---- shard / unshard -----------------------------------------------------------------------------


def _rank_world(group, rank, world):
    if rank is None and world is None:
        import torch.distributed as dist
        return dist.get_rank(group), dist.get_world_size(group)
    for name, n in (("rank", rank), ("world_size", world)):
        if isinstance(n, bool) or not isinstance(n, int):
            _fail(name, f"got {n!r}, expected an int (rank and world_size go together, or "
                  "neither: then the group's)", TypeError)
    if not 0 <= rank < world:
        _fail("rank", f"got {rank} with world_size {world}, expected 0 <= rank < world_size")
    return rank, world


def _check_dim(x, dim: int) -> int:
    """dim as an index of x's dimensions (negative ones counted from the end)."""
    if not isinstance(x, torch.Tensor):
        _fail("x", f"got {type(x).__name__}, expected a torch.Tensor", TypeError)
    if isinstance(dim, bool) or not isinstance(dim, int):
        _fail("dim", f"got {dim!r}, expected an int", TypeError)
    if not -x.dim() <= dim < x.dim():
        _fail("dim", f"got {dim}, expected a dimension of the {x.dim()}-d tensor")
    return dim % x.dim()


def _cu_list(cu_seqlens) -> Optional[List[int]]:
    if cu_seqlens is None:
        return None
    if not isinstance(cu_seqlens, (str, bytes)):  # iterable, but of characters
        try:
            values = (cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor)
                      else list(cu_seqlens))
            return [operator.index(x) for x in values]  # ints only: no floats, strings or lists
        except TypeError:
            pass
    _fail("cu_seqlens", f"got {_short(cu_seqlens)}, expected a list or 1-D integer tensor of "
          "document offsets", TypeError)


def _short(x) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def shard(x: torch.Tensor, layout: str = "contiguous", *, dim: int = 1, cu_seqlens=None,
          group=None, rank: Optional[int] = None, world_size: Optional[int] = None) -> torch.Tensor:
    """This rank's part of a full tensor along `dim` (1 for (B, S, H, D); use dim=0 with the global
    cu_seqlens for packed (T, H, D) tensors). rank/world_size default to those of `group`."""
    dim = _check_dim(x, dim)
    rank, world = _rank_world(group, rank, world_size)
    cu = _cu_list(cu_seqlens)
    total = x.shape[dim]
    if cu is not None and cu[-1] != total:
        _fail("cu_seqlens", f"ends at {cu[-1]}, expected {total} (the length of x along dim {dim})")
    idx = local_index(layout, rank, world, total, cu).to(x.device)
    if layout == "contiguous":
        n = total // world
        return x.narrow(dim, rank * n, n)
    return x.index_select(dim, idx)


def unshard(local: torch.Tensor, layout: str = "contiguous", *, dim: int = 1, cu_seqlens=None,
            group=None) -> torch.Tensor:
    """The full tensor from every rank's part (an all-gather over `group`; not differentiable)."""
    import torch.distributed as dist
    dim = _check_dim(local, dim)
    check_layout(layout)
    cu = _cu_list(cu_seqlens)
    world = dist.get_world_size(group)
    total = world * local.shape[dim]
    if cu is not None and cu[-1] != total:
        _fail("cu_seqlens", f"ends at {cu[-1]}, expected {total} (the group's {world} parts of "
              f"{local.shape[dim]} rows along dim {dim})")
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.contiguous(), group=group)
    full = torch.cat(parts, dim)
    perm = gathered_to_global(layout, world, full.shape[dim], cu)
    return full if perm is None else full.index_select(dim, perm.to(full.device))


def local_cu_seqlens(cu_seqlens, layout: str, rank: int, world: int) -> torch.Tensor:
    """The cu_seqlens of this rank's local rows, cut at document boundaries (int32, on the device of
    cu_seqlens when it is a tensor). Zigzag: the global ones divided by W."""
    cu = _cu_list(cu_seqlens)
    ranges = local_ranges(layout, rank, world, cu[-1], cu, "cu_seqlens")  # validates
    if layout == "zigzag":
        offs = [x // world for x in cu]
    else:
        offs = [0]
        for s in segments(ranges, cu):
            offs.append(offs[-1] + s.n)
    device = cu_seqlens.device if isinstance(cu_seqlens, torch.Tensor) else "cpu"
    return torch.tensor(offs, dtype=torch.int32, device=device)
