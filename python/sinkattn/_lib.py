"""Loads libsinkattn and mirrors its C ABI (include/sinkattn/sinkattn.h) with ctypes.

This is the only module that knows the C structs and entry points. Everything here works on raw
addresses and ints; torch tensors are turned into those by ops.py.

Where the library is looked for, in order:
  1. the path in the environment variable SINKATTN_LIBRARY (a development build);
  2. next to this file: the copy `pip install .` puts in the package (``sinkattn/lib/``);
  3. the system loader's search path (``ctypes.util.find_library("sinkattn")``), e.g. after
     ``cmake --install`` into /usr/local.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import struct

# Must equal SINKATTN_ABI_VERSION of the header these structs mirror.
ABI_VERSION = 2

# sinkattn_status
OK = 0
ERROR_INVALID_ARGUMENT = 1
ERROR_NOT_SUPPORTED = 2
ERROR_CUDA = 3
ERROR_INTERNAL = 4

# sinkattn_dtype and sinkattn_device_type
FLOAT32, FLOAT16, BFLOAT16 = 0, 1, 2
DEVICE_CPU, DEVICE_CUDA = 0, 1


class Tensor(ctypes.Structure):
    """sinkattn_tensor: a strided (batch, row, head, head_dim) view; strides in elements."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("batch_stride", ctypes.c_int64),
        ("row_stride", ctypes.c_int64),
        ("head_stride", ctypes.c_int64),
    ]


class Problem(ctypes.Structure):
    """sinkattn_problem: the attention problem shared by both directions."""

    _fields_ = [
        ("device_type", ctypes.c_int32),
        ("device_index", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("batch", ctypes.c_int64),
        ("seqlen_q", ctypes.c_int64),
        ("seqlen_k", ctypes.c_int64),
        ("heads_q", ctypes.c_int64),
        ("heads_kv", ctypes.c_int64),
        ("q", Tensor),
        ("k", Tensor),
        ("v", Tensor),
        ("sinks", ctypes.c_void_p),
        ("cu_seqlens_q", ctypes.c_void_p),
        ("cu_seqlens_k", ctypes.c_void_p),
        ("total_q", ctypes.c_int64),
        ("total_k", ctypes.c_int64),
        ("scale", ctypes.c_float),
        ("causal", ctypes.c_int32),
        ("window_left", ctypes.c_int64),
        ("window_right", ctypes.c_int64),
        ("stream", ctypes.c_void_p),
        ("zigzag_rank", ctypes.c_int32),
        ("zigzag_world", ctypes.c_int32),
    ]


class FwdParams(ctypes.Structure):
    """sinkattn_fwd_params."""

    _fields_ = [
        ("problem", Problem),
        ("out", Tensor),
        ("lse", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_size", ctypes.c_size_t),
    ]


class BwdParams(ctypes.Structure):
    """sinkattn_bwd_params."""

    _fields_ = [
        ("problem", Problem),
        ("out", Tensor),
        ("dout", Tensor),
        ("lse", ctypes.c_void_p),
        ("dq", Tensor),
        ("dk", Tensor),
        ("dv", Tensor),
        ("dsink", ctypes.c_void_p),
        ("deterministic", ctypes.c_int32),
        ("workspace", ctypes.c_void_p),
        ("workspace_size", ctypes.c_size_t),
    ]


# The same layouts as struct formats ("@": native sizes and C alignment), derived from the ctypes
# fields so that a new field needs only its _fields_ entry (and its value where ops.py packs). A
# call without a cached plan fills a whole params struct with one pack_into call (~1 us) instead of
# ~40 ctypes attribute writes (~4 us). tests/python/test_abi.py checks every field offset against
# the ctypes structs above and the C header.
_CODES = {ctypes.c_int32: "i", ctypes.c_int64: "q", ctypes.c_float: "f", ctypes.c_void_p: "P",
          ctypes.c_size_t: "N"}


def _format(cls) -> str:
    """The struct format of cls with C's tail padding as pad bytes ("x"), which struct omits."""
    fmt = "".join(_format(t) if issubclass(t, ctypes.Structure) else _CODES[t]
                  for _, t in cls._fields_)
    return fmt + "x" * (ctypes.sizeof(cls) - struct.calcsize("@" + fmt))


def _offset(cls, dotted: str) -> int:
    """Byte offset of a (nested, dotted) field, e.g. "problem.q.data"."""
    off = 0
    for name in dotted.split("."):
        field = getattr(cls, name)
        off += field.offset
        cls = dict(cls._fields_)[name]
    return off


def word(cls, dotted: str) -> int:
    """Index of an 8-byte field (pointer, int64, size_t) in the struct viewed as uint64 words."""
    off = _offset(cls, dotted)
    assert off % 8 == 0, dotted
    return off // 8


def pointer_words(cls, base=0) -> list:
    """Word indices of every pointer field, nested structs included (see FwdWords)."""
    found = []
    for name, t in cls._fields_:
        off = base + getattr(cls, name).offset
        if issubclass(t, ctypes.Structure):
            found += pointer_words(t, off)
        elif t is ctypes.c_void_p:
            found.append(off // 8)
    return found


PACK_FWD = struct.Struct("@" + _format(FwdParams))
PACK_BWD = struct.Struct("@" + _format(BwdParams))
assert PACK_FWD.size == ctypes.sizeof(FwdParams) and PACK_BWD.size == ctypes.sizeof(BwdParams)
# Where the size queries write their answer: the params' own workspace_size field (no extra object).
FWD_WS_SIZE_OFFSET = FwdParams.workspace_size.offset
BWD_WS_SIZE_OFFSET = BwdParams.workspace_size.offset
# The params as arrays of uint64 words: a cached copy gets its data pointers patched by index
# (ops.py), ~25 ns a pointer. Every struct is a multiple of 8 bytes (it holds pointers).
FwdWords = ctypes.c_uint64 * (ctypes.sizeof(FwdParams) // 8)
BwdWords = ctypes.c_uint64 * (ctypes.sizeof(BwdParams) // 8)


def _candidates():
    env = os.environ.get("SINKATTN_LIBRARY")
    if env:
        # An explicit choice must not silently fall back to another copy.
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    found = []
    for sub in ("lib", "lib64", "."):
        found += sorted(glob.glob(os.path.join(here, sub, "libsinkattn.so*")))
        found += sorted(glob.glob(os.path.join(here, sub, "libsinkattn*.dylib")))
    system = ctypes.util.find_library("sinkattn")
    if system:
        found.append(system)
    return found


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append(f"{path}: {e}")
    raise ImportError(
        "sinkattn: cannot load libsinkattn. Set SINKATTN_LIBRARY to the path of libsinkattn.so, "
        "or install the package with `pip install .`. Tried: " + ("; ".join(tried) or "nothing found")
    )


LIB, LIBRARY_PATH = _load()

_P = ctypes.c_void_p
for _name, _args, _res in [
    ("sinkattn_version", [], ctypes.c_int),
    ("sinkattn_abi_version", [], ctypes.c_int),
    ("sinkattn_last_error", [], ctypes.c_char_p),
    ("sinkattn_has_cuda", [], ctypes.c_int),
    ("sinkattn_deferred_error", [], ctypes.c_int),
    ("sinkattn_fwd_workspace_size", [_P, _P], ctypes.c_int),
    ("sinkattn_bwd_workspace_size", [_P, _P], ctypes.c_int),
    ("sinkattn_fwd_can_implement", [_P], ctypes.c_int),
    ("sinkattn_bwd_can_implement", [_P], ctypes.c_int),
    ("sinkattn_fwd", [_P], ctypes.c_int),
    ("sinkattn_bwd", [_P], ctypes.c_int),
    ("sinkattn_fwd_kernel", [_P], ctypes.c_char_p),
    ("sinkattn_bwd_kernel", [_P], ctypes.c_char_p),
]:
    try:
        _fn = getattr(LIB, _name)
    except AttributeError:  # a library older than these bindings (the ABI version counts layouts)
        raise ImportError(
            f"sinkattn: {LIBRARY_PATH} has no entry point {_name}: it is older than these Python "
            "bindings; rebuild the library and the package from the same source"
        ) from None
    _fn.argtypes = _args
    _fn.restype = _res

if LIB.sinkattn_abi_version() != ABI_VERSION:
    raise ImportError(
        f"sinkattn: {LIBRARY_PATH} has ABI version {LIB.sinkattn_abi_version()}, these Python "
        f"bindings expect {ABI_VERSION}; rebuild the library and the package from the same source"
    )

VERSION = LIB.sinkattn_version()
HAS_CUDA = bool(LIB.sinkattn_has_cuda())

# Entry points bound once; calls pass addresses (ints), the cheapest ctypes conversion.
fwd_workspace_size = LIB.sinkattn_fwd_workspace_size
bwd_workspace_size = LIB.sinkattn_bwd_workspace_size
fwd = LIB.sinkattn_fwd
bwd = LIB.sinkattn_bwd
fwd_can_implement = LIB.sinkattn_fwd_can_implement
bwd_can_implement = LIB.sinkattn_bwd_can_implement
fwd_kernel = LIB.sinkattn_fwd_kernel
bwd_kernel = LIB.sinkattn_bwd_kernel
deferred_error = LIB.sinkattn_deferred_error


def raise_for(status: int) -> None:
    """Turns a failed status into the Python exception that carries the library's message."""
    msg = LIB.sinkattn_last_error().decode("utf-8", "replace")
    if status == ERROR_INVALID_ARGUMENT:
        raise ValueError(msg)
    if status == ERROR_NOT_SUPPORTED:
        raise NotImplementedError(msg)  # a RuntimeError subclass
    raise RuntimeError(msg or f"sinkattn: status {status}")
