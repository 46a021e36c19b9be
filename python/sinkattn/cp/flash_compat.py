"""Drop-in names for ring-flash-attention users: same arguments and meaning as upstream, plus
`sinks=` ((Hq,) learned sink logits; their gradient is this rank's partial, see api.attention).

    ring_flash_attn_func, zigzag_ring_flash_attn_func         (B, S_local, H, D) shards
    llama3_flash_attn_prepare_cu_seqlens, llama3_flash_attn_varlen_func (+ _kvpacked / _qkvpacked)
    zigzag_llama3_flash_attn_varlen_func (+ _kvpacked / _qkvpacked)

Differences, all refused loudly rather than ignored: dropout_p must be 0 and alibi_slopes None
(exact attention only). window_size follows flash-attn ((left, right), -1 = unbounded) but is
applied to GLOBAL positions on every path (upstream's llama3 path aligns a non-causal window to
the end of the gathered keys). return_attn_probs returns (out, lse, None) like upstream, lse
fp32 (B, H, S_local) or (H, T_local), sink included. The zigzag llama3 fused-kernel switches
(use_fused_kernel_forward/backward) pick the fused one-launch path per direction; left at None
they follow sinkattn.cp.attention's default (fused, unless SINKATTN_CP_FUSED=0).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import api
from .layout import _fail


def _common(dropout_p, alibi_slopes, causal, window_size):
    if dropout_p:
        _fail("dropout_p", f"got {dropout_p}, expected 0.0 (sinkattn computes exact attention)")
    if alibi_slopes is not None:
        _fail("alibi_slopes", "got a tensor, expected None (ALiBi is not supported)")
    left, right = (int(x) for x in window_size)
    if causal:
        right = -1  # flash-attn ignores the right bound when causal
    if left < 0 and right < 0:
        return None
    return (None if left < 0 else left, None if right < 0 else right)


def _result(out, return_attn_probs):
    return (out[0], out[1], None) if return_attn_probs else out


def _fixed(q, k, v, layout, dropout_p, softmax_scale, causal, window_size, alibi_slopes,
           deterministic, return_attn_probs, group, sinks):
    window = _common(dropout_p, alibi_slopes, causal, window_size)
    out = api.attention(q, k, v, sinks, group=group, mode="ring", layout=layout, causal=causal,
                        window=window, scale=softmax_scale, deterministic=deterministic,
                        return_lse=return_attn_probs)
    return _result(out, return_attn_probs)


def ring_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                         window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                         return_attn_probs=False, group=None, sinks=None):
    """Ring attention over (B, S_local, H, D) shards in the contiguous layout."""
    return _fixed(q, k, v, "contiguous", dropout_p, softmax_scale, causal, window_size,
                  alibi_slopes, deterministic, return_attn_probs, group, sinks)


def zigzag_ring_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                return_attn_probs=False, group=None, sinks=None):
    """Ring attention over (B, S_local, H, D) shards in the zigzag layout (chunks r, 2W-1-r)."""
    return _fixed(q, k, v, "zigzag", dropout_p, softmax_scale, causal, window_size, alibi_slopes,
                  deterministic, return_attn_probs, group, sinks)


# ---- llama3 (all-gather) varlen ------------------------------------------------------------


def llama3_flash_attn_prepare_cu_seqlens(cu_seqlens, causal, rank, world_size):
    """Upstream's helper: from the GLOBAL cu_seqlens, this rank's (cu_seqlens_q, cu_seqlens_k,
    max_seqlen_q, max_seqlen_k, local_k_slice) for the contiguous layout (rank r holds rows
    [r T, (r+1) T), T = total / world_size)."""
    total = int(cu_seqlens[-1])
    if total % world_size:
        _fail("cu_seqlens", f"total length {total} is not divisible by world_size {world_size}")
    n = total // world_size
    lo, hi = rank * n, (rank + 1) * n
    cu = [int(x) for x in cu_seqlens.tolist()]
    left = max(i for i, x in enumerate(cu) if x <= lo)
    right = min((i for i, x in enumerate(cu) if x >= hi), default=len(cu) - 1)
    cu_q = [min(max(x - lo, 0), n) for x in cu[left:right + 1]]
    slice_left = cu[left]
    slice_right = hi if causal else cu[right]
    cu_k = [x - slice_left for x in cu[left:right + 1]]
    cu_k[-1] = slice_right - slice_left
    dev = cu_seqlens.device
    as_t = lambda xs: torch.tensor(xs, dtype=cu_seqlens.dtype, device=dev)  # noqa: E731
    max_q = max((b - a for a, b in zip(cu_q, cu_q[1:])), default=0)
    max_k = max((b - a for a, b in zip(cu_k, cu_k[1:])), default=0)
    return as_t(cu_q), as_t(cu_k), max_q, max_k, slice(slice_left, slice_right)


def _global_cu_from_llama3(cu_seqlens_q, cu_seqlens_k, local_k_slice, rows, group):
    """The global document offsets, rebuilt from every rank's prepare_cu_seqlens output (one
    all_gather_object): each rank knows the document starts at local_k_slice.start + cu_k[i]."""
    cu_k = [int(x) for x in cu_seqlens_k.tolist()]
    starts = [local_k_slice.start + x for x in cu_k[:-1]]
    world = dist.get_world_size(group)
    everyone = [None] * world
    dist.all_gather_object(everyone, starts, group=group)
    total = rows * world
    bounds = sorted({0, total} | {s for st in everyone for s in st if 0 <= s <= total})
    if int(cu_seqlens_q[-1]) != rows:
        _fail("cu_seqlens_q", f"ends at {int(cu_seqlens_q[-1])}, expected the {rows} local rows")
    return bounds


def llama3_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  heads_k_stride, local_k_slice, dropout_p=0.0, softmax_scale=None,
                                  causal=False, window_size=(-1, -1), alibi_slopes=None,
                                  deterministic=False, return_attn_probs=False, group=None,
                                  sinks=None):
    """llama3 all-gather CP over packed (T_local, H, D) shards (contiguous layout), with the
    local cu_seqlens / local_k_slice of llama3_flash_attn_prepare_cu_seqlens."""
    window = _common(dropout_p, alibi_slopes, causal, window_size)
    cu = _global_cu_from_llama3(cu_seqlens_q, cu_seqlens_k, local_k_slice, q.shape[0], group)
    out = api.attention(q, k, v, sinks, group=group, mode="allgather", layout="contiguous",
                        cu_seqlens=cu, causal=causal, window=window, scale=softmax_scale,
                        heads_k_stride=heads_k_stride, deterministic=deterministic,
                        return_lse=return_attn_probs)
    return _result(out, return_attn_probs)


def llama3_flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                           max_seqlen_k, heads_k_stride, local_k_slice, *args,
                                           **kwargs):
    """kv (T_local, 2, Hkv, D)."""
    return llama3_flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k,
                                         max_seqlen_q, max_seqlen_k, heads_k_stride,
                                         local_k_slice, *args, **kwargs)


def llama3_flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                            max_seqlen_k, heads_k_stride, local_k_slice, *args,
                                            **kwargs):
    """qkv (T_local, 3, H, D)."""
    return llama3_flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens_q,
                                         cu_seqlens_k, max_seqlen_q, max_seqlen_k, heads_k_stride,
                                         local_k_slice, *args, **kwargs)


# ---- zigzag llama3 (all-gather over per-document zigzag shards) ----------------------------------


def zigzag_llama3_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                         max_seqlen_k, heads_k_stride, local_k_slice=None,
                                         dropout_p=0.0, softmax_scale=None, causal=False,
                                         window_size=(-1, -1), alibi_slopes=None,
                                         deterministic=False, return_attn_probs=False, group=None,
                                         sinks=None, use_fused_kernel_forward=None,
                                         use_fused_kernel_backward=None):
    """All-gather CP over packed shards in the per-document zigzag layout (every document's
    length divisible by 2W; rank r holds chunks r and 2W-1-r of each). cu_seqlens_q: the LOCAL
    offsets (global / W); cu_seqlens_k: the same local offsets or the global ones. local_k_slice
    is accepted for signature compatibility and unused (every chunk's key range is derived from
    the layout). use_fused_kernel_forward/backward: both zigzag chunks in one kernel launch per
    head group (True) or one launch per chunk (False), per direction; None (the default) takes
    sinkattn.cp.attention's default: fused unless SINKATTN_CP_FUSED=0."""
    window = _common(dropout_p, alibi_slopes, causal, window_size)
    world = dist.get_world_size(group)
    cu_q = [int(x) for x in cu_seqlens_q.tolist()]
    cu_k = [int(x) for x in cu_seqlens_k.tolist()]
    cu = [x * world for x in cu_q]
    if cu_k != cu_q and cu_k != cu:
        _fail("cu_seqlens_k", f"got {cu_k}, expected the local offsets {cu_q} or the global ones "
              f"{cu} (self-attention: keys are the same documents as queries)")
    fused = None
    if use_fused_kernel_forward is not None or use_fused_kernel_backward is not None:
        default = api._fused_flags(None, "allgather", "zigzag")
        fused = tuple(default[i] if x is None else bool(x)
                      for i, x in enumerate((use_fused_kernel_forward, use_fused_kernel_backward)))
    out = api.attention(q, k, v, sinks, group=group, mode="allgather", layout="zigzag",
                        cu_seqlens=cu, causal=causal, window=window, scale=softmax_scale,
                        heads_k_stride=heads_k_stride, deterministic=deterministic,
                        return_lse=return_attn_probs, fused=fused)
    return _result(out, return_attn_probs)


def zigzag_llama3_flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                                  max_seqlen_k, heads_k_stride, local_k_slice=None,
                                                  *args, **kwargs):
    """kv (T_local, 2, Hkv, D)."""
    return zigzag_llama3_flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k,
                                                max_seqlen_q, max_seqlen_k, heads_k_stride,
                                                local_k_slice, *args, **kwargs)


def zigzag_llama3_flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                                   max_seqlen_k, heads_k_stride,
                                                   local_k_slice=None, *args, **kwargs):
    """qkv (T_local, 3, H, D)."""
    return zigzag_llama3_flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens_q,
                                                cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                                heads_k_stride, local_k_slice, *args, **kwargs)
