"""`cmake --install` (README): the installed tree, moved to another folder, serves a C program
through the CMake package (find_package(sinkattn) -> sinkattn::sinkattn) and through pkg-config,
and the program (examples/c_example.c, which checks a row against a direct computation) runs.
The library exports the C API only, even with libstdc++ linked into it statically."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_CONSUMER = """cmake_minimum_required(VERSION 3.22)
project(consumer C)
find_package(sinkattn 0.1 CONFIG REQUIRED)
add_executable(c_example {src})
target_link_libraries(c_example PRIVATE sinkattn::sinkattn m)
"""


def _run(*cmd, **kw):
    return subprocess.run(list(map(str, cmd)), check=True, capture_output=True, text=True, **kw)


@functools.lru_cache(maxsize=None)
def _static_libstdcxx() -> bool:
    """Whether the C++ compiler can link libstdc++ statically (has libstdc++.a)."""
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        return False
    found = subprocess.run([cxx, "-print-file-name=libstdc++.a"], capture_output=True, text=True)
    return os.path.isabs(found.stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The CPU library installed into one prefix, then moved to another (relocatable); libstdc++
    linked in statically where the compiler can (as the GPU machine's g++ does by default)."""
    if not (shutil.which("cmake") and shutil.which("cc")):
        pytest.skip("needs cmake and a C compiler")
    tmp = tmp_path_factory.mktemp("install")
    static = ["-DCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++"] if _static_libstdcxx() else []
    _run("cmake", "-S", ROOT, "-B", tmp / "build", "-DSINKATTN_CUDA=OFF", "-DSINKATTN_BUILD_TESTS=OFF",
         "-DSINKATTN_BUILD_BENCH=OFF", f"-DCMAKE_INSTALL_PREFIX={tmp / 'first'}", *static)
    _run("cmake", "--build", tmp / "build", "-j", os.cpu_count() or 1)
    _run("cmake", "--install", tmp / "build")
    (tmp / "first").rename(tmp / "moved")
    return tmp / "moved"


def test_cmake_package(installed, tmp_path):
    (tmp_path / "CMakeLists.txt").write_text(_CONSUMER.format(src=ROOT / "examples" / "c_example.c"))
    _run("cmake", "-S", tmp_path, "-B", tmp_path / "b", f"-DCMAKE_PREFIX_PATH={installed}")
    _run("cmake", "--build", tmp_path / "b")
    out = _run(tmp_path / "b" / "c_example").stdout  # the imported target's path in its RPATH
    assert out.rstrip().endswith("ok"), out


@pytest.mark.skipif(not shutil.which("pkg-config"), reason="needs pkg-config")
def test_pkg_config(installed, tmp_path):
    pc = next(installed.glob("lib*/**/pkgconfig/sinkattn.pc"))
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc.parent))
    flags = _run("pkg-config", "--cflags", "--libs", "sinkattn", env=env).stdout.split()
    assert _run("pkg-config", "--modversion", "sinkattn", env=env).stdout.strip().startswith("0.")
    _run("cc", "-o", tmp_path / "c_example", ROOT / "examples" / "c_example.c", *flags, "-lm")
    libdir = next(f[2:] for f in flags if f.startswith("-L"))
    out = _run(tmp_path / "c_example", env=dict(os.environ, LD_LIBRARY_PATH=libdir)).stdout
    assert out.rstrip().endswith("ok"), out


@pytest.mark.skipif(not (shutil.which("nm") and shutil.which("readelf")), reason="needs binutils")
def test_exports_only_the_c_api(installed):
    """Only sinkattn_* symbols are dynamic (cmake/sinkattn.map). A libstdc++ linked in statically
    exported its own before: they interposed with the process's libstdc++ (torch's), and on the
    GPU machine every refusal with a number in it crashed inside the ostream that formats it."""
    lib = next(installed.glob("lib*/libsinkattn.so"))
    needed = _run("readelf", "-d", lib).stdout
    if _static_libstdcxx():  # the case that matters is the one built here
        assert "libstdc++" not in needed, needed
    names = [line.split()[-1] for line in _run("nm", "-D", "--defined-only", lib).stdout.splitlines()]
    assert "sinkattn_fwd" in names and "sinkattn_last_error" in names, names
    assert [n for n in names if not n.startswith("sinkattn_")] == []
