#!/usr/bin/env bash
# The full benchmark suite in ONE call on the lent GPU machine (the call's limit: 600 s of wall
# time). Run from the repository root with a CUDA build of this tree carried in build/cuda:
#   scripts/gpu_bench_full.sh
# Environment (all optional):
#   BENCH_BUDGET_S   seconds for the suite, report included (default 480; lowered to fit the
#                    call when start-up or a build took longer)
#   GPU_CALL_LIMIT_S the call's wall limit the whole script must end inside (default 600)
#   SINKATTN_COMMIT  the commit to print when the copy of the tree has no .git
#   LIB              another build of the library to time, from the repository root (e.g.
#                    build/variants/NAME.so from scripts/build_variant.sh), instead of build/cuda's
#   SINKATTN_COMPILE_CACHE  torch.compile cache folder to reuse (e.g. one carried from an earlier
#                    call, unpacked from compile_cache.tgz); SAVE_COMPILE_CACHE=1 packs it into
#                    $OUT/compile_cache.tgz after the run
# Results under $OUT (the device tool fetches at most 8 files, two folders down):
#   bench_full/PERFORMANCE.md, bench_full/results.csv  the table and every row
#   bench_full.tgz   everything the run wrote (plots, meta.json, results.jsonl, the log)
#   bench_full.log   stdout and stderr of the run
# The markdown table is printed last.
set -uo pipefail
t_start=$SECONDS
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
limit="${GPU_CALL_LIMIT_S:-600}"
dest="$OUT/bench_full"
log="$OUT/bench_full.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader

if [ -z "${LIB:-}" ] && [ ! -f build/cuda/libsinkattn.so ]; then  # minutes of the call's limit: better carried
  echo "=== build/cuda/libsinkattn.so missing: building it here"
  if ! { cmake -S . -B build/cuda -G Ninja -DSINKATTN_CUDA=ON -DSINKATTN_PORTABLE_ARCHS=90 \
           -DSINKATTN_BUILD_TESTS=OFF -DSINKATTN_BUILD_BENCH=OFF >/dev/null \
         && cmake --build build/cuda -j 16 >/dev/null; }; then
    echo "error: CUDA build failed"; exit 2
  fi
fi
export LD_LIBRARY_PATH="$PWD/build/cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SINKATTN_LIBRARY="$(realpath -s "${LIB:-build/cuda/libsinkattn.so}")" PYTHONPATH="$PWD/python"
export PYTHONUNBUFFERED=1
SINKATTN_COMMIT="${SINKATTN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export SINKATTN_COMMIT
cache="${SINKATTN_COMPILE_CACHE:-/tmp/sinkattn-compile-cache}"
export TORCHINDUCTOR_CACHE_DIR="$cache/inductor" TRITON_CACHE_DIR="$cache/triton"

# What is left of the call after start-up: python start (~15 s), the fallback report (~20 s),
# packing and printing (~10 s) and a safety margin come off; the watchdog inside the harness
# ends the suite at its budget, `timeout` only backs it up.
left=$(( limit - (SECONDS - t_start) - 75 ))
if [ "$left" -lt 60 ]; then echo "error: only ${left} s of the call left for the suite"; exit 2; fi
budget="${BENCH_BUDGET_S:-480}"
[ "$budget" -gt "$left" ] && budget=$left
args=(--suite full --device cuda --out "$dest" --no-progress)
echo "=== python3 -m sinkattn.bench ${args[*]} --budget-s $budget (commit $SINKATTN_COMMIT)"
timeout --kill-after=5 $(( budget + 30 )) \
  python3 -m sinkattn.bench "${args[@]}" --budget-s "$budget" > "$log" 2>&1
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then  # killed: write the outputs from the rows so far
  echo "=== the run overran its budget and was stopped (rc $rc): report from the rows so far"
  timeout 60 python3 -m sinkattn.bench "${args[@]}" --report-only >> "$log" 2>&1
fi
grep -E "^\[bench\]|Traceback|Error" "$log" | head -20

cp "$log" "$dest/" 2>/dev/null
tar czf "$OUT/bench_full.tgz" -C "$OUT" bench_full
find "$dest" -type f ! -name PERFORMANCE.md ! -name results.csv -delete  # 8 files come back
if [ "${SAVE_COMPILE_CACHE:-0}" = 1 ] && [ -d "$cache" ]; then
  tar czf "$OUT/compile_cache.tgz" -C "$cache" . && ls -l "$OUT/compile_cache.tgz"
fi
echo "bench rc=$rc, script ${SECONDS}s"
echo "=== $dest/PERFORMANCE.md"
cat "$dest/PERFORMANCE.md" 2>/dev/null || { echo "no report written; log tail:"; tail -40 "$log"; }
