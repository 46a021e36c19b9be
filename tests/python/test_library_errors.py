"""Refusals that only the C library can make map to Python exceptions with its message."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch

import sinkattn
from sinkattn import _lib, ops


def test_bad_cu_seqlens_values_refused_by_library():
    """Decreasing offsets are valid-looking tensors: the library reads them (CPU) and refuses."""
    q, k, v = torch.randn(7, 2, 64), torch.randn(7, 2, 64), torch.randn(7, 2, 64)
    cu = torch.tensor([0, 5, 3], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[2\]"):
        sinkattn.varlen_attention(q, k, v, cu, cu, 5, 5)


def test_max_seqlen_too_small_refused_by_library():
    q, k, v = torch.randn(7, 2, 64), torch.randn(7, 2, 64), torch.randn(7, 2, 64)
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    with pytest.raises(ValueError, match="max length"):
        sinkattn.varlen_attention(q, k, v, cu, cu, 2, 4)


def test_no_deferred_error_without_a_broken_cuda_call():
    """The deferred error is a CUDA packed call's (tests/python/test_cuda.py raises it); refused
    CPU calls keep none, so there is nothing to report after them."""
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    with pytest.raises(ValueError, match="max length"):
        sinkattn.varlen_attention(*(torch.randn(7, 2, 64) for _ in range(3)), cu, cu, 2, 4)
    assert sinkattn.check_deferred_error() is None
    assert _lib.deferred_error() == _lib.OK


def test_cuda_request_without_cuda_backend_is_not_implemented():
    """A build without CUDA refuses CUDA problems with NOT_SUPPORTED -> NotImplementedError (a
    RuntimeError). Driven through the raw ABI so that it runs without a GPU."""
    if _lib.HAS_CUDA:
        pytest.skip("this libsinkattn has a CUDA backend")
    q = torch.randn(1, 4, 2, 64, dtype=torch.bfloat16)
    out, lse = torch.empty_like(q), torch.empty(1, 2, 4)
    p = ops.fwd_params(q, q, q, None, None, None, -1, -1, 0.125, -1, 0, True, out, lse)
    p.problem.device_type = _lib.DEVICE_CUDA
    status = _lib.fwd_can_implement(ctypes.addressof(p))
    assert status == _lib.ERROR_NOT_SUPPORTED
    with pytest.raises(NotImplementedError, match="CUDA") as e:
        _lib.raise_for(status)
    assert isinstance(e.value, RuntimeError)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensors_without_cuda_backend_say_so():
    if _lib.HAS_CUDA:
        pytest.skip("this libsinkattn has a CUDA backend")
    q = torch.randn(1, 4, 2, 64, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(NotImplementedError, match="no CUDA backend"):
        sinkattn.attention(q, q, q)


def test_abi_version_checked():
    assert _lib.LIB.sinkattn_abi_version() == _lib.ABI_VERSION


def test_older_library_named_at_import(tmp_path):
    """A library without an entry point the bindings bind fails the import with its name."""
    src = tmp_path / "old.c"
    src.write_text("int sinkattn_version(void) { return 1; }\n")
    lib = tmp_path / "libold.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    env = dict(os.environ, SINKATTN_LIBRARY=str(lib))
    r = subprocess.run([sys.executable, "-c", "import sinkattn"], env=env, capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert f"sinkattn: {lib} has no entry point sinkattn_abi_version: it is older than" in r.stderr
