"""`pip install .` (README): the wheel builds without torch at build time, holds the library and
the headers and nothing of the tests or docs, and the installed package loads its own library
(no SINKATTN_LIBRARY, no source tree on the path) and computes the contract's result."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run by the installed package in a clean environment: it must find sinkattn/lib/ next to itself.
_SMOKE = r"""
import math, sys, torch, sinkattn
from sinkattn import _lib
assert _lib.LIBRARY_PATH.startswith(sys.argv[1]), _lib.LIBRARY_PATH
torch.manual_seed(0)
q, k, v = torch.randn(1, 9, 2, 32), torch.randn(1, 9, 1, 32), torch.randn(1, 9, 1, 32)
sinks = torch.tensor([0.5, -1.0])
out = sinkattn.attention(q, k, v, sinks, causal=True)
# The contract written out for one row: the last query sees every key, the sink joins the sum.
h, i = 1, 8
x = [float(q[0, i, h] @ k[0, j, 0]) / math.sqrt(32) for j in range(9)]
w = [math.exp(a) for a in x]
den = sum(w) + math.exp(float(sinks[h]))
want = sum(w[j] * v[0, j, 0] for j in range(9)) / den
assert torch.allclose(out[0, i, h], want, atol=1e-5), (out[0, i, h], want)
print("ok", _lib.LIBRARY_PATH)
"""


@pytest.mark.skipif(importlib.util.find_spec("scikit_build_core") is None or not shutil.which("cmake"),
                    reason="building the wheel needs scikit-build-core and cmake")
def test_wheel_builds_installs_and_runs(tmp_path):
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    pip = [sys.executable, "-m", "pip"]
    # The CPU library only (a CUDA build takes many minutes); no network: no build isolation.
    subprocess.run(pip + ["wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(tmp_path / "dist"),
                          str(ROOT), "-C", "cmake.define.SINKATTN_CUDA=OFF",
                          "-C", f"build-dir={tmp_path / 'build'}"], check=True, env=env)
    (wheel,) = (tmp_path / "dist").glob("sinkattn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("sinkattn/lib/libsinkattn.so", "sinkattn/include/sinkattn/sinkattn.h",
                 "sinkattn/__init__.py", "sinkattn/hf/__init__.py"):
        assert want in names, f"{want} missing from {wheel.name}"
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/", "build/"))]

    site = tmp_path / "site"
    subprocess.run(pip + ["install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, env=env)
    clean = {k: v for k, v in env.items() if k not in ("SINKATTN_LIBRARY", "PYTHONPATH")}
    # torch comes from this interpreter's own site-packages; sinkattn only from the target.
    run = subprocess.run([sys.executable, "-c", _SMOKE, str(site)], env=dict(clean, PYTHONPATH=str(site)),
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok")
