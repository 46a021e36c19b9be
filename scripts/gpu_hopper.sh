#!/usr/bin/env bash
# GPU machine, one call: the standalone checker (tests/cuda/check_cuda.py) on the carried CUDA build
# in build/cuda: the shape grid against fp64 on the default path (the sm90 forward where it
# applies), compute-sanitizer memcheck on the small grid, the C++ test grid on both paths, then
# the timings of both paths and the SDPA peer side by side. Results under $OUT.
#   usage: scripts/gpu_hopper.sh   env: LIB, GRID_PATHS, GTEST_PATHS, VARIANTS, SKIP_GTEST=1, SKIP_SANITIZER=1
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
LIB="${LIB:-$PWD/build/cuda/libsinkattn.so}"  # LIB= another build (grid and timings)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
echo "commit ${SINKATTN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
t0=$(date +%s)
# GRID_PATHS / GTEST_PATHS entries: a path, optionally with comma-joined env settings (gpu_grid.sh).
bash scripts/gpu_grid.sh "$LIB" ${GRID_PATHS:-auto auto,SINKATTN_SM90_PERSISTENT=3 auto,SINKATTN_SM90_SHORT_ROWS=0 auto,SINKATTN_BWD_KV_GROUP=1 sm80 sm80,SINKATTN_SM80_TILES=small,SINKATTN_BWD_KV_GROUP=1}
echo "grid: $(( $(date +%s) - t0 )) s"
if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  ( cd tests/cuda && SINKATTN_SM90_PERSISTENT=3 timeout 240 compute-sanitizer --tool memcheck --kernel-name kns=sinkattn \
      python3 check_cuda.py "$LIB" --small --no-bench ) > "$OUT/memcheck.log" 2>&1
  grep -E "ERROR SUMMARY|GRID|FAIL" "$OUT/memcheck.log" | tail -5
  echo "memcheck: $(( $(date +%s) - t0 )) s"
fi
if [ "${SKIP_GTEST:-0}" != 1 ] && [ -x build/cuda/tests/cpp/sinkattn_tests ]; then
  for entry in ${GTEST_PATHS:-auto auto,SINKATTN_SM90_PERSISTENT=2 sm80 sm80,SINKATTN_SM80_TILES=small}; do
    IFS=, read -r path envs <<< "$entry"; tag=${entry//[^A-Za-z0-9]/_}
    env SINKATTN_CUDA_PATH=$path ${envs//,/ } build/cuda/tests/cpp/sinkattn_tests --gtest_brief=1 > "$OUT/gtest_$tag.log" 2>&1
    echo "gtest ($entry): rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/gtest_$tag.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]' "$OUT/gtest_$tag.log" | head -8
  done
  echo "gtest: $(( $(date +%s) - t0 )) s"
fi
# Timing variants: each a comma-joined list of VAR=value settings for one check_cuda.py run, or
# "-" for the defaults; LIB=path times another build (e.g. the previous commit's library).
for variant in ${VARIANTS-SINKATTN_CUDA_PATH=sm80 SINKATTN_SM90_PINGPONG=0 -}; do
  lib=$LIB; envs=()
  for kv in ${variant//,/ }; do
    case $kv in -) ;; LIB=*) lib=$(realpath "${kv#LIB=}") ;; *) envs+=("$kv") ;; esac
  done
  tag=${variant//[^A-Za-z0-9]/_}
  echo "=== timings: $variant"
  ( cd tests/cuda && env "${envs[@]}" python3 check_cuda.py "$lib" --no-grid ) > "$OUT/bench_$tag.log" 2>&1
  grep -E "forward kernel" "$OUT/bench_$tag.log" | head -4
  sed -n '/^shape/,$p' "$OUT/bench_$tag.log"
done
echo "total: $(( $(date +%s) - t0 )) s"
