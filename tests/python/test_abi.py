"""The ctypes mirror of the C structs (and the struct formats ops.py packs with) match the header."""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess

import pytest

from sinkattn import _lib

HEADER_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "include")
STRUCTS = {"sinkattn_tensor": _lib.Tensor, "sinkattn_problem": _lib.Problem,
           "sinkattn_fwd_params": _lib.FwdParams, "sinkattn_bwd_params": _lib.BwdParams}


def _flat_fields(cls, prefix="", base=0):
    """(dotted name, offset) of every scalar field, nested structs expanded."""
    for name, ctype in cls._fields_:
        off = base + getattr(cls, name).offset
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            yield from _flat_fields(ctype, f"{prefix}{name}.", off)
        else:
            yield prefix + name, off


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_ctypes_layout_matches_header(tmp_path):
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "sinkattn/sinkattn.h"',
             "int main(void) {"]
    for cname, cls in STRUCTS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof({cname}));')
        for field, _ in _flat_fields(cls):
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof({cname}, {field}));')
    lines += ["return 0; }"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-I", HEADER_DIR, str(src), "-o", str(exe)], check=True)
    got = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    want = []
    for cname, cls in STRUCTS.items():
        want.append(f"{cname} size {ctypes.sizeof(cls)}")
        want += [f"{cname} {field} {off}" for field, off in _flat_fields(cls)]
    assert got[:-1] == want


class _Tail(ctypes.Structure):  # C pads it to 16 bytes; struct formats do not pad at the end
    _fields_ = [("a", ctypes.c_int64), ("b", ctypes.c_int32)]


class _GrownProblem(ctypes.Structure):  # the problem with two more int32 fields, as ABIs grow
    _fields_ = _lib.Problem._fields_ + [("x", ctypes.c_int32), ("y", ctypes.c_int32)]


class _Extended(ctypes.Structure):
    _fields_ = [("problem", _GrownProblem), ("tail", _Tail), ("c", ctypes.c_int32),
                ("d", ctypes.c_void_p)]


@pytest.mark.parametrize("pack,cls", [
    (_lib.PACK_FWD, _lib.FwdParams), (_lib.PACK_BWD, _lib.BwdParams),
    (struct.Struct("@" + _lib._format(_Extended)), _Extended)])
def test_pack_formats_match_ctypes(pack, cls):
    """Packing 1, 2, 3, ... must put value n into the n-th field."""
    assert pack.size == ctypes.sizeof(cls)
    values = list(range(1, len(list(_flat_fields(cls))) + 1))
    p = cls()
    pack.pack_into(p, 0, *values)
    read = []

    def walk(obj):
        for name, ctype in obj._fields_:
            x = getattr(obj, name)
            if isinstance(x, ctypes.Structure):
                walk(x)
            else:
                read.append(x)
    walk(p)
    assert read == values


def test_word_indices_name_the_fields():
    """ops.py patches pointers by word index: check the indices against ctypes attribute access."""
    p = _lib.FwdParams()
    words = _lib.FwdWords.from_buffer(p)
    words[_lib.word(_lib.FwdParams, "problem.k.data")] = 0x1234
    words[_lib.word(_lib.FwdParams, "lse")] = 0x5678
    assert p.problem.k.data == 0x1234 and p.lse == 0x5678
    pointers = _lib.pointer_words(_lib.BwdParams)
    assert len(pointers) == sum(t is ctypes.c_void_p for t in _leaf_types(_lib.BwdParams))


def _leaf_types(cls):
    for _, t in cls._fields_:
        if issubclass(t, ctypes.Structure):
            yield from _leaf_types(t)
        else:
            yield t
