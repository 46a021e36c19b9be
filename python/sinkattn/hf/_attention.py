"""The transformers attention function behind attn_implementation="sinkattn".

transformers calls it as `fn(module, query, key, value, attention_mask, dropout=, scaling=,
sliding_window=, s_aux=, position_ids=, ...)` with query (B, Hq, Sq, D) and key/value
(B, Hkv, Sk, D) (after the KV-cache update), and expects (out (B, Sq, Hq, D), weights or None).
Our mask function hands us the 2D padding mask (or None when there is no padding), never an
S x S tensor. K/V heads are never repeated: the kernel reads kv head h // (Hq // Hkv).
"""

from __future__ import annotations

import logging

import torch

import sinkattn
from sinkattn import ops

from . import _batching

logger = logging.getLogger("sinkattn")

_logged = False


def _window_arg(window: int | None, causal: bool):
    """transformers' `sliding_window` W -> sinkattn's `window`. Causal: W keys including the query
    (left = W - 1). Bidirectional: transformers keeps |i - j| <= W, i.e. (W, W)."""
    if window is None:
        return None
    return int(window) if causal else (int(window), int(window))


def _describe(module: torch.nn.Module, query: torch.Tensor, has_sinks: bool) -> str:
    """The one-time log line: backend, arch, dtype, sinks and the windows of the model's layers."""
    dev = query.device
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        where = f"cuda sm{major}{minor}"
    else:
        where = dev.type
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(query.dtype, str(query.dtype))
    config = getattr(module, "config", None)
    windows = getattr(config, "sinkattn_windows", None)
    if windows is None and config is not None:
        w = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None)
        if types:
            windows = [w if t == "sliding_attention" else None for t in types]
        elif w is not None and getattr(config, "use_sliding_window", True):
            windows = [w]
    kinds = []
    for w in windows or [None]:
        kind = f"window {w}" if w else "full"
        if kind not in kinds:
            kinds.append(kind)
    sinks = "learned sinks" if has_sinks else "no sinks"
    d = query.shape[-1]
    padded = ops.kernel_head_dim(d) if 0 < d <= ops._HEAD_DIMS[-1] else d  # else the call refuses
    dims = f", head_dim {d} padded to {padded}" if padded != d else ""
    return f"[sinkattn] {where} {dtype}: {sinks}, {' / '.join(kinds)}{dims}"


def sinkattn_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    s_aux: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    global _logged
    if dropout and dropout > 0:
        raise ValueError(
            f"sinkattn: attention dropout {dropout} is not supported (the kernels are exact attention); "
            "set config.attention_dropout = 0.0 for training"
        )
    if softcap is not None:
        raise ValueError(f"sinkattn: attention logit softcapping (softcap={softcap}) is not supported")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            f"sinkattn: expected a 2D padding mask or None, got attention_mask of shape "
            f"{tuple(attention_mask.shape)}; pass a 2D attention_mask (B, S) instead of a prepared 4D mask"
        )

    # Under autocast the projections give bf16/fp16 but RoPE's fp32 cos/sin promote q and k back to
    # fp32 (e.g. fp32 weights + autocast, as FSDP trainers run): compute in the autocast dtype, as
    # transformers' flash-attention path does.
    device_type = query.device.type
    if query.dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        target = torch.get_autocast_dtype(device_type)
        query, key, value = query.to(target), key.to(target), value.to(target)
    if query.is_cuda and query.dtype == torch.float32:
        raise TypeError(
            "sinkattn: CUDA kernels take bf16/fp16 activations, got float32 query; load the model with "
            "dtype=torch.bfloat16 or run it under torch.autocast('cuda', dtype=torch.bfloat16)"
        )

    # add_sinks() gives models without native sinks a `sinkattn_sinks` parameter and a window.
    sinks = s_aux if s_aux is not None else getattr(module, "sinkattn_sinks", None)
    added_window = getattr(module, "sinkattn_window", None)
    window = added_window if added_window is not None else sliding_window
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    opts = dict(sinks=sinks, causal=causal, window=_window_arg(window, causal), scale=scaling)

    if not _logged:
        _logged = True
        logger.warning(_describe(module, query, sinks is not None))

    # (B, H, S, D) -> (B, S, H, D): a transposed view, no copy; the head dim stays contiguous.
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    batch, q_len, heads, head_dim = q.shape

    if attention_mask is not None:
        mask = attention_mask
        if mask.shape[1] > k.shape[1]:
            mask = mask[:, -k.shape[1] :]
        elif mask.shape[1] < k.shape[1]:  # static cache: slots past the mask are not filled yet
            k, v = k[:, : mask.shape[1]], v[:, : mask.shape[1]]
        plan = _batching.padding_plan(mask, q_len)
        if plan.hole_row >= 0 and window is not None:
            raise ValueError(
                f"sinkattn: attention_mask: row {plan.hole_row} has padding between real tokens; "
                f"with the sliding window ({window}) of this layer the packed tokens would count "
                "real tokens instead of positions, and the result would differ from eager "
                "attention; use left or right padding"
            )
        out = sinkattn.varlen_attention(
            q[plan.q_index], k[plan.k_index], v[plan.k_index],
            plan.cu_seqlens_q, plan.cu_seqlens_k, plan.max_seqlen_q, plan.max_seqlen_k, **opts,
        )
        padded = out.new_zeros(batch, q_len, heads, out.shape[-1])
        return padded.index_put(plan.q_index, out), None

    plan = None
    if cu_seq_lens_q is not None and cu_seq_lens_k is not None:
        plan = _batching.explicit_plan(cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k)
    elif batch == 1 and q_len == k.shape[1] and position_ids is not None and position_ids.dim() == 2:
        plan = _batching.packing_plan(position_ids)
    if plan is not None:
        out = sinkattn.varlen_attention(
            q.reshape(-1, heads, head_dim), k.reshape(-1, k.shape[2], head_dim),
            v.reshape(-1, v.shape[2], v.shape[3]),
            plan.cu_seqlens_q, plan.cu_seqlens_k, plan.max_seqlen_q, plan.max_seqlen_k, **opts,
        )
        return out.view(batch, q_len, heads, -1), None

    return sinkattn.attention(q, k, v, **opts), None
