"""Argument checks and normalisation for the ops (ops.py): they raise before the C ABI is touched,
naming the argument. The library checks every call again in full; these give torch-side reasons
(dtypes, devices, shapes) and resolve the public functions' scalar arguments."""

from __future__ import annotations

import numbers

import torch

from . import _lib

_DTYPE_CODE = {torch.float32: _lib.FLOAT32, torch.float16: _lib.FLOAT16, torch.bfloat16: _lib.BFLOAT16}
# Head dims the kernels are built for; others up to 256 run zero-padded to the next of these
# (ops._pad_dim: such calls take the slow path and leave no plan).
_HEAD_DIMS = (32, 64, 96, 128, 256)
_DEVICES = ("cpu", "cuda", "meta")
_INT32_MAX = 2**31 - 1
_FP32_MAX, _FP32_TINY = 3.4028234663852886e38, 1.401298464324817e-45  # largest, smallest > 0
_Tensor = torch.Tensor
_F32 = torch.float32


def _fail(arg: str, why: str, exc=ValueError):
    raise exc(f"sinkattn: {arg}: {why}")


def _check_tensor(name: str, t, rank: int, dtype, device, dtype_why="the dtype of q") -> None:
    if not isinstance(t, torch.Tensor):
        _fail(name, f"got {type(t).__name__}, expected a torch.Tensor", TypeError)
    if t.dtype != dtype:
        _fail(name, f"got dtype {t.dtype}, expected {dtype} ({dtype_why})", TypeError)
    if t.device != device:
        _fail(name, f"got device {t.device}, expected {device} (the device of q)")
    if t.dim() != rank:
        _fail(name, f"got shape {tuple(t.shape)} ({t.dim()} dims), expected {rank} dims")


def _problem_ok(q, k, v, sinks, cu_q, cu_k) -> bool:
    """A quick 'everything is fine' for the common case (~0.5 us); _check_problem has the reasons."""
    try:
        dt, dev, qs, ks = q.dtype, q.device, q.shape, k.shape
        d, hq, hkv = qs[-1], qs[-2], ks[-2]
        if not (dt in _DTYPE_CODE and dev.type in _DEVICES and k.dtype is dt and v.dtype is dt
                and k.device == dev and v.device == dev and ks == v.shape and d in _HEAD_DIMS
                and ks[-1] == d and hkv >= 1 and hq % hkv == 0 and hq >= 1):
            return False
        if sinks is not None and not (sinks.dtype is torch.float32 and sinks.device == dev
                                      and sinks.shape == (hq,)):
            return False
        if cu_q is None and cu_k is None:
            return len(qs) == 4 and len(ks) == 4 and ks[0] == qs[0]
        return (len(qs) == 3 and len(ks) == 3 and cu_q.dtype is torch.int32
                and cu_k.dtype is torch.int32 and cu_q.device == dev and cu_k.device == dev
                and cu_q.dim() == 1 and cu_q.shape == cu_k.shape and cu_q.shape[0] >= 1)
    except (AttributeError, TypeError, IndexError):
        return False


def _check_problem(q, k, v, sinks, cu_q, cu_k) -> None:
    """Checks the tensors every op reads; scalar arguments are checked by the public functions."""
    if _problem_ok(q, k, v, sinks, cu_q, cu_k):
        return
    if not isinstance(q, torch.Tensor):
        _fail("q", f"got {type(q).__name__}, expected a torch.Tensor", TypeError)
    if q.dtype not in _DTYPE_CODE:
        _fail("q", f"got dtype {q.dtype}, expected torch.float32, torch.float16 or torch.bfloat16",
              TypeError)
    if q.device.type not in _DEVICES:
        _fail("q", f"got device {q.device}, expected a CPU or CUDA tensor")
    varlen = cu_q is not None or cu_k is not None
    rank = 3 if varlen else 4
    layout = "(total_q, heads_q, head_dim)" if varlen else "(batch, seqlen_q, heads_q, head_dim)"
    if q.dim() != rank:
        _fail("q", f"got shape {tuple(q.shape)}, expected {rank} dims {layout}")
    _check_tensor("k", k, rank, q.dtype, q.device)
    _check_tensor("v", v, rank, q.dtype, q.device)
    if k.shape != v.shape:
        _fail("v", f"got shape {tuple(v.shape)}, expected the shape of k {tuple(k.shape)}")
    d = q.shape[-1]
    if k.shape[-1] != d:
        _fail("k", f"got head_dim {k.shape[-1]}, expected {d} (the head_dim of q)")
    if not 0 < d <= _HEAD_DIMS[-1]:
        _fail("q", f"got head_dim {d} (shape {tuple(q.shape)}), expected 1 to {_HEAD_DIMS[-1]} "
              f"(the kernels' own: {', '.join(map(str, _HEAD_DIMS))}; others run padded)")
    if not varlen and k.shape[0] != q.shape[0]:
        _fail("k", f"got batch {k.shape[0]}, expected {q.shape[0]} (the batch of q)")
    hq, hkv = q.shape[-2], k.shape[-2]
    if hq < 1:
        _fail("q", f"got {hq} heads, expected at least 1")
    if hkv < 1 or hq % hkv:
        _fail("k", f"got {hkv} heads with {hq} query heads, expected a divisor of heads_q (GQA)")
    if sinks is not None:
        _check_tensor("sinks", sinks, 1, torch.float32, q.device, "the ops take fp32 sinks")
        if sinks.shape[0] != hq:
            _fail("sinks", f"got shape {tuple(sinks.shape)}, expected ({hq},): one per query head")
    if varlen:
        for name, cu in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
            if not isinstance(cu, torch.Tensor):
                _fail(name, f"got {type(cu).__name__}, expected an int32 torch.Tensor (both "
                      "cu_seqlens or neither)", TypeError)
            if cu.dtype != torch.int32:
                _fail(name, f"got dtype {cu.dtype}, expected torch.int32", TypeError)
            if cu.device != q.device:
                _fail(name, f"got device {cu.device}, expected {q.device} (the device of q)")
            if cu.dim() != 1 or cu.shape[0] < 1:
                _fail(name, f"got shape {tuple(cu.shape)}, expected (num_seqs + 1,)")
        if cu_k.shape[0] != cu_q.shape[0]:
            _fail("cu_seqlens_k", f"got length {cu_k.shape[0]}, expected {cu_q.shape[0]} "
                  "(the length of cu_seqlens_q)")


def _check_like(name: str, t, like) -> None:
    """Checks a tensor that must match q's shape, dtype and device (out, dout)."""
    _check_tensor(name, t, like.dim(), like.dtype, like.device)
    if t.shape != like.shape:
        _fail(name, f"got shape {tuple(t.shape)}, expected {tuple(like.shape)}")


def _lse_shape(q, varlen: bool):
    return (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[2], q.shape[1])


def _max_seqlen(cu: torch.Tensor, name: str) -> int:
    """The longest sequence of offsets cu (a host read: a sync on CUDA). The read also shows a
    decreasing offset, which the library checks on the CPU but not on CUDA."""
    if cu.shape[0] <= 1:
        return 0
    lens = cu[1:] - cu[:-1]
    lo, hi = torch.stack([lens.min(), lens.max()]).tolist()  # one read for both
    if lo < 0:
        at = int(torch.nonzero(lens < 0)[0, 0]) + 1
        _fail(name, f"[{at}] = {int(cu[at])} is below [{at - 1}] = {int(cu[at - 1])}, expected "
              "non-decreasing offsets")
    return hi


def _max_seqlens(cu_q: torch.Tensor, cu_k: torch.Tensor) -> tuple[int, int]:
    """(max_seqlen_q, max_seqlen_k) read from the offsets (a sync on CUDA)."""
    return _max_seqlen(cu_q, "cu_seqlens_q"), _max_seqlen(cu_k, "cu_seqlens_k")


def _check_bwd(dout, q, k, v, out, lse, sinks, cu_q, cu_k) -> None:
    _check_problem(q, k, v, sinks, cu_q, cu_k)
    _check_like("out", out, q)
    _check_like("dout", dout, q)
    _check_tensor("lse", lse, 3 - (cu_q is not None), torch.float32, q.device, "lse is fp32")
    want = _lse_shape(q, cu_q is not None)
    if tuple(lse.shape) != want:
        _fail("lse", f"got shape {tuple(lse.shape)}, expected {want}")


def resolve(q, sinks, causal, window, scale, deterministic, max_seqlen_q=None, max_seqlen_k=None):
    """Checks the non-tensor arguments and returns (sinks_fp32, max_q, max_k, scale, left, right).

    window: None (unbounded), an int W >= 1 (W keys including the query itself: left = W - 1; when
    not causal also right = W - 1, a symmetric band), or an explicit (left, right) tuple whose
    entries are >= 0 or None / -1 for unbounded (right must be 0 or unbounded when causal)."""
    if not isinstance(q, _Tensor):
        _fail("q", f"got {type(q).__name__}, expected a torch.Tensor", TypeError)
    if causal is not True and causal is not False:
        _fail("causal", f"got {causal!r}, expected a bool", TypeError)
    if deterministic is not True and deterministic is not False:
        _fail("deterministic", f"got {deterministic!r}, expected a bool", TypeError)
    if window is None:  # the common case, inlined (this runs on every call)
        left, right = -1, (0 if causal else -1)
    else:
        left, right = _window(window, causal)
        left, right = int(left), int(right)
    if scale is None:
        qs = q.shape
        scale = float(qs[-1] ** -0.5 if qs and qs[-1] > 0 else 1.0)  # head_dim 0: the checks
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        _fail("scale", f"got {scale!r}, expected a finite float > 0", TypeError)
    elif not (_FP32_TINY <= scale <= _FP32_MAX):  # also refuses NaN
        _fail("scale", f"got {scale!r}, expected a finite float > 0 (the library's is fp32: "
              f"{_FP32_TINY:.3g} to {_FP32_MAX:.4g})")
    else:
        scale = float(scale)
    if sinks is not None:
        if not isinstance(sinks, _Tensor):
            _fail("sinks", f"got {type(sinks).__name__}, expected a torch.Tensor or None", TypeError)
        if sinks.dtype is not _F32:  # dtypes are singletons
            if not sinks.is_floating_point():
                _fail("sinks", f"got dtype {sinks.dtype}, expected a floating-point dtype",
                      TypeError)
            sinks = sinks.float()  # differentiable: dsink comes back in the sinks' dtype
    return (sinks, -1 if max_seqlen_q is None else _max_len("max_seqlen_q", max_seqlen_q),
            -1 if max_seqlen_k is None else _max_len("max_seqlen_k", max_seqlen_k), scale, left,
            right)


def _max_len(name, n):
    if n is None:
        return -1
    if isinstance(n, torch.SymInt):
        return n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        _fail(name, f"got {n!r}, expected an int or None", TypeError)
    if not 0 <= n <= _INT32_MAX:
        _fail(name, f"got {n}, expected 0 to {_INT32_MAX} (the library's int32 positions)")
    return int(n)


def _bound(name, x):
    if x is None:
        return -1
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        _fail("window", f"got {name} {x!r}, expected an int >= 0 or None (unbounded)", TypeError)
    if x < -1:
        _fail("window", f"got {name} {x}, expected >= 0, or -1 / None for unbounded")
    return _unbounded_past_positions(x)


def _unbounded_past_positions(x: int) -> int:
    """Positions are int32 (the core refuses larger bounds): a bound that reaches past every
    position is the same mask as no bound."""
    return -1 if x > _INT32_MAX else x


def _window(window, causal):
    if window is None:
        return -1, (0 if causal else -1)
    if isinstance(window, numbers.Integral) and not isinstance(window, bool):
        if window < 1:
            _fail("window", f"got {window}, expected an int >= 1 (keys including the query itself)")
        w = _unbounded_past_positions(window - 1)
        return w, (0 if causal else w)
    if isinstance(window, (tuple, list)) and len(window) == 2:
        left, right = _bound("left", window[0]), _bound("right", window[1])
        if causal:
            if right > 0:
                _fail("window", f"got right {right} with causal=True, expected 0 or None "
                      "(pass causal=False for a band that looks ahead)")
            right = 0
        return left, right
    _fail("window", f"got {window!r}, expected None, an int >= 1 or a (left, right) tuple", TypeError)


def _zigzag(z) -> tuple:
    """(rank, world) of a fused zigzag call as ints; the library checks their values."""
    if (not isinstance(z, (tuple, list)) or len(z) != 2
            or any(isinstance(x, bool) or not isinstance(x, numbers.Integral) for x in z)):
        _fail("zigzag", f"got {z!r}, expected a (rank, world) pair of ints", TypeError)
    return int(z[0]), int(z[1])
