"""Merging attention partials, the sink as one more partial, and the sink gradient.

A partial is (out, lse) of attention over a subset of the keys, computed WITHOUT the sink. Two
partials merge as lse = logaddexp(lse1, lse2), out = out1 e^(lse1 - lse) + out2 e^(lse2 - lse).
The sink is the partial (out = 0, lse = s_h): it is merged exactly once, after every key partial,
so it is counted once per query row however many blocks the row was split into. Empty partials
(lse = -inf) merge to out 0, lse -inf: never NaN.

Shapes: out (T, H, D) fp32 accumulators, lse (H, T) fp32 (the varlen lse layout).
"""

from __future__ import annotations

from typing import Optional

import torch


def empty(rows: int, heads: int, dim: int, device) -> tuple:
    """The neutral partial: out 0, lse -inf (fp32)."""
    return (torch.zeros(rows, heads, dim, dtype=torch.float32, device=device),
            torch.full((heads, rows), -torch.inf, dtype=torch.float32, device=device))


def merge_into(acc_out: torch.Tensor, acc_lse: torch.Tensor, out: torch.Tensor,
               lse: torch.Tensor) -> None:
    """acc <- merge(acc, (out, lse)) in place; acc_out (T, H, D) fp32, acc_lse (H, T) fp32, out in
    any float dtype. Views (row slices) of larger accumulators are fine."""
    m = torch.maximum(acc_lse, lse)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # both -inf: weights 0, not NaN
    w_acc = torch.exp(acc_lse - m)
    w_new = torch.exp(lse - m)
    total = w_acc + w_new
    new_lse = m + torch.log(total)  # log 0 = -inf for two empty partials
    inv = torch.where(total > 0, 1.0 / total, torch.zeros_like(total))
    a = (w_acc * inv).t().unsqueeze(-1)  # (T, H, 1)
    b = (w_new * inv).t().unsqueeze(-1)
    acc_out.mul_(a).add_(out.float() * b)
    acc_lse.copy_(new_lse)


def add_sink(out: torch.Tensor, lse: torch.Tensor, sinks: Optional[torch.Tensor]) -> tuple:
    """Merges the sink partial (out 0, lse s_h) once; returns (out, lse), new tensors."""
    if sinks is None:
        return out, lse
    s = sinks.detach().float().unsqueeze(1).expand_as(lse)
    new_lse = torch.logaddexp(lse, s)  # finite: s is finite
    scale = torch.exp(lse - new_lse).t().unsqueeze(-1)
    return out * scale, new_lse


def dsink_partial(dout: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                  sinks: torch.Tensor) -> torch.Tensor:
    """This rank's share of dL/dsink: -sum_i exp(s_h - lse_i) delta_i over the local query rows
    (delta_i = dout_i . out_i with the final out and lse). fp32 (H,). The full gradient is the SUM
    of these shares over the context-parallel group."""
    delta = (dout.float() * out.float()).sum(-1)  # (T, H)
    p_sink = torch.exp(sinks.detach().float().unsqueeze(1) - lse)  # (H, T); lse finite with sinks
    return -(p_sink * delta.t()).sum(1)
