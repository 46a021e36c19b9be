"""The verify switch: compare a result with its recomputation by another decomposition, on every
rank at once (the errors are all-reduced), and raise RuntimeError everywhere on a mismatch."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.distributed as dist


def tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 2e-2


def check_close(group, dtype: torch.dtype, device, what: str,
                pairs: Sequence[Tuple[str, torch.Tensor, torch.Tensor, bool]]) -> None:
    """pairs: (name, got, recomputed, relative). The error is max |got - recomputed|, divided by
    max(1, max |recomputed|) when relative; positions where both are the same infinity (lse of a
    row without keys) count as equal. Raises on every rank when any rank exceeds the tolerance."""
    errs = []
    for _, got, want, relative in pairs:
        got, want = got.detach().float(), want.detach().float()
        if got.numel() == 0:
            errs.append(torch.zeros((), device=device))
            continue
        same = got == want  # equal infinities give NaN below
        e = torch.where(same, 0.0, (got - want).abs()).nan_to_num(nan=torch.inf).max()
        if relative:
            e = e / want.abs().max().clamp_min(1.0)
        errs.append(e.to(device))
    err = torch.stack(errs)
    dist.all_reduce(err, op=dist.ReduceOp.MAX, group=group)
    tol = tolerance(dtype)
    if bool((err > tol).any()):
        detail = ", ".join(f"max {'relative ' if p[3] else ''}{p[0]} error {e:.3g}"
                           for p, e in zip(pairs, err.tolist()))
        raise RuntimeError(f"sinkattn.cp: verify: {what} disagree: {detail} (tolerance {tol})")
