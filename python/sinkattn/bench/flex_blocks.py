"""FlexAttention block masks from the mask's geometry, without evaluating the mask per element.

torch's create_block_mask evaluates mask_mod on every (query, key) pair: at 64k tokens that is
4·10⁹ pairs, so it must be compiled (seconds to a minute per shape, on the run's time budget) or
it materialises gigabytes. Our masks are documents x (causal, window) bands, so whether a
(query block, key block) tile is empty, partial or full follows from interval arithmetic on the
block and document ends: O(blocks² x documents) work and no compilation. mask_mod is still what
the kernel applies inside partial tiles; a CPU test checks this against create_block_mask.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch

# (q_start, q_end, k_start, k_end): one document's rows in the packed q and k (ends exclusive).
Doc = Tuple[int, int, int, int]


def _cut(n: int, block: int, starts: torch.Tensor, ends: torch.Tensor):
    """Per (block, doc): first and last row of the block inside the doc, whether there is any,
    and whether the doc holds the whole block (a padded last block never counts as whole)."""
    b0 = torch.arange(0, n, block, device=starts.device).unsqueeze(1)   # (blocks, 1)
    b1 = torch.clamp(b0 + block, max=n)                                  # exclusive, real rows
    lo = torch.maximum(b0, starts.unsqueeze(0))
    hi = torch.minimum(b1, ends.unsqueeze(0)) - 1
    whole = (lo == b0) & (hi == b0 + block - 1)
    return lo, hi, lo <= hi, whole


def dense_blocks(docs: Sequence[Doc], n_q: int, n_k: int, left: int, right: int, block: int,
                 device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(partial, full): bool (q blocks, k blocks). Key j is visible from row r of a document iff
    both are in it and pos - left <= j <= pos + right, pos = r + (k_end - q_end) (bottom-right
    aligned); left/right -1 = unbounded. Rows of one block form a contiguous range of positions,
    so a tile has a visible pair iff the key range meets [first pos - left, last pos + right],
    and is full iff every key lies in [last pos - left, first pos + right]."""
    d = torch.tensor(docs, dtype=torch.int64, device=device).reshape(-1, 4)
    qlo, qhi, qany, qwhole = _cut(n_q, block, d[:, 0], d[:, 1])
    klo, khi, kany, kwhole = _cut(n_k, block, d[:, 2], d[:, 3])
    shift = (d[:, 3] - d[:, 1]).unsqueeze(0)
    first, last = (qlo + shift).unsqueeze(1), (qhi + shift).unsqueeze(1)  # (qb, 1, docs)
    klo, khi = klo.unsqueeze(0), khi.unsqueeze(0)                          # (1, kb, docs)
    some = qany.unsqueeze(1) & kany.unsqueeze(0)
    every = qwhole.unsqueeze(1) & kwhole.unsqueeze(0)
    if right >= 0:
        some = some & (klo <= last + right)
        every = every & (khi <= first + right)
    if left >= 0:
        some = some & (khi >= first - left)
        every = every & (klo >= last - left)
    full = every.any(-1)
    return some.any(-1) & ~full, full


def _ordered(dense: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """BlockMask's layout: per q block the count, then the key-block indices with the marked ones
    first (ascending) — a stable sort of the 0/1 row."""
    as_int = dense.to(torch.int32)
    idx = torch.argsort(as_int, dim=-1, descending=True, stable=True).to(torch.int32)
    return as_int.sum(-1).to(torch.int32)[None, None], idx[None, None].contiguous()


def block_mask(docs: Sequence[Doc], n_q: int, n_k: int, left: int, right: int,
               mask_mod: Callable, device, block: int = 128):
    """The FlexAttention BlockMask (batch and heads broadcast) of ``dense_blocks``."""
    from torch.nn.attention.flex_attention import BlockMask

    partial, full = dense_blocks(docs, n_q, n_k, left, right, block, device)
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(block, block),
                                    mask_mod=mask_mod, seq_lengths=(n_q, n_k))
