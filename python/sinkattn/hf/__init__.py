"""Hugging Face transformers (and VERL) integration.

    import sinkattn.hf                      # registers attn_implementation="sinkattn"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sinkattn")
    sinkattn.hf.add_sinks(model, init=-30.0, window=None)   # learnable sinks for any model
    sinkattn.hf.enable_context_parallel(group, mode="allgather", window_mode="halo")  # CP

Importing registers the name in transformers' AttentionInterface and AttentionMaskInterface
(idempotent; `register()` does it again explicitly). The mask function is transformers' own
flash-attention one: it hands the attention function the 2D padding mask, or None when there is
no padding, never an S x S tensor. The name must not contain "flash": transformers 5 would
redirect such names to a hub flash kernel for GPT-OSS.
"""

from __future__ import annotations

from pathlib import Path

from ..cp.hf import disable_context_parallel, enable_context_parallel
from ._attention import sinkattn_attention_forward
from ._sinks import add_sinks

NAME = "sinkattn"

__all__ = ["NAME", "register", "add_sinks", "sinkattn_attention_forward", "kernels_hub_dir",
           "enable_context_parallel", "disable_context_parallel"]


def register() -> None:
    """Register attn_implementation="sinkattn" (attention and mask functions). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, sinkattn_attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)


def kernels_hub_dir() -> Path:
    """The kernels-hub package folder, for LOCAL_KERNELS="<org>/sinkattn=<this path>"."""
    return Path(__file__).resolve().parent.parent / "kernels_hub"


register()
