"""torch custom ops over libsinkattn: argument checks, allocation, autograd, torch.compile support.

Two custom ops (namespace ``sinkattn``), each serving fixed-length and packed varlen batches
(varlen exactly when cu_seqlens_q/k are given):

  sinkattn::fwd(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                window_left, window_right, causal, deterministic) -> (out, lse)
  sinkattn::bwd(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                max_seqlen_k, scale, window_left, window_right, causal, deterministic,
                want_dsink) -> (dq, dk, dv, dsink)

Op-level conventions: sinks are fp32 (Hq,) or None; window bounds are already resolved (-1 =
unbounded, right = 0 when causal); max_seqlen < 0 means "compute from cu_seqlens" (a host read of
cu_seqlens, i.e. a device sync for CUDA tensors). ``fwd`` carries ``deterministic`` only so that its
autograd formula can hand it to ``bwd``. dsink is fp32 (Hq,), empty when not wanted.

Eager calls on plain tensors skip the dispatcher: they run the same implementation and the same
autograd formula through a ``torch.autograd.Function``, which saves ~10-20 us of dispatcher time per
call. Under torch.compile, with tensor subclasses, dispatch modes, functorch transforms or meta
tensors the calls go through ``torch.ops.sinkattn.*`` instead. Either way a call like an earlier one
(same shapes, strides, dtypes, devices, scalars) reuses its plan (_plans.py). Argument checks
and normalisation are in _checks.py.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import _lib
from ._checks import (_DTYPE_CODE, _HEAD_DIMS, _check_bwd, _check_problem, _lse_shape,
                      _max_seqlens, _zigzag, resolve)
from ._plans import (_BWD_POINTERS, _FWD_POINTERS, _W_K, _W_Q, _W_SINKS, _W_STREAM, _W_V, _WB_DOUT,
                     _WB_DK, _WB_DQ, _WB_DSINK, _WB_DV, _WB_LSE, _WB_OUT, _WB_WS, _WF_LSE, _WF_OUT,
                     _WF_WS, _addressof, _bwd_plans, _bwd_words, _cuda_device, _fwd_plans,
                     _fwd_words, _meta, _patch_problem, _problem_key, _raw_stream, _remember,
                     _words)

# Sequences one library call takes, by device type (the CUDA grids' y / z limit); batches of more
# (fixed-length or packed) run in calls of this many (_chunks). Tests lower it.
_SEQUENCE_LIMIT = {"cuda": 65535}

# Tests set this to fill every output with NaN before the library writes it, so that an element
# the library forgets to write cannot pass for a correct one.
_poison_outputs = False
# Set to False to send eager calls through torch.ops.sinkattn.* as well (debugging, tests).
_eager_fast_path = True

# Bound once: each dotted lookup costs ~30 ns on a path measured in microseconds.
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_level = torch._C._functorch.peek_interpreter_stack
_Tensor = torch.Tensor
_grad_enabled = torch.is_grad_enabled


# ---- calling the library -------------------------------------------------------------------------


def kernel_head_dim(d: int) -> int:
    """The head dim the kernels run for head dim d (1 to 256): d itself, or the next built one."""
    return next(n for n in _HEAD_DIMS if n >= d)


def _pad_dim(d: int, *tensors) -> list:
    """The tensors zero-padded from head dim d (not a kernel's) to kernel_head_dim(d). Zero
    columns add nothing to q . k, and v's (and out's, dout's) give output and gradient columns
    that the caller cuts off: the result is exact, at (padded / d) the FLOPs plus the copies. The
    kernels keep to a few head dims for compile time and binary size."""
    to = kernel_head_dim(d)
    return [torch.nn.functional.pad(t, (0, to - d)) for t in tensors]


def _chunks(q, cu_q, cu_k):
    """None, or for more sequences than one library call takes (_SEQUENCE_LIMIT: a fixed-length
    batch, or packed ones): per call (its cu_seqlens_q / _k rebased to its first rows, or None;
    the index of its rows of q / out / dout, of k / v, of lse). Sequences are independent, so the
    calls' outputs are disjoint (and dsink a sum); packed chunk edges are one host read."""
    limit = _SEQUENCE_LIMIT.get(q.device.type)
    n = q.shape[0] if cu_q is None else cu_q.shape[0] - 1
    if limit is None or n <= limit:
        return None
    edges = list(range(0, n, limit)) + [n]
    if cu_q is None:  # batch entries
        return [(None, None, slice(a, b), slice(a, b), slice(a, b))
                for a, b in zip(edges, edges[1:])]
    at = torch.tensor(edges, device=cu_q.device)
    rows_q, rows_k = torch.stack([cu_q[at], cu_k[at]]).tolist()
    return [(cu_q[a:b + 1] - rows_q[i], cu_k[a:b + 1] - rows_k[i],
             slice(rows_q[i], rows_q[i + 1]), slice(rows_k[i], rows_k[i + 1]),
             (slice(None), slice(rows_q[i], rows_q[i + 1])))  # lse is (Hq, rows)
            for i, (a, b) in enumerate(zip(edges, edges[1:]))]


def _usable(t: torch.Tensor, cuda: bool) -> bool:
    """Whether the core reads or writes t in place: head dim contiguous; on CUDA, 16-byte aligned base
    and strides (of dimensions longer than 1), as src/api.cpp requires. Otherwise we copy."""
    if t.stride(-1) != 1:
        return False
    if not cuda:
        return True
    if t.data_ptr() % 16:
        return False
    if t.is_contiguous():  # every stride is a multiple of head_dim, itself a multiple of 8
        return True
    per = 16 // t.element_size()
    return all(n <= 1 or s % per == 0 for n, s in zip(t.shape[:-1], t.stride()[:-1]))


def _in(t: torch.Tensor, cuda: bool) -> torch.Tensor:
    if _usable(t, cuda):
        return t
    c = t.contiguous()  # returns t itself when only its base address is misaligned
    return t.clone() if c is t else c


def _dense(sinks, cu_q, cu_k) -> tuple:
    """sinks and cu_seqlens as the library reads them: dense arrays (a strided view passed by
    address would be read past its end)."""
    if cu_q is not None:
        cu_q, cu_k = cu_q.contiguous(), cu_k.contiguous()
    return (None if sinks is None else sinks.contiguous()), cu_q, cu_k


def _tv(t: torch.Tensor, varlen: bool) -> tuple:
    """The sinkattn_tensor fields of t: (data, batch_stride, row_stride, head_stride)."""
    s = t.stride()
    return (t.data_ptr(), 0, s[0], s[1]) if varlen else (t.data_ptr(), s[0], s[1], s[2])


def _problem(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
             zigzag=(0, 0)) -> tuple:
    """The sinkattn_problem fields, in order (see _lib.PACK_FWD). zigzag: (rank, world) of a
    fused zigzag context-parallel call (problem.zigzag_rank / zigzag_world), (0, 0) = off."""
    if q.is_cuda:
        dev, idx = _lib.DEVICE_CUDA, q.get_device()
        stream = torch._C._cuda_getCurrentRawStream(idx)
    else:
        dev = idx = stream = 0
    qs, ks = q.shape, k.shape
    if cu_q is None:
        return (dev, idx, _DTYPE_CODE[q.dtype], qs[3], qs[0], qs[1], ks[1], qs[2], ks[2],
                q.data_ptr(), *q.stride()[:3], k.data_ptr(), *k.stride()[:3],
                v.data_ptr(), *v.stride()[:3], 0 if sinks is None else sinks.data_ptr(),
                0, 0, 0, 0, scale, causal, left, right, stream, *zigzag)
    if max_q < 0 or max_k < 0:  # host read of cu_seqlens (a sync on CUDA)
        max_q, max_k = _max_seqlens(cu_q, cu_k)
    return (dev, idx, _DTYPE_CODE[q.dtype], qs[2], cu_q.shape[0] - 1, max_q, max_k, qs[1], ks[1],
            *_tv(q, True), *_tv(k, True), *_tv(v, True), 0 if sinks is None else sinks.data_ptr(),
            cu_q.data_ptr(), cu_k.data_ptr(), qs[0], ks[0], scale, causal, left, right, stream, *zigzag)


def _new(t: torch.Tensor) -> torch.Tensor:
    """A fresh output buffer, NaN-poisoned for tests."""
    return t.fill_(math.nan) if _poison_outputs else t


def fwd_params(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal, out, lse,
               zigzag=(0, 0)):
    """A filled sinkattn_fwd_params (no workspace yet) for tensors the core accepts as they are;
    lse None = not wanted."""
    p = _lib.FwdParams()
    _lib.PACK_FWD.pack_into(p, 0, *_problem(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left,
                                            right, causal, zigzag), *_tv(out, cu_q is not None),
                            0 if lse is None else lse.data_ptr(), 0, 0)
    return p


def bwd_params(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
               deterministic, dq, dk, dv, dsink, zigzag=(0, 0)):
    """A filled sinkattn_bwd_params (no workspace yet); dsink None = not wanted."""
    varlen = cu_q is not None
    p = _lib.BwdParams()
    _lib.PACK_BWD.pack_into(
        p, 0, *_problem(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
                        zigzag),
        *_tv(out, varlen), *_tv(dout, varlen), lse.data_ptr(), *_tv(dq, varlen), *_tv(dk, varlen),
        *_tv(dv, varlen), 0 if dsink is None else dsink.data_ptr(), deterministic, 0, 0)
    return p


def _call(w, ws_like, ws_word: int, entry) -> None:
    """Allocates the workspace (uint8, 255 bytes over the size, used from a 256-byte boundary) and
    runs `entry` on the params words w (or the params struct, when there is no workspace). On CUDA
    the workspace is freed right after the launch: the caching allocator only hands it out again
    in stream order."""
    if ws_like is not None:
        ws = torch.empty_like(ws_like)
        w[ws_word] = (ws.data_ptr() + 255) & ~255
    status = entry(_addressof(w))
    if status:
        _lib.raise_for(status)


def _first_call(params, size_fn, size_offset, ws_word, entry, device):
    """Asks for the workspace size (written straight into params.workspace_size), then runs; returns
    the workspace's _like for the plan."""
    addr = _lib.ctypes.addressof(params)
    status = size_fn(addr, addr + size_offset)
    if status:
        _lib.raise_for(status)
    n = params.workspace_size
    ws_like = _like((n + 255,), torch.uint8, device) if n else None
    _call(_words(params) if n else params, ws_like, ws_word, entry)
    return ws_like


# ---- forward and backward on real tensors --------------------------------------------------------


def _like(shape, dtype, device) -> torch.Tensor:
    """A tensor for torch.empty_like to copy shape, dtype and device from (the cheapest torch
    allocation call). One element seen at every index: not dense, so empty_like returns contiguous
    strides (a shape of at most one element is dense whatever its strides, hence a real one)."""
    if math.prod(shape) > 1:
        return torch.empty_strided(shape, (0,) * len(shape), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _fwd_outputs(out_like, lse_like, want_lse: bool):
    """out contiguous in q's shape and dtype, lse fp32 contiguous or None (not wanted: the library
    skips it). The library writes every row, those outside every packed sequence too (out = 0,
    lse = -inf)."""
    out = torch.empty_like(out_like)
    lse = torch.empty_like(lse_like) if want_lse else None
    if want_lse:
        _new(lse)
    return _new(out), lse


def _clear_outside(varlen: bool, zeros, lse=None) -> None:
    """Where the library is not called for every row (no sequence, or a call per chunk of
    sequences, which leaves out the rows outside all of them): the outputs 0 and lse -inf, as the
    library writes the rows outside every sequence."""
    if varlen:
        for t in zeros:
            t.zero_()
        if lse is not None:
            lse.fill_(-math.inf)


def fwd_impl(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal, deterministic,
             want_lse=True, zigzag=(0, 0)):
    """The forward on real tensors (see the module docstring for the argument conventions). lse is
    None when not wanted (calls that record no autograd and do not return it)."""
    try:
        key = _problem_key(q, k, v, sinks, cu_q, cu_k)
        if key is not None:
            key = (key, max_q, max_k, scale, left, right, causal, zigzag)
        plan = _fwd_plans.get(key)
    except (AttributeError, TypeError):  # not tensors: the checks say which argument is wrong
        key = plan = None
    if plan is not None:
        ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr())
        # On CUDA the core needs 16-byte aligned bases; a plan fixes strides, not addresses.
        if plan.cuda and (ptrs[0] | ptrs[1] | ptrs[2]) & 15:
            plan = None
    if plan is None:
        return _fwd_first(key, q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
                          want_lse, zigzag)
    if sinks is not None:
        sinks = sinks.contiguous()
    w = _fwd_words(plan.words)
    empty = plan.empty
    # The inline path needs the direct allocator (fixed length: see _Plan) and, on CUDA, q's
    # device as the current one (where that allocator allocates).
    inline = not (empty is None or _poison_outputs
                  or (plan.cuda and _cuda_device() != plan.device_index))
    if not inline:
        varlen = cu_q is not None
        if varlen:
            cu_q, cu_k = cu_q.contiguous(), cu_k.contiguous()
        out, lse = _fwd_outputs(*plan.likes, want_lse)
        _patch_problem(w, plan, ptrs, sinks, cu_q, cu_k, max_q, max_k)
    else:  # the common case (fixed length), inlined: it runs on every call
        out_spec, lse_spec = plan.specs[:2]
        out = empty(*out_spec)
        lse = empty(*lse_spec) if want_lse else None
        w[_W_Q], w[_W_K], w[_W_V] = ptrs
        if sinks is not None:
            w[_W_SINKS] = sinks.data_ptr()
        if plan.cuda:
            w[_W_STREAM] = _raw_stream(plan.device_index)
    w[_WF_OUT] = out.data_ptr()
    if want_lse:
        w[_WF_LSE] = lse.data_ptr()
    if plan.ws_like is None or inline:  # _call, inlined for the common case
        if plan.ws_like is not None:  # the Hopper forward's tile counter (freed as in _call)
            ws = empty(*plan.specs[2])
            w[_WF_WS] = (ws.data_ptr() + 255) & ~255
        status = _lib.fwd(_addressof(w))
        if status:
            _lib.raise_for(status)
    else:
        _call(w, plan.ws_like, _WF_WS, _lib.fwd)
    return out, lse


def _fwd_first(key, q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
               want_lse, zigzag=(0, 0)):
    """fwd_impl without a plan: checks everything, copies layouts the core does not accept, and
    leaves a plan for the key (None: leave none) when it ran on the tensors as given."""
    _check_problem(q, k, v, sinks, cu_q, cu_k)
    d = q.shape[-1]
    if d not in _HEAD_DIMS:  # zero-padded (_pad_dim): no plan, the cut is a copy
        out, lse = _fwd_first(None, *_pad_dim(d, q, k, v), sinks, cu_q, cu_k, max_q, max_k, scale,
                              left, right, causal, want_lse, zigzag)
        return out[..., :d].contiguous(), lse
    varlen = cu_q is not None
    likes = (_like(q.shape, q.dtype, q.device),
             _like(_lse_shape(q, varlen), torch.float32, q.device))
    out, lse = _fwd_outputs(*likes, want_lse)
    chunks = _chunks(q, cu_q, cu_k)
    if chunks:  # more sequences than one call takes: a call per chunk, no plan
        _clear_outside(varlen, (out,), lse)
        for cq, ck, iq, ik, il in chunks:
            o, l = _fwd_first(None, q[iq], k[ik], v[ik], sinks, cq, ck, max_q, max_k, scale, left,
                              right, causal, want_lse, zigzag)
            out[iq] = o
            if want_lse:
                lse[il] = l
        return out, lse
    if out.numel() == 0 or (varlen and cu_q.shape[0] == 1):
        _clear_outside(varlen, (out,), lse)
        return out, lse
    cuda = q.is_cuda
    given = (q, k, v)
    q, k, v = (_in(t, cuda) for t in given)
    as_given = q is given[0] and k is given[1] and v is given[2]
    sinks, cu_q, cu_k = _dense(sinks, cu_q, cu_k)
    p = fwd_params(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal, out, lse,
                   zigzag)
    ws_like = _first_call(p, _lib.fwd_workspace_size, _lib.FWD_WS_SIZE_OFFSET, _WF_WS, _lib.fwd,
                          q.device)
    if key is not None and as_given:
        _remember(_fwd_plans, key, p, _FWD_POINTERS, ws_like, q, likes,
                  direct=not varlen)
    return out, lse


def kernels(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
            deterministic) -> dict:
    """The kernel families the library picks for a forward and a backward of this problem (see
    sinkattn.kernels); tensors the core would not read in place are copied first, as the calls do."""
    _check_problem(q, k, v, sinks, cu_q, cu_k)
    d = q.shape[-1]
    if d not in _HEAD_DIMS:
        q, k, v = _pad_dim(d, q, k, v)
        found = kernels(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
                        deterministic)
        return {n: f"{text}, head_dim {d} padded to {q.shape[-1]}" for n, text in found.items()}
    chunks = _chunks(q, cu_q, cu_k)
    if chunks:
        cq, ck, iq, ik, _ = chunks[0]
        found = kernels(q[iq], k[ik], v[ik], sinks, cq, ck, max_q, max_k, scale, left, right,
                        causal, deterministic)
        most = _SEQUENCE_LIMIT[q.device.type]
        return {n: f"{text}, in {len(chunks)} calls of at most {most} sequences"
                for n, text in found.items()}
    cuda = q.is_cuda
    q, k, v = (_in(t, cuda) for t in (q, k, v))
    varlen = cu_q is not None
    sinks, cu_q, cu_k = _dense(sinks, cu_q, cu_k)
    out = torch.empty_like(q)
    lse = torch.empty(_lse_shape(q, varlen), dtype=torch.float32, device=q.device)
    found = {}
    for name, params, kernel in (
            ("fwd", fwd_params(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
                               out, lse), _lib.fwd_kernel),
            ("bwd", bwd_params(out, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, left,
                               right, causal, deterministic, torch.empty_like(q),
                               torch.empty_like(k), torch.empty_like(v),
                               None if sinks is None else torch.empty_like(sinks)),
             _lib.bwd_kernel)):
        text = kernel(_addressof(params))
        if text is None:  # refused: the library's reason names the argument
            raise ValueError(_lib.LIB.sinkattn_last_error().decode("utf-8", "replace"))
        found[name] = text.decode()
    return found


def bwd_impl(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
             deterministic, want_dsink, zigzag=(0, 0)):
    """The backward on real tensors: (dq, dk, dv) in the layouts of (q, k, v), dsink fp32."""
    want_dsink = want_dsink and sinks is not None
    try:
        key = _problem_key(q, k, v, sinks, cu_q, cu_k)
        if key is not None:
            key = (key, _meta(dout), _meta(out), lse.shape, lse.dtype, lse.device, max_q, max_k,
                   scale, left, right, causal, deterministic, want_dsink, zigzag)
        plan = _bwd_plans.get(key)
    except (AttributeError, TypeError):  # not tensors: the checks say which argument is wrong
        key = plan = None
    if plan is None:
        return _bwd_first(key, dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale,
                          left, right, causal, deterministic, want_dsink, zigzag)
    dq, dk, dv, dsink = _bwd_outputs(q, k, v, *plan.likes)
    ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr())
    rest = (out.data_ptr(), dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr())
    if plan.cuda and (ptrs[0] | ptrs[1] | ptrs[2] | rest[0] | rest[1] | rest[2] | rest[3]
                      | rest[4]) & 15:  # see fwd_impl
        return _bwd_first(None, dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale,
                          left, right, causal, deterministic, want_dsink, zigzag)
    sinks, cu_q, cu_k = _dense(sinks, cu_q, cu_k)
    lse = lse.contiguous()
    w = _bwd_words(plan.words)
    _patch_problem(w, plan, ptrs, sinks, cu_q, cu_k, max_q, max_k)
    w[_WB_OUT], w[_WB_DOUT], w[_WB_DQ], w[_WB_DK], w[_WB_DV] = rest
    w[_WB_LSE] = lse.data_ptr()
    if want_dsink:
        w[_WB_DSINK] = dsink.data_ptr()
    _call(w, plan.ws_like, _WB_WS, _lib.bwd)
    return dq, dk, dv, dsink


def _bwd_outputs(q, k, v, dsink_like):
    """Gradients in the layouts of q, k, v (empty_like keeps dense strides; the library writes
    every row, 0 outside every packed sequence). dsink fp32 (Hq,), or (0,) when not wanted: see
    _dsink_like."""
    return tuple(_new(torch.empty_like(t)) for t in (q, k, v, dsink_like))


def _dsink_like(q, want_dsink: bool):
    return _like((q.shape[-2] if want_dsink else 0,), torch.float32, q.device)


def _bwd_first(key, dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, left, right,
               causal, deterministic, want_dsink, zigzag=(0, 0)):
    """bwd_impl without a plan (see _fwd_first)."""
    _check_bwd(dout, q, k, v, out, lse, sinks, cu_q, cu_k)
    d = q.shape[-1]
    if d not in _HEAD_DIMS:  # as in _fwd_first; the gradients in the layouts of q, k and v
        grads = _bwd_first(None, *_pad_dim(d, dout, q, k, v, out), lse, sinks, cu_q, cu_k, max_q,
                           max_k, scale, left, right, causal, deterministic, want_dsink, zigzag)
        cut = [torch.empty_like(x).copy_(g[..., :d]) for x, g in zip((q, k, v), grads)]
        return (*cut, grads[3])
    varlen = cu_q is not None
    dsink_like = _dsink_like(q, want_dsink)
    dq, dk, dv, dsink = _bwd_outputs(q, k, v, dsink_like)
    chunks = _chunks(q, cu_q, cu_k)
    if chunks:  # as in _fwd_first; dsink sums the calls' in a fixed order
        _clear_outside(varlen, (dq, dk, dv))
        dsink.zero_()
        for cq, ck, iq, ik, il in chunks:
            g = _bwd_first(None, dout[iq], q[iq], k[ik], v[ik], out[iq], lse[il], sinks, cq, ck,
                           max_q, max_k, scale, left, right, causal, deterministic, want_dsink,
                           zigzag)
            dq[iq], dk[ik], dv[ik] = g[:3]
            dsink += g[3]
        return dq, dk, dv, dsink
    if q.numel() == 0 or (varlen and cu_q.shape[0] == 1):
        # No query row: nothing depends on k, v or the sinks.
        for g in (dq, dk, dv, dsink):
            g.zero_()
        return dq, dk, dv, dsink
    cuda = q.is_cuda
    given = (q, k, v, out, dout)
    q, k, v, out, dout = (_in(t, cuda) for t in given)
    as_given = all(a is b for a, b in zip((q, k, v, out, dout), given))
    lse = lse.contiguous()
    sinks, cu_q, cu_k = _dense(sinks, cu_q, cu_k)
    # Gradients are written in place when the core accepts their layout, else via a copy.
    gq, gk, gv = (g if _usable(g, cuda) else torch.empty(g.shape, dtype=g.dtype, device=g.device)
                  for g in (dq, dk, dv))
    as_given = as_given and gq is dq and gk is dk and gv is dv
    p = bwd_params(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, left, right,
                   causal, deterministic, gq, gk, gv, dsink if want_dsink else None, zigzag)
    ws_like = _first_call(p, _lib.bwd_workspace_size, _lib.BWD_WS_SIZE_OFFSET, _WB_WS, _lib.bwd,
                          q.device)
    for g, t in ((dq, gq), (dk, gk), (dv, gv)):
        if t is not g:
            g.copy_(t)
    if key is not None and as_given:
        _remember(_bwd_plans, key, p, _BWD_POINTERS, ws_like, q, (dsink_like,))
    return dq, dk, dv, dsink


# ---- custom ops ----------------------------------------------------------------------------------


@torch.library.custom_op("sinkattn::fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: Optional[torch.Tensor],
            cu_seqlens_q: Optional[torch.Tensor], cu_seqlens_k: Optional[torch.Tensor],
            max_seqlen_q: int, max_seqlen_k: int, scale: float, window_left: int,
            window_right: int, causal: bool, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return fwd_impl(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                    window_left, window_right, causal, deterministic)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal, deterministic):
    _check_problem(q, k, v, sinks, cu_q, cu_k)
    return q.new_empty(q.shape), q.new_empty(_lse_shape(q, cu_q is not None), dtype=torch.float32)


@torch.library.custom_op("sinkattn::bwd", mutates_args=())
def _bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            out: torch.Tensor, lse: torch.Tensor, sinks: Optional[torch.Tensor],
            cu_seqlens_q: Optional[torch.Tensor], cu_seqlens_k: Optional[torch.Tensor],
            max_seqlen_q: int, max_seqlen_k: int, scale: float, window_left: int,
            window_right: int, causal: bool, deterministic: bool,
            want_dsink: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return bwd_impl(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                    max_seqlen_k, scale, window_left, window_right, causal, deterministic,
                    want_dsink)


@_bwd_op.register_fake
def _bwd_fake(dout, q, k, v, out, lse, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
              deterministic, want_dsink):
    _check_bwd(dout, q, k, v, out, lse, sinks, cu_q, cu_k)
    n = q.shape[-2] if (want_dsink and sinks is not None) else 0
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            q.new_empty((n,), dtype=torch.float32))


# ---- autograd (shared by the op and the eager fast path) ------------------------------------------


def _setup_context(ctx, inputs, output):
    q, k, v, sinks, cu_q, cu_k = inputs[:6]
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, sinks, cu_q, cu_k)
    ctx.args = inputs[6:]  # max_q, max_k, scale, left, right, causal, deterministic
    # Unused outputs (lse, mostly) then reach backward as None rather than as zeros.
    ctx.set_materialize_grads(False)


def _grads(ctx, dout, dlse, bwd):
    q, k, v, out, lse, sinks, cu_q, cu_k = ctx.saved_tensors
    want_dsink = sinks is not None and ctx.needs_input_grad[3]
    grads = None
    if dout is not None:
        grads = bwd(dout, q, k, v, out, lse, sinks, cu_q, cu_k, *ctx.args, want_dsink)
    if dlse is not None:
        extra = _lse_grads(dlse, q, k, v, out, lse, sinks, cu_q, cu_k, ctx.args, want_dsink, bwd)
        grads = extra if grads is None else [
            b if a is None else a if b is None else a + b for a, b in zip(grads, extra)]
    if grads is None:
        return (None,) * 13
    dq, dk, dv, dsink = grads
    return (dq, dk, dv, dsink if want_dsink else None) + (None,) * 9


def _lse_grads(dlse, q, k, v, out, lse, sinks, cu_q, cu_k, args, want_dsink, bwd):
    """Gradients that flow through lse. dlse_i / dx_ij = P_ij and dlse_i / ds_h = exp(s_h - lse_i):
    the backward's formulas with delta_i replaced by -dlse_i and dP = 0. We get them from the
    backward itself with v = 0 (so dP = 0), dout = e_0 and out = -dlse_i e_0 (so delta_i = -dlse_i);
    its dv is discarded."""
    varlen = cu_q is not None
    rows = dlse.t() if varlen else dlse.transpose(1, 2)  # to out's (.., rows, heads) order
    e0 = torch.zeros_like(out)
    e0[..., 0] = 1.0
    fake_out = torch.zeros_like(out)
    fake_out[..., 0] = -rows.to(out.dtype)
    dq, dk, _, _ = bwd(e0, q, k, torch.zeros_like(v), fake_out, lse, sinks, cu_q, cu_k, *args,
                       False)
    dsink = None
    if want_dsink:  # exactly, from fp32 lse and dlse (fake_out holds dlse rounded to out's dtype)
        s = sinks.float().view(-1, 1) if varlen else sinks.float().view(1, -1, 1)
        p_sink = torch.where(torch.isfinite(lse), torch.exp(s - lse), 0.0)
        dsink = (p_sink * dlse.float()).sum(dim=1 if varlen else (0, 2))
    return dq, dk, torch.zeros_like(v), dsink


def _op_backward(ctx, dout, dlse):
    return _grads(ctx, dout, dlse, torch.ops.sinkattn.bwd)


_fwd_op.register_autograd(_op_backward, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """The op's autograd formula without the dispatcher, for eager calls on plain tensors."""

    @staticmethod
    def forward(ctx, *args):
        output = fwd_impl(*args)
        _setup_context(ctx, args, output)
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlse):
        return _grads(ctx, dout, dlse, bwd_impl)


def _eager_ok(*tensors) -> bool:
    """Whether the dispatcher can be skipped: plain tensors, eager mode, nothing intercepting."""
    if (not _eager_fast_path or _is_compiling() or _dispatch_modes()
            or _functorch_level() is not None):
        return False
    for t in tensors:
        if t is not None and (type(t) is not _Tensor or t.is_meta):
            return False
    return True


def run_fwd(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal, deterministic,
            want_lse=True):
    """Differentiable forward: (out, lse) via the eager fast path or torch.ops.sinkattn.fwd. lse may
    be None when not wanted and no autograd graph is recorded (the backward needs it)."""
    # _eager_ok, inlined: this runs on every call. Only q's is_meta decides the route: a meta
    # k, v, sinks or cu_seqlens beside a real q fails fwd_impl's device check (and no plan has a
    # meta device in its key), as it fails the op's fake implementation.
    if (_eager_fast_path and not _is_compiling() and not _dispatch_modes()
            and _functorch_level() is None and type(q) is _Tensor and type(k) is _Tensor
            and type(v) is _Tensor and (sinks is None or type(sinks) is _Tensor)
            and (cu_q is None or type(cu_q) is _Tensor) and (cu_k is None or type(cu_k) is _Tensor)
            and not q.is_meta):
        if not (_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad
                                     or (sinks is not None and sinks.requires_grad))):
            return fwd_impl(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right, causal,
                            deterministic, want_lse)  # positional: a *args call costs ~0.15 us
        return _EagerAttention.apply(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right,
                                     causal, deterministic)
    return torch.ops.sinkattn.fwd(q, k, v, sinks, cu_q, cu_k, max_q, max_k, scale, left, right,
                                  causal, deterministic)




# ---- low-level functions (no autograd) for layers built on top, e.g. context parallelism ---------


def fwd(q, k, v, sinks=None, *, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
        max_seqlen_k=None, causal=True, window=None, scale=None, zigzag=None):
    """Forward without autograd: returns (out, lse).

    zigzag=(rank, world): a fused zigzag context-parallel call (problem.zigzag_rank / zigzag_world
    of sinkattn.h: every sequence's query rows are its zigzag chunks rank and 2*world-1-rank, its
    keys the whole gathered sequence); eager only (it bypasses the custom op).

    Same arguments and meanings as ``sinkattn.attention`` (fixed-length, q 4-D) or
    ``sinkattn.varlen_attention`` (q 3-D with cu_seqlens_q/k). out is contiguous in q's shape and
    dtype; lse is fp32 (B, Hq, Sq) or (Hq, Tq), the log of the whole softmax denominator, sink
    included. No autograd graph is recorded."""
    sinks, max_q, max_k, scale, left, right = resolve(q, sinks, causal, window, scale, False,
                                                      max_seqlen_q, max_seqlen_k)
    with torch.no_grad():
        args = (q, k, v, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale, left, right,
                causal, False)
        if zigzag is not None:
            return fwd_impl(*args, zigzag=_zigzag(zigzag))
        if _eager_ok(q, k, v, sinks, cu_seqlens_q, cu_seqlens_k):
            return fwd_impl(*args)
        return torch.ops.sinkattn.fwd(*args)


def bwd(dout, q, k, v, out, lse, sinks=None, *, cu_seqlens_q=None, cu_seqlens_k=None,
        max_seqlen_q=None, max_seqlen_k=None, causal=True, window=None, scale=None,
        deterministic=False, zigzag=None):
    """Backward without autograd: returns (dq, dk, dv, dsink). zigzag: as in fwd.

    out and lse are the forward's (for context parallelism: the final, merged ones; delta_i =
    dout_i . out_i and P_ij = exp(x_ij - lse_i) are formed from them). dq, dk, dv have the shapes,
    dtype and (dense) layouts of q, k, v. dsink is fp32 (Hq,) whatever the sinks' dtype (callers
    summing partials keep full precision), or None without sinks."""
    sinks, max_q, max_k, scale, left, right = resolve(q, sinks, causal, window, scale,
                                                      deterministic, max_seqlen_q, max_seqlen_k)
    with torch.no_grad():
        args = (dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k, max_q, max_k, scale,
                left, right, causal, deterministic, sinks is not None)
        if zigzag is not None:
            dq, dk, dv, dsink = bwd_impl(*args, zigzag=_zigzag(zigzag))
        elif _eager_ok(dout, q, k, v, out, lse, sinks, cu_seqlens_q, cu_seqlens_k):
            dq, dk, dv, dsink = bwd_impl(*args)
        else:
            dq, dk, dv, dsink = torch.ops.sinkattn.bwd(*args)
    return dq, dk, dv, (dsink if sinks is not None else None)
