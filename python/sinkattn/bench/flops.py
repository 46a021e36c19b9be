"""Work counts: visible (unmasked) query-key pairs, FLOPs and the fewest bytes a call must move.

Only visible pairs count, so a causal or windowed kernel gets no credit for the masked half of the
score matrix. Forward: two matmuls of 2*D flops per pair and head (QK^T and PV) = 4*D. Backward:
five such products (QK^T recomputed, dV, dP, dQ, dK) = 2.5x the forward.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

BWD_FACTOR = 2.5


def window_bounds(causal: bool, window: Optional[int]) -> Tuple[int, int]:
    """(left, right) in key positions around the query's aligned position; -1 = unbounded.

    ``window`` is the Python API's int W: W keys including the query itself, so left = W - 1.
    """
    left = -1 if window is None else window - 1
    right = 0 if causal else -1
    return left, right


def visible_pairs_rows(seqlen_q: int, seqlen_k: int, left: int, right: int) -> int:
    """Visible pairs of one sequence: row i sits at key position i + Sk - Sq (bottom-right)."""
    total = 0
    offset = seqlen_k - seqlen_q
    for i in range(seqlen_q):
        pos = i + offset
        lo = 0 if left < 0 else max(0, pos - left)
        hi = seqlen_k - 1 if right < 0 else min(seqlen_k - 1, pos + right)
        if hi >= lo:
            total += hi - lo + 1
    return total


@functools.lru_cache(maxsize=256)  # tables ask per row; 64k-row workloads take a while
def visible_pairs(
    batch: int,
    seqlen_q: int,
    seqlen_k: int,
    causal: bool,
    window: Optional[int],
    lens_q: Optional[Sequence[int]] = None,
    lens_k: Optional[Sequence[int]] = None,
) -> int:
    """Visible pairs of a whole batch (per head). Varlen when ``lens_q``/``lens_k`` (tuples) are
    given."""
    left, right = window_bounds(causal, window)
    if lens_q is not None:
        assert lens_k is not None and len(lens_q) == len(lens_k)
        return sum(visible_pairs_rows(sq, sk, left, right) for sq, sk in zip(lens_q, lens_k))
    return batch * visible_pairs_rows(seqlen_q, seqlen_k, left, right)


def attention_flops(pairs: int, heads_q: int, head_dim: int, mode: str) -> float:
    """FLOPs of one call: mode 'fwd' or 'fwd+bwd' (the latter = 3.5x the forward)."""
    fwd = 4.0 * heads_q * pairs * head_dim
    return fwd if mode == "fwd" else fwd * (1.0 + BWD_FACTOR)


def fwd_min_bytes(rows_q: int, rows_k: int, heads_q: int, heads_kv: int, head_dim: int,
                  elem_bytes: int) -> int:
    """Fewest bytes a forward moves: q, k, v read once, out written once (GQA: K/V not copied)."""
    return elem_bytes * head_dim * (2 * rows_q * heads_q + 2 * rows_k * heads_kv)
