#!/usr/bin/env bash
# One call on the lent 2-GPU machine (nvidia-h200-x2): context parallelism over NCCL.
#   1. tests/python/test_cp.py::test_cp_nccl: every mode (all-gather fused and unfused, ring,
#      zigzag ring, halo, Ulysses) x fixed/varlen x masks x sinks x GQA/MQA, bf16, world 2,
#      forward + backward under the DESIGN.md tolerance rule; the fused zigzag runs with verify.
#   2. python -m sinkattn.cp.bench: per-GPU fwd+bwd efficiency of every mode against one GPU on
#      the whole sequence, gptoss and llama shapes, 64k tokens in total.
# Expects a CUDA build in build/cuda (carried, or built here when absent). Each section has its
# own time limit so the whole call stays under 5 minutes; logs, CSV and the table go to $OUT.
#   usage: scripts/gpu_cp.sh [tokens]   env: TEST_S, BENCH_S (section limits, seconds), TORCH_CP=1,
#          PROFILE="halo-w128 ..." (kernel tables of those modes)
set -uo pipefail
cd "$(dirname "$0")/.."
tokens="${1:-65536}"
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
# NVLink multicast stays off (the lent machines' rule; see the device notes).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if [ ! -f build/cuda/libsinkattn.so ]; then
  timeout 240 sh -c 'cmake -S . -B build/cuda -G Ninja -DSINKATTN_CUDA=ON \
    -DSINKATTN_PORTABLE_ARCHS=90 -DSINKATTN_BUILD_BENCH=OFF -DSINKATTN_BUILD_TESTS=OFF \
    >/dev/null && cmake --build build/cuda -j 32 >/dev/null' || { echo "CUDA build failed"; exit 1; }
fi
export SINKATTN_LIBRARY="$PWD/build/cuda/libsinkattn.so" PYTHONPATH="$PWD/python" PYTHONUNBUFFERED=1

start=$(date +%s)
# section NAME LIMIT_S CMD...: runs CMD under a time limit, log in $OUT/NAME.log, prints its tail.
section() {
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s, at $(( $(date +%s) - start ))s)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc = 124 ] && echo "$name: TIMED OUT after ${limit}s"
  echo "$name rc=$rc"
  return $rc
}

section cp_nccl_tests "${TEST_S:-120}" python3 -m pytest -q -p no:cacheprovider \
  tests/python/test_cp.py -k nccl -rs
tests_rc=$?
tail -5 "$OUT/cp_nccl_tests.log"

# TORCH_CP=1 adds PyTorch's own context_parallel (SDPA, no sinks) as the peer, after the rest.
section cp_bench "${BENCH_S:-150}" torchrun --standalone --nproc_per_node 2 -m sinkattn.cp.bench \
  --tokens "$tokens" --csv "$OUT/cp_bench.csv" --budget-s $(( ${BENCH_S:-150} - 40 )) \
  ${TORCH_CP:+--torch-cp} ${PROFILE:+--profile $PROFILE}
bench_rc=$?
# PROFILE="mode ..." adds rank 0's kernel table of those modes (torch.profiler, 3 steps).
awk '/^profile,/{p=1} p{print} /Self CUDA time total/{p=0}' "$OUT/cp_bench.log" | cut -c1-160
grep -v "^{" "$OUT/cp_bench.log" | tail -25 | tee "$OUT/cp_table.txt"
echo "total $(( $(date +%s) - start ))s; tests rc=$tests_rc bench rc=$bench_rc"
