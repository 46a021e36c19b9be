"""Turn transformers' batch descriptions (padding masks, packed position_ids, cu_seq_lens kwargs)
into the packed varlen layout of `sinkattn.varlen_attention`, and back.

Every layer of a forward pass sees the same mask / position_ids tensor, so the plan (indices and
cu_seqlens, which needs one device->host sync for the max lengths) is computed once per tensor
and reused: a tiny identity cache keyed on the tensor object and its in-place version counter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VarlenPlan:
    """Where each packed row comes from, and the sequence boundaries for varlen_attention."""

    cu_seqlens_q: torch.Tensor  # (N + 1,) int32
    cu_seqlens_k: torch.Tensor  # (N + 1,) int32
    max_seqlen_q: int
    max_seqlen_k: int
    # Padding plans only (None for packed batches, whose rows are already contiguous):
    q_index: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch, row) of each real query
    k_index: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch, row) of each real key
    hole_row: int = -1  # a row with padding between real tokens (-1: none), see padding_plan


class _IdentityCache:
    """Remembers the last few (tensor, extra) -> plan results; a hit needs the very same tensor
    object, unmodified since (torch bumps `_version` on every in-place write)."""

    def __init__(self, size: int = 4):
        self._size = size
        self._entries: list[tuple[torch.Tensor, int, tuple, VarlenPlan | None]] = []

    def get(self, tensor: torch.Tensor, extra: tuple, build):
        for t, version, key, plan in self._entries:
            if t is tensor and version == tensor._version and key == extra:
                return plan
        plan = build()
        self._entries = [(tensor, tensor._version, extra, plan)] + self._entries[: self._size - 1]
        return plan


_padding_plans = _IdentityCache()
_packing_plans = _IdentityCache()


def _cu_seqlens(lengths: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))


def padding_plan(mask: torch.Tensor, q_len: int) -> VarlenPlan:
    """`mask` (B, Sk) with True for real tokens; the queries are its last `q_len` columns (with a
    KV cache the new tokens come last). Each row's real tokens are packed in order, so left and
    right padding both work; the kernel's bottom-right causal alignment then puts each row's last
    query on its last real key."""

    def build():
        k_valid = mask.bool()
        q_valid = k_valid[:, -q_len:]
        len_k = k_valid.sum(-1, dtype=torch.int32)
        len_q = q_valid.sum(-1, dtype=torch.int32)
        # Real tokens in more than one run (a hole): packing keeps the causal order, but a window
        # would count real tokens rather than positions (see the attention function).
        runs = (k_valid[:, 1:] & ~k_valid[:, :-1]).sum(-1) + k_valid[:, :1].sum(-1)
        holes = torch.where(runs > 1, torch.arange(len(runs), device=runs.device), -1).max()
        # one sync for the maxima and the last row with a hole
        longest_q, longest_k, hole_row = torch.stack([len_q.max(), len_k.max(), holes]).tolist()
        return VarlenPlan(
            cu_seqlens_q=_cu_seqlens(len_q),
            cu_seqlens_k=_cu_seqlens(len_k),
            max_seqlen_q=int(longest_q),
            max_seqlen_k=int(longest_k),
            q_index=q_valid.nonzero(as_tuple=True),
            k_index=k_valid.nonzero(as_tuple=True),
            hole_row=int(hole_row),
        )

    return _padding_plans.get(mask, (q_len,), build)


def packing_plan(position_ids: torch.Tensor) -> VarlenPlan | None:
    """Packed padding-free batch: one row (1, T) whose position_ids restart (any step other than
    +1 starts a new sequence). Returns None when the row holds a single sequence."""

    def build():
        pos = position_ids.reshape(-1)
        starts = torch.ones_like(pos, dtype=torch.bool)
        starts[1:] = pos[1:] != pos[:-1] + 1
        first = starts.nonzero().flatten().to(torch.int32)
        if first.numel() <= 1:
            return None
        cu = torch.cat([first, first.new_tensor([pos.numel()])])
        longest = int(cu.diff().max())
        return VarlenPlan(cu, cu, longest, longest)

    return _packing_plans.get(position_ids, (), build)


def explicit_plan(cu_q: torch.Tensor, cu_k: torch.Tensor, max_q, max_k) -> VarlenPlan:
    """cu_seq_lens_q/k handed in by the caller (e.g. DataCollatorWithFlattening)."""
    cu_q = cu_q.to(torch.int32)
    cu_k = cu_k.to(torch.int32)
    max_q = int(max_q) if max_q is not None else int(cu_q.diff().max())
    max_k = int(max_k) if max_k is not None else int(cu_k.diff().max())
    return VarlenPlan(cu_q, cu_k, max_q, max_k)
