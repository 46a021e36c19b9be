"""Context parallelism for sinkattn over torch.distributed (NCCL on GPU, gloo on CPU).

    import sinkattn.cp as cp
    q_l, k_l, v_l = (cp.shard(t, "zigzag", group=g) for t in (q, k, v))     # (B, S/W, H, D)
    out_l = cp.attention(q_l, k_l, v_l, sinks, group=g, mode="allgather", layout="zigzag",
                         window=128)
    out = cp.unshard(out_l, "zigzag", group=g)

Modes: 'allgather' (llama3), 'ring' (and zigzag ring), 'halo' (sliding window), 'ulysses'.
Sinks are merged once per query row; the sink gradient each rank gets is its partial (sum it over
the group). ring-flash-attention drop-in names live in sinkattn.cp.flash_compat (re-exported
here); the transformers hook is sinkattn.cp.hf.enable_context_parallel.
See docs/CONTEXT_PARALLEL.md.
"""

from .api import MODES, attention
from .flash_compat import (llama3_flash_attn_prepare_cu_seqlens, llama3_flash_attn_varlen_func,
                           llama3_flash_attn_varlen_kvpacked_func,
                           llama3_flash_attn_varlen_qkvpacked_func, ring_flash_attn_func,
                           zigzag_llama3_flash_attn_varlen_func,
                           zigzag_llama3_flash_attn_varlen_kvpacked_func,
                           zigzag_llama3_flash_attn_varlen_qkvpacked_func,
                           zigzag_ring_flash_attn_func)
from .layout import LAYOUTS, local_cu_seqlens, local_index, shard, unshard

__all__ = [
    "attention", "MODES", "LAYOUTS", "shard", "unshard", "local_index", "local_cu_seqlens",
    "ring_flash_attn_func", "zigzag_ring_flash_attn_func", "llama3_flash_attn_prepare_cu_seqlens",
    "llama3_flash_attn_varlen_func", "llama3_flash_attn_varlen_kvpacked_func",
    "llama3_flash_attn_varlen_qkvpacked_func", "zigzag_llama3_flash_attn_varlen_func",
    "zigzag_llama3_flash_attn_varlen_kvpacked_func",
    "zigzag_llama3_flash_attn_varlen_qkvpacked_func",
]
