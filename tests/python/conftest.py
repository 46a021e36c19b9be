"""Shared pytest setup: import the package (the development tree when SINKATTN_LIBRARY names a
build, else the installed copy), poison library outputs with NaN, seed per test."""

from __future__ import annotations

import os
import random
import sys
import zlib

import pytest
import torch

_PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))


def _use_source_tree():
    # Also for subprocesses that tests start.
    sys.path.insert(0, _PYTHON_DIR)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PYTHON_DIR, os.environ.get("PYTHONPATH")) if p)


if os.environ.get("SINKATTN_LIBRARY"):
    _use_source_tree()
try:
    import sinkattn  # noqa: E402
except ImportError:
    _use_source_tree()
    import sinkattn  # noqa: E402,F401

from sinkattn import ops  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

# Fresh inputs every run (DESIGN.md); SINKATTN_TEST_SEED=<n> replays a run.
_SEED = int(os.environ.get("SINKATTN_TEST_SEED", random.SystemRandom().randrange(2**31)))
os.environ["SINKATTN_TEST_SEED"] = str(_SEED)  # for modules that draw cases at import


def pytest_report_header(config):
    return f"sinkattn {sinkattn.__version__} from {sinkattn._lib.LIBRARY_PATH}; " \
           f"SINKATTN_TEST_SEED={_SEED}"


@pytest.fixture(autouse=True)
def _poison_and_seed(request):
    """Every output buffer the library should fill starts as NaN; inputs seeded per test from the
    run's seed and the test's id."""
    ops._poison_outputs = True
    torch.manual_seed(_SEED ^ zlib.crc32(request.node.nodeid.encode()))
    yield
    ops._poison_outputs = False
    ops._eager_fast_path = True
    # A test that made a packed CUDA call with broken offsets must take the error it leaves
    # (sinkattn.check_deferred_error), or the next test's first CUDA call would raise it.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        sinkattn.check_deferred_error()
