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



def check_deferred_error(synchronize=True):
    """Raises the ValueError of a packed CUDA call whose cu_seqlens broke a rule (a sequence
    longer than its max length, decreasing offsets, offsets past the rows): the library checks
    them on the device after the call's kernels, since reading them on the host would wait for
    the GPU, so the call itself returned and its outputs are NaN. The next sinkattn call on CUDA
    raises the same error; this asks without a call. Reported once. synchronize: wait for the
    current CUDA device first, so that every call enqueued on it has been checked."""
    import torch

    if synchronize and has_cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    status = _lib.deferred_error()
    if status:
        _lib.raise_for(status)


__all__ = ["attention", "varlen_attention", "kernels", "ops", "has_cuda", "check_deferred_error",
           "__version__"]
