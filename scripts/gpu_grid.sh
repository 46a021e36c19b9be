#!/usr/bin/env bash
# GPU machine: the fp64 shape grid (tests/cuda/check_cuda.py --no-bench) of one library build on
# each path entry: a path (auto, sm80), optionally with comma-joined env settings
# (auto,SINKATTN_SM90_PERSISTENT=3 makes every forward block walk many tiles;
# auto,SINKATTN_SM90_SHORT_ROWS=0 runs the 192-row d 64 forward where 128 rows would be chosen;
# auto,SINKATTN_BWD_KV_GROUP=1 launches the dK/dV kernels' key blocks one kv head at a time;
# sm80,SINKATTN_SM80_TILES=small runs the portable tile set of sm_80 / sm_86 / sm_89 instead of
# the large one sm_90 takes). Logs under $OUT as grid_<NAME_><entry>.log; prints one summary
# line per entry and its failures. Used by gpu_hopper.sh and gpu_compare.sh.
# GRID_ARGS adds options to check_cuda.py (e.g. --only=window).
#   usage: [NAME=label] [GRID_TIMEOUT=s] [GRID_ARGS=...] scripts/gpu_grid.sh LIB ENTRY ...
set -uo pipefail
lib=$(realpath "$1"); shift  # before the cd: LIB may be relative to the caller's folder
cd "$(dirname "$0")/../tests/cuda" || exit 2
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
t0=$SECONDS
for entry in "$@"; do
  IFS=, read -r path envs <<< "$entry"; tag=${NAME:+${NAME}_}${entry//[^A-Za-z0-9]/_}
  # shellcheck disable=SC2086  # envs: VAR=value settings, GRID_ARGS options, one word each
  env SINKATTN_CUDA_PATH="$path" ${envs//,/ } timeout "${GRID_TIMEOUT:-300}" \
    python3 check_cuda.py "$lib" --no-bench ${GRID_ARGS:-} > "$OUT/grid_$tag.log" 2>&1
  echo "[$(( SECONDS - t0 )) s] grid ${NAME:+$NAME }($entry): $(grep -E 'GRID' "$OUT/grid_$tag.log" || echo 'no summary: crashed or timed out')"
  grep -E "FAIL" "$OUT/grid_$tag.log" | head -10
done
