"""kernels-hub entry of sinkattn: attn_implementation="<org>/sinkattn" in transformers.

A thin shim over the installed `sinkattn` package (which carries libsinkattn for CPU and CUDA):
transformers finds `flash_attn_varlen_func` here and wraps it with its own flash-attention glue
(unpadding, packed position_ids, cu_seq_lens, s_aux sinks, sliding windows)."""

from sinkattn.hf._flash_compat import flash_attn_func, flash_attn_varlen_func

__all__ = ["flash_attn_func", "flash_attn_varlen_func"]
