#!/usr/bin/env bash
# Builds the library of a git ref (branch, tag, commit; "." for the working tree as it is) into
# build/variants/NAME.so, for side-by-side timings in one process (tests/cuda/compare_libs.py).
# Each ref builds in a worktree with its own build folder (under build/variant-work, which stays
# here: carry only build/variants); extra arguments go to CMake (e.g.
# -DCMAKE_CUDA_FLAGS=-DSOME_KNOB=1). Portable kernels for sm_90 only: these builds are for the
# lent H100 / H200. Carry build/variants to the GPU machine.
#   usage: scripts/build_variant.sh REF NAME [-D...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 REF NAME [cmake -D options]" >&2; exit 2; }
ref=$1 name=$2; shift 2
out=build/variants work=build/variant-work
mkdir -p "$out" "$work"
src=$PWD
if [ "$ref" != . ]; then
  src=$PWD/$work/src-$name
  rm -rf "$src"; git worktree prune
  git worktree add --detach "$src" "$ref" >/dev/null
fi
cmake -S "$src" -B "$work/build-$name" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKATTN_CUDA=ON \
  -DSINKATTN_PORTABLE_ARCHS=90 -DSINKATTN_BUILD_TESTS=OFF -DSINKATTN_BUILD_BENCH=OFF "$@" >/dev/null
ninja -C "$work/build-$name" sinkattn | grep -iE "error|spill|serializ" || true
cp "$(readlink -f "$work/build-$name/libsinkattn.so")" "$out/$name.so"
strip --strip-unneeded "$out/$name.so"  # host symbols only (~7%): more builds fit a carry's 64 MiB
[ "$ref" = . ] || git worktree remove --force "$src"
echo "$out/$name.so ($(git rev-parse --short "${ref/#./HEAD}")$([ "$ref" = . ] && ! git diff --quiet && echo ' + working tree'))"
