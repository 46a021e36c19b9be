"""Plans: what a repeated op call (ops.fwd_impl / bwd_impl) reuses.

A call whose key (shapes, strides, dtypes and devices of every tensor, and the scalars) was seen
before reuses that call's packed params and workspace size: it copies them and patches the data
pointers and the CUDA stream, the only fields a key does not fix. The Python checks it skips are
functions of the key alone; the size query reads neither data pointers nor cu_seqlens contents
(sinkattn.h). The library itself still checks every call in full (pointers, cu_seqlens values).
Only calls that ran on the tensors as given (no layout copies) leave a plan. Every non-pointer
value that reaches the params must be part of the key (fwd_impl, bwd_impl): a new params field
fed from a new argument goes into the key too.
"""

from __future__ import annotations

import torch

from . import _lib
from ._checks import _max_seqlens

_Tensor = torch.Tensor

_PLAN_LIMIT = 256  # distinct keys kept (varlen batches of changing lengths each make one)
_fwd_plans: dict = {}
_bwd_plans: dict = {}


class _Plan:
    __slots__ = ("words", "ws_like", "cuda", "device_index", "likes", "empty", "specs")

    def __init__(self, words, ws_like, q: torch.Tensor, likes: tuple, direct: bool):
        self.words = words  # the packed params, every pointer zeroed (a missed patch reads NULL)
        self.ws_like = ws_like  # the workspace's _like, None when the call needs none
        self.cuda = q.is_cuda
        self.device_index = q.get_device() if self.cuda else 0
        self.likes = likes  # the outputs' _likes: (out, lse) forward, (dsink,) backward
        # For fwd_impl's inline path (direct=True): the (shape, strides, dtype) of each output
        # and of the workspace, if any, and torch's direct allocator for them
        # (_direct_allocator); empty None = allocate from likes.
        allocs = likes + ((ws_like,) if ws_like is not None else ())
        self.specs = tuple((tuple(t.shape), _empty_like(t).stride(), t.dtype)
                           for t in allocs) if direct else None
        self.empty = _direct_allocator(self.specs, allocs) if direct else None


def _remember(plans: dict, key, params, pointer_words, ws_like, q, likes: tuple,
              direct=False) -> None:
    words = _words(params, copy=True)
    for i in pointer_words:
        words[i] = 0
    if len(plans) >= _PLAN_LIMIT:
        plans.clear()
    plans[key] = _Plan(bytes(words), ws_like, q, likes, direct)


# torch's allocation without the dispatcher, as inductor's generated code calls it:
# (shape, strides, dtype) -> an uninitialised tensor on the CPU / the current CUDA device; ~0.3 us
# less than empty_like per tensor on the CPU, and it skips more of the dispatcher's work on CUDA.
# A private API: each plan checks once what it returns, and otherwise keeps to empty_like.
_guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
_EMPTY_STRIDED = {"cpu": getattr(_guards, "_empty_strided_cpu", None),
                  "cuda": getattr(_guards, "_empty_strided_cuda", None)}
_cuda_device = getattr(torch._C, "_cuda_getDevice", None)  # the current CUDA device


def _direct_allocator(specs, likes):
    """The direct allocator for these outputs, if it makes what empty_like makes; else None. (On
    CUDA it allocates on the current device: fwd_impl uses it only when that is q's.)"""
    kind = likes[0].device.type
    empty = _EMPTY_STRIDED.get(kind)
    if empty is None:
        return None
    try:
        for (shape, strides, dtype), like in zip(specs, likes):
            t = empty(shape, strides, dtype)
            if (type(t) is not _Tensor or t.shape != like.shape or t.stride() != strides
                    or t.dtype is not dtype or t.device.type != kind or t.requires_grad):
                return None
    except (TypeError, RuntimeError):
        return None
    return empty


def _words(params, copy=False):
    """params (a ctypes struct) as uint64 words: a view of it, or a copy."""
    cls = _lib.FwdWords if isinstance(params, _lib.FwdParams) else _lib.BwdWords
    return cls.from_buffer_copy(params) if copy else cls.from_buffer(params)


def _meta(t) -> tuple:
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def _problem_key(q, k, v, sinks, cu_q, cu_k):
    """Everything _check_problem and the params read from these tensors, pointers aside; None when
    k or v differs from q in dtype or device (a call the checks refuse). Keying on q's dtype and
    device alone is cheaper than on all three (fewer objects to hash and compare)."""
    dt, dev = q.dtype, q.device
    if k.dtype is not dt or v.dtype is not dt or k.device != dev or v.device != dev:
        return None
    return (q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(), dt, dev,
            None if sinks is None else (sinks.shape, sinks.dtype, sinks.device),
            None if cu_q is None else (cu_q.shape, cu_q.dtype, cu_q.device),
            None if cu_k is None else (cu_k.shape, cu_k.dtype, cu_k.device))


_P = _lib.Problem
_W_Q, _W_K, _W_V = (_lib.word(_P, f"{t}.data") for t in "qkv")
_W_SINKS, _W_CU_Q, _W_CU_K = (_lib.word(_P, f) for f in ("sinks", "cu_seqlens_q", "cu_seqlens_k"))
_W_MAX_Q, _W_MAX_K, _W_STREAM = (_lib.word(_P, f) for f in ("seqlen_q", "seqlen_k", "stream"))
assert _lib.FwdParams.problem.offset == 0 and _lib.BwdParams.problem.offset == 0
_addressof = _lib.ctypes.addressof
_empty_like = torch.empty_like
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
_fwd_words, _bwd_words = _lib.FwdWords.from_buffer_copy, _lib.BwdWords.from_buffer_copy
_FWD_POINTERS = _lib.pointer_words(_lib.FwdParams)
_BWD_POINTERS = _lib.pointer_words(_lib.BwdParams)
_WF_OUT, _WF_LSE, _WF_WS = (_lib.word(_lib.FwdParams, f) for f in ("out.data", "lse", "workspace"))
_WB_OUT, _WB_DOUT, _WB_LSE, _WB_DQ, _WB_DK, _WB_DV, _WB_DSINK, _WB_WS = (
    _lib.word(_lib.BwdParams, f) for f in ("out.data", "dout.data", "lse", "dq.data", "dk.data",
                                           "dv.data", "dsink", "workspace"))


def _patch_problem(w, plan: _Plan, qkv_ptrs, sinks, cu_q, cu_k, max_q, max_k) -> None:
    """Writes the problem's pointers (and, for varlen without given max lengths, the lengths read
    from cu_seqlens) into the copied params words w."""
    w[_W_Q], w[_W_K], w[_W_V] = qkv_ptrs
    if sinks is not None:
        w[_W_SINKS] = sinks.data_ptr()
    if cu_q is not None:
        w[_W_CU_Q], w[_W_CU_K] = cu_q.data_ptr(), cu_k.data_ptr()
        if max_q < 0 or max_k < 0:  # host read of cu_seqlens (a sync on CUDA)
            w[_W_MAX_Q], w[_W_MAX_K] = _max_seqlens(cu_q, cu_k)
    if plan.cuda:
        w[_W_STREAM] = _raw_stream(plan.device_index)
