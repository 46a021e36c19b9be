"""sinkattn: exact attention with learned sinks, sliding windows, GQA and packed varlen batches,
forward and backward, as differentiable, torch.compile-friendly PyTorch ops over libsinkattn.

    out = sinkattn.attention(q, k, v, sinks, causal=True, window=4096)
    out = sinkattn.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, sinks=sinks)

Low-level, autograd-free building blocks: sinkattn.ops.fwd / sinkattn.ops.bwd.
"""

from . import _lib, ops
from .attention import attention, kernels, varlen_attention

__version__ = "{}.{}.{}".format(_lib.VERSION // 10000, _lib.VERSION // 100 % 100, _lib.VERSION % 100)
has_cuda = _lib.HAS_CUDA  # whether the loaded libsinkattn has a CUDA backend

__all__ = ["attention", "varlen_attention", "kernels", "ops", "has_cuda", "__version__"]
