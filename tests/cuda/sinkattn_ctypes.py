"""Minimal ctypes binding of the sinkattn C ABI for the standalone CUDA checks (torch tensors in,
data pointers out). Mirrors include/sinkattn/sinkattn.h field for field."""
import ctypes
import math

import torch

OK = 0
FLOAT16, BFLOAT16 = 1, 2
DTYPES = {torch.float16: FLOAT16, torch.bfloat16: BFLOAT16}


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("batch_stride", ctypes.c_int64),
                ("row_stride", ctypes.c_int64), ("head_stride", ctypes.c_int64)]


class Problem(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_index", ctypes.c_int32),
                ("dtype", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("batch", ctypes.c_int64), ("seqlen_q", ctypes.c_int64),
                ("seqlen_k", ctypes.c_int64), ("heads_q", ctypes.c_int64),
                ("heads_kv", ctypes.c_int64), ("q", Tensor), ("k", Tensor), ("v", Tensor),
                ("sinks", ctypes.c_void_p), ("cu_seqlens_q", ctypes.c_void_p),
                ("cu_seqlens_k", ctypes.c_void_p), ("total_q", ctypes.c_int64),
                ("total_k", ctypes.c_int64), ("scale", ctypes.c_float),
                ("causal", ctypes.c_int32), ("window_left", ctypes.c_int64),
                ("window_right", ctypes.c_int64), ("stream", ctypes.c_void_p),
                ("zigzag_rank", ctypes.c_int32), ("zigzag_world", ctypes.c_int32)]


class FwdParams(ctypes.Structure):
    _fields_ = [("problem", Problem), ("out", Tensor), ("lse", ctypes.c_void_p),
                ("workspace", ctypes.c_void_p), ("workspace_size", ctypes.c_size_t)]


class BwdParams(ctypes.Structure):
    _fields_ = [("problem", Problem), ("out", Tensor), ("dout", Tensor), ("lse", ctypes.c_void_p),
                ("dq", Tensor), ("dk", Tensor), ("dv", Tensor), ("dsink", ctypes.c_void_p),
                ("deterministic", ctypes.c_int32), ("workspace", ctypes.c_void_p),
                ("workspace_size", ctypes.c_size_t)]


def tensor(t, varlen):
    """(B, S, H, D) or packed (T, H, D) torch tensor -> sinkattn_tensor."""
    if t is None:
        return Tensor(None, 0, 0, 0)
    if varlen:
        return Tensor(t.data_ptr(), 0, t.stride(0), t.stride(1))
    return Tensor(t.data_ptr(), t.stride(0), t.stride(1), t.stride(2))


def ptr(t):
    return None if t is None else t.data_ptr()


class Lib:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.sinkattn_last_error.restype = ctypes.c_char_p
        self.lib.sinkattn_fwd_kernel.restype = ctypes.c_char_p
        self.lib.sinkattn_fwd_kernel.argtypes = [ctypes.POINTER(FwdParams)]
        self.lib.sinkattn_bwd_kernel.restype = ctypes.c_char_p
        self.lib.sinkattn_bwd_kernel.argtypes = [ctypes.POINTER(BwdParams)]
        for name, ty in (("fwd", FwdParams), ("bwd", BwdParams)):
            getattr(self.lib, f"sinkattn_{name}").argtypes = [ctypes.POINTER(ty)]
            getattr(self.lib, f"sinkattn_{name}_workspace_size").argtypes = [
                ctypes.POINTER(ty), ctypes.POINTER(ctypes.c_size_t)]
        self.ws_cache = {}

    def _call(self, fn, params):
        st = fn(ctypes.byref(params))
        if st != OK:
            raise RuntimeError(f"status {st}: {self.lib.sinkattn_last_error().decode()}")

    def _workspace(self, kind, params):
        n = ctypes.c_size_t(0)
        self._call(lambda p: getattr(self.lib, f"sinkattn_{kind}_workspace_size")(p, ctypes.byref(n)),
                   params)
        if n.value == 0:
            return None
        buf = self.ws_cache.get(kind)
        if buf is None or buf.numel() < n.value:
            buf = torch.empty(n.value, dtype=torch.uint8, device="cuda")
            self.ws_cache[kind] = buf
        params.workspace = buf.data_ptr()
        params.workspace_size = buf.numel()
        return buf

    @staticmethod
    def problem(q, k, v, *, sinks=None, causal=False, left=-1, right=-1, scale=None,
                cu_q=None, cu_k=None, max_q=0, max_k=0):
        varlen = cu_q is not None
        p = Problem()
        p.device_type = 1
        p.device_index = q.device.index or 0
        p.dtype = DTYPES[q.dtype]
        p.head_dim = q.shape[-1]
        if varlen:
            p.batch = cu_q.numel() - 1
            p.seqlen_q, p.seqlen_k = max_q, max_k
            p.total_q, p.total_k = q.shape[0], k.shape[0]
        else:
            p.batch, p.seqlen_q, p.seqlen_k = q.shape[0], q.shape[1], k.shape[1]
        p.heads_q, p.heads_kv = q.shape[-2], k.shape[-2]
        p.q, p.k, p.v = tensor(q, varlen), tensor(k, varlen), tensor(v, varlen)
        p.sinks = ptr(sinks)
        p.cu_seqlens_q, p.cu_seqlens_k = ptr(cu_q), ptr(cu_k)
        p.scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        p.causal = 1 if causal else 0
        p.window_left, p.window_right = left, right
        p.stream = torch.cuda.current_stream().cuda_stream
        return p

    def _fwd_params(self, problem, out, lse):
        varlen = problem.cu_seqlens_q is not None
        f = FwdParams(problem, tensor(out, varlen), ptr(lse), None, 0)
        self._workspace("fwd", f)
        return f

    def _bwd_params(self, problem, out, dout, lse, dq, dk, dv, dsink, deterministic):
        varlen = problem.cu_seqlens_q is not None
        b = BwdParams(problem, tensor(out, varlen), tensor(dout, varlen), ptr(lse),
                      tensor(dq, varlen), tensor(dk, varlen), tensor(dv, varlen), ptr(dsink),
                      1 if deterministic else 0, None, 0)
        self._workspace("bwd", b)
        return b

    def _kernel(self, entry, params):
        name = entry(ctypes.byref(params))
        return name.decode() if name else "refused: " + self.lib.sinkattn_last_error().decode()

    def fwd(self, problem, out, lse):
        self._call(self.lib.sinkattn_fwd, self._fwd_params(problem, out, lse))

    def fwd_kernel(self, problem, out, lse):
        """The kernel family sinkattn_fwd would run (and why not a faster one)."""
        return self._kernel(self.lib.sinkattn_fwd_kernel, self._fwd_params(problem, out, lse))

    def bwd_kernel(self, problem, *args):
        """The kernel family sinkattn_bwd would run (and why not a faster one); args as bwd's."""
        return self._kernel(self.lib.sinkattn_bwd_kernel, self._bwd_params(problem, *args))

    def bwd(self, problem, out, dout, lse, dq, dk, dv, dsink, deterministic):
        self._call(self.lib.sinkattn_bwd,
                   self._bwd_params(problem, out, dout, lse, dq, dk, dv, dsink, deterministic))
