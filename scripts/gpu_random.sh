#!/usr/bin/env bash
# GPU machine: the random cases of tests/python/test_random_cases.py on CUDA against the fp64
# reference, one pytest process per path entry (a path, auto or sm80, optionally with
# comma-joined env settings as in gpu_grid.sh: the switches the library reads once per process,
# such as SINKATTN_SM90_PERSISTENT=3 or SINKATTN_SM80_TILES=small, need a process each). Each
# process draws fresh cases from its own seed (printed: SINKATTN_TEST_SEED replays them).
# Logs under $OUT as random_<entry>.log; one summary line per entry and its failures.
#   usage: [CASES=300] [RANDOM_TIMEOUT=s] scripts/gpu_random.sh LIB ENTRY ...
set -uo pipefail
lib=$(realpath "$1"); shift
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
t0=$SECONDS
for entry in "$@"; do
  IFS=, read -r path envs <<< "$entry"; tag=${entry//[^A-Za-z0-9]/_}
  seed=$(( (RANDOM << 15 | RANDOM) ))
  # shellcheck disable=SC2086  # envs: VAR=value settings, one word each
  env SINKATTN_CUDA_PATH="$path" ${envs//,/ } SINKATTN_LIBRARY="$lib" PYTHONPATH="$PWD/python" \
    SINKATTN_TEST_SEED=$seed SINKATTN_RANDOM_CASES="${CASES:-300}" \
    timeout "${RANDOM_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider \
    tests/python/test_random_cases.py -k cuda > "$OUT/random_$tag.log" 2>&1
  rc=$?
  echo "[$(( SECONDS - t0 )) s] random ($entry, seed $seed): rc=$rc $(tail -1 "$OUT/random_$tag.log")"
  grep -E "^E +AssertionError: [bv]" "$OUT/random_$tag.log" | head -10
done
