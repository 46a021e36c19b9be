"""flash-attn-style entry points, so that transformers' hub-kernel path can drive sinkattn.

For `attn_implementation="<org>/sinkattn"` transformers loads a kernels-hub package and, finding
`flash_attn_varlen_func`, runs its own flash_attention_forward around it: unpadding, packed
position_ids and cu_seq_lens all handled by transformers, which passes flash-attn arguments
(window_size=(left, right), s_aux, dropout_p). These two functions map them onto sinkattn.
transformers inspects the signatures to decide which arguments to pass, so keep the names.
"""

from __future__ import annotations

import torch

import sinkattn


def _options(dropout_p, softmax_scale, causal, window_size, s_aux, deterministic):
    if dropout_p and dropout_p > 0:
        raise ValueError(f"sinkattn: attention dropout {dropout_p} is not supported; set attention_dropout = 0.0")
    left, right = window_size if window_size is not None else (-1, -1)
    if causal:  # flash-attn passes (W - 1, W - 1) with causal=True; the right side is then 0
        window = None if left < 0 else left + 1
    else:
        window = None if left < 0 and right < 0 else (left, right)
    return dict(sinks=s_aux, causal=causal, window=window, scale=softmax_scale, deterministic=deterministic)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    s_aux: torch.Tensor | None = None,
    deterministic: bool = False,
):
    """q (B, Sq, Hq, D), k and v (B, Sk, Hkv, D) -> (B, Sq, Hq, D)."""
    return sinkattn.attention(q, k, v, **_options(dropout_p, softmax_scale, causal, window_size, s_aux, deterministic))


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    s_aux: torch.Tensor | None = None,
    deterministic: bool = False,
):
    """q (Tq, Hq, D), k and v (Tk, Hkv, D), cu_seqlens (N + 1,) -> (Tq, Hq, D)."""
    return sinkattn.varlen_attention(
        q, k, v, cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32),
        None if max_seqlen_q is None else int(max_seqlen_q),
        None if max_seqlen_k is None else int(max_seqlen_k),
        **_options(dropout_p, softmax_scale, causal, window_size, s_aux, deterministic),
    )
