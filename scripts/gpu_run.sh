#!/usr/bin/env bash
# One call on the lent GPU machine: the C++ test grid on the GPU (CPU and CUDA cases), then the
# benchmark suite with the peers in the same process. Expects a CUDA build in build/cuda (carried,
# or built here when absent). Results go to $OUT (the device tool brings them back).
#   usage: scripts/gpu_run.sh [quick|full]
set -uo pipefail
cd "$(dirname "$0")/.."
suite="${1:-quick}"
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if [ ! -x build/cuda/tests/cpp/sinkattn_tests ]; then
  cmake -S . -B build/cuda -G Ninja -DSINKATTN_CUDA=ON -DSINKATTN_PORTABLE_ARCHS=90 \
    -DSINKATTN_BUILD_BENCH=OFF >/dev/null && cmake --build build/cuda -j 16 >/dev/null || exit 1
fi
export LD_LIBRARY_PATH="$PWD/build/cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SINKATTN_LIBRARY="$PWD/build/cuda/libsinkattn.so" PYTHONPATH="$PWD/python" PYTHONUNBUFFERED=1
export SINKATTN_COMMIT="${SINKATTN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
echo "=== C++ test grid (CPU + CUDA cases)"
build/cuda/tests/cpp/sinkattn_tests --gtest_brief=1 > "$OUT/gtest.log" 2>&1
tests_rc=$?
grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests from .* ran" "$OUT/gtest.log" | head -20
echo "=== benchmark, suite $suite"
python3 -m sinkattn.bench --suite "$suite" --device cuda --out "$OUT/bench" --no-progress \
  > "$OUT/bench.log" 2>&1
bench_rc=$?
tail -40 "$OUT/bench.log"
tar czf "$OUT/bench.tgz" -C "$OUT" bench && rm -rf "$OUT/bench"  # few files come back
echo "tests rc=$tests_rc bench rc=$bench_rc"
