#!/usr/bin/env bash
# GPU machine, one call: builds of the library side by side (made by scripts/build_variant.sh
# into build/variants, which the call carries). Every build but the base first passes the fp64
# grid (tests/cuda/check_cuda.py) on the Hopper path, also with the persistent forward walking
# many tiles, and with SM80=1 on both portable tile sets; then tests/cuda/compare_libs.py times
# them all in one process, interleaved, the base first. SINKATTN_CUDA_PATH=sm80 in the
# environment times the portable path (the grids set their own path).
#   usage: [BASE=main] [SM80=1] [PATHS="auto ..."] [COMPARE_ARGS=--only=window] scripts/gpu_compare.sh [NAME ...]
#   (default NAMEs: every build/variants/*.so but the base)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PATH=/usr/local/cuda/bin:$PATH
V=$PWD/build/variants
base=${BASE:-main}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$V"/*.so; do n=$(basename "$f" .so); [ "$n" = "$base" ] || names+=("$n"); done
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
t0=$SECONDS
paths=${PATHS:-auto auto,SINKATTN_SM90_PERSISTENT=3 auto,SINKATTN_SM90_SHORT_ROWS=0 auto,SINKATTN_BWD_KV_GROUP=1}
[ "${SM80:-0}" = 1 ] && paths="$paths sm80 sm80,SINKATTN_SM80_TILES=small,SINKATTN_BWD_KV_GROUP=1"
for n in "${names[@]}"; do
  # shellcheck disable=SC2086  # paths: a list of entries
  NAME=$n GRID_TIMEOUT=150 bash scripts/gpu_grid.sh "$V/$n.so" $paths
done
args=("$base=$V/$base.so")
for n in "${names[@]}"; do args+=("$n=$V/$n.so"); done
# shellcheck disable=SC2086  # COMPARE_ARGS is a list of options
( cd tests/cuda && timeout "${COMPARE_TIMEOUT:-400}" python3 compare_libs.py "${args[@]}" ${COMPARE_ARGS:-} ) \
  > "$OUT/compare.log" 2>&1
echo "[$(( SECONDS - t0 )) s] compare_libs rc=$?"
grep -E "MISMATCH|Error|error" "$OUT/compare.log" | head -5
sed -n '/^shape/,$p' "$OUT/compare.log"
