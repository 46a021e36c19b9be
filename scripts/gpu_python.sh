#!/usr/bin/env bash
# GPU machine, one call: the Python layer on the carried CUDA build (build/cuda): pytest (CUDA and
# CPU tests; context parallel has its own script), host overhead per call on both devices, then
# the transformers check (demo + GPT-OSS-20B-shaped block, scripts/gpu_hf.py). Results under $OUT.
#   usage: scripts/gpu_python.sh [gpu_hf.py args...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/build/cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SINKATTN_LIBRARY="$PWD/build/cuda/libsinkattn.so" PYTHONPATH="$PWD/python" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
t0=$SECONDS
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/python --ignore=tests/python/test_cp.py \
  > "$OUT/pytest.log" 2>&1
echo "pytest rc=$? ($(( SECONDS - t0 )) s): $(tail -1 "$OUT/pytest.log")"
grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20
for dev in cuda cpu; do
  timeout 120 python3 -m sinkattn.overhead --device $dev > "$OUT/overhead_$dev.txt" 2>&1
  echo "=== overhead ($dev)"; tail -15 "$OUT/overhead_$dev.txt"
done
OUT="$OUT/hf" timeout 400 python3 scripts/gpu_hf.py "$@" > "$OUT/gpu_hf.log" 2>&1
echo "gpu_hf rc=$? ($(( SECONDS - t0 )) s)"; tail -30 "$OUT/gpu_hf.log"
