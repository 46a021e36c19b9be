#!/usr/bin/env bash
# The GPU set of tests/mutation/mutants.py (CUDA kernels and their launch code).
#   build (here, no GPU needed): one library per mutant, build/variants/mut-ID.so (sm_90 portable
#     and Hopper kernels, stripped: ~6 MB each), from the working tree with that mutant applied;
#     carry build/variants to the GPU machine.
#   check (on the GPU machine): check_cuda.py on each mutant's library, on its path
#     (SINKATTN_CUDA_PATH) and grid cases; prints killed / SURVIVED per mutant.
#   usage: tests/mutation/gpu.sh build|check [ID ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
what=${1:?usage: $0 build|check [ID ...]}; shift
py=$(command -v python3)
[ -x "$HOME/.cache/sinkattn/venv/bin/python" ] && [ "$what" = build ] && py=$HOME/.cache/sinkattn/venv/bin/python
list() {  # id, file, path, cases of the selected mutants (tab-separated)
  "$py" - "$@" <<'EOF'
import sys
sys.path.insert(0, "tests/mutation")
import mutants
for m in mutants.GPU:
    if len(sys.argv) == 1 or m.id in sys.argv[1:]:
        print("\t".join((m.id, m.file, m.path, m.cases)))
EOF
}
apply() {  # apply|restore ID
  "$py" - "$@" <<'EOF'
import sys
sys.path.insert(0, "tests/mutation")
import mutants
m = next(m for m in mutants.GPU if m.id == sys.argv[2])
src = open(m.file).read()
old, new = (m.old, m.new) if sys.argv[1] == "apply" else (m.new, m.old)
if src.count(old) != 1:
    sys.exit(f"{m.id}: its text occurs {src.count(old)} times in {m.file}")
open(m.file, "w").write(src.replace(old, new))
EOF
}

case "$what" in
build)
  dir=build/mutation-cuda
  mkdir -p build/variants
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKATTN_CUDA=ON \
    -DSINKATTN_PORTABLE_ARCHS=90 -DSINKATTN_BUILD_TESTS=OFF -DSINKATTN_BUILD_BENCH=OFF >/dev/null || exit 1
  while IFS=$'\t' read -r id file _ _; do
    git diff --quiet -- "$file" || { echo "$file has uncommitted changes" >&2; exit 1; }
    apply apply "$id" || exit 1
    if ninja -C "$dir" sinkattn >"$dir/$id.log" 2>&1; then
      cp "$(readlink -f "$dir/libsinkattn.so")" "build/variants/mut-$id.so"
      strip --strip-unneeded "build/variants/mut-$id.so"
      echo "$id: build/variants/mut-$id.so"
    else
      echo "$id: BUILD FAILED (see $dir/$id.log)"
    fi
    apply restore "$id"
  done < <(list "$@")
  ninja -C "$dir" sinkattn >/dev/null  # back to the unmutated tree
  ;;
check)
  OUT=${OUT:-/tmp/sinkattn-out}; mkdir -p "$OUT"
  survived=()
  while IFS=$'\t' read -r id _ path cases; do
    lib=build/variants/mut-$id.so
    [ -f "$lib" ] || { echo "$id: no $lib (run build here first)"; survived+=("$id"); continue; }
    (cd tests/cuda && SINKATTN_CUDA_PATH=$path timeout 300 python3 check_cuda.py "../../$lib" \
      --no-bench --only="$cases") >"$OUT/mut-$id.log" 2>&1
    summary=$(grep -E "^GRID" "$OUT/mut-$id.log" || echo "no summary (crash or timeout)")
    if grep -qE "^GRID: ([0-9]+)/\1 cases passed" "$OUT/mut-$id.log"; then
      echo "$id: SURVIVED ($summary)"; survived+=("$id")
    else
      echo "$id: killed ($summary; $(grep -m1 -oE '(FAIL|NOT bit-identical|rounding [-+0-9.]+ ulp)[^;]*' "$OUT/mut-$id.log" | head -1 | head -c 100))"
    fi
  done < <(list "$@")
  echo "survived: ${survived[*]:-none}"
  ;;
*) echo "usage: $0 build|check [ID ...]" >&2; exit 2 ;;
esac
