"""Runs the mutants of tests/mutation/mutants.py: applies one, runs its set's tests, restores the
file (also on Ctrl-C), and prints killed / SURVIVED per mutant; exits 1 when one survived.

    python3 tests/mutation/run.py [--set cpp|python|cp|hf|bench] [ID ...]

Expects build/cpu configured (scripts/test.sh does it) and the cached environment of
scripts/setup.sh. A file with uncommitted changes is refused: a crash could mix them up.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import mutants

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON = os.path.expanduser("~/.cache/sinkattn/venv/bin/python")
FAST_PY = ["test_plans.py", "test_attention.py", "test_layouts.py", "test_argument_sweep.py",
           "test_random_cases.py", "test_torch_integration.py", "test_refusals.py",
           "test_library_errors.py"]
SETS = {
    "cpp": (mutants.CPP, "cmake --build build/cpu -j2 --target sinkattn_tests && "
                         "timeout 300 build/cpu/tests/cpp/sinkattn_tests --gtest_brief=1"),
    "python": (mutants.PYTHON, " ".join(["timeout 900", "{py}", "-m pytest -x -q -p no:cacheprovider"]
                                        + [f"tests/python/{f}" for f in FAST_PY])),
    "cp": (mutants.CP, "timeout 900 {py} -m pytest -x -q -p no:cacheprovider "
                       "tests/python/test_cp.py tests/python/test_cp_plan.py"),
    "hf": (mutants.HF, "timeout 900 {py} -m pytest -x -q -p no:cacheprovider "
                       "tests/python/test_hf.py tests/python/test_verl.py "
                       "tests/python/test_hf_kernels_hub.py tests/python/test_flash_compat.py"),
    "bench": (mutants.BENCH, "timeout 900 {py} -m pytest -x -q -p no:cacheprovider "
                             "tests/python/test_bench.py"),
}


def run(cmd: str, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=SETS, default="cpp")
    ap.add_argument("ids", nargs="*")
    args = ap.parse_args()
    todo, cmd = SETS[args.set]
    py = PYTHON if os.path.exists(PYTHON) else sys.executable
    cmd = cmd.format(py=py)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    if args.set != "cpp":  # the Python sets run on an unmutated copy of the library
        lib = os.path.join(ROOT, "build", "cpu", "libsinkattn.so")
        env["SINKATTN_LIBRARY"] = shutil.copy(lib, os.path.join(ROOT, "build", "mutation.so"))
    survived = []
    for m in todo:
        if args.ids and m.id not in args.ids:
            continue
        if m.skip and not args.ids:
            print(f"{m.id}: skipped ({m.skip})")
            continue
        path = os.path.join(ROOT, m.file)
        if run(f"git diff --quiet -- {m.file}", env).returncode:
            sys.exit(f"{m.file} has uncommitted changes: commit or stash them first")
        src = open(path).read()
        if src.count(m.old) != 1:
            print(f"{m.id}: STALE (its old text occurs {src.count(m.old)} times in {m.file})")
            survived.append(m.id)
            continue
        t0 = time.time()
        try:
            with open(path, "w") as f:
                f.write(src.replace(m.old, m.new))
            r = run(cmd, env)
        finally:
            with open(path, "w") as f:
                f.write(src)
        lines = [x for x in r.stdout.splitlines() if "FAILED" in x or "ERROR" in x]
        verdict = "killed" if r.returncode else "SURVIVED"
        if not r.returncode:
            survived.append(m.id)
        print(f"{m.id}: {verdict} ({time.time() - t0:.0f} s) {lines[0][:120] if lines else ''}",
              flush=True)
    if args.set == "cpp":  # leave the build unmutated
        run("cmake --build build/cpu -j2", env)
    print(f"survived: {', '.join(survived) or 'none'}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
