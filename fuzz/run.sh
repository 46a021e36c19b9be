#!/usr/bin/env bash
# Builds the libFuzzer target in its own directory and fuzzes the C ABI for a bounded time.
# usage: fuzz/run.sh [seconds=60] [build dir=build/fuzz]   (CI runs 60 s)
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$root/build/fuzz}
jobs=${SINKATTN_JOBS:-2}

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSINKATTN_FUZZ=ON -DSINKATTN_CUDA=OFF -DSINKATTN_BUILD_TESTS=OFF -DSINKATTN_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target fuzz_validation

# Seed corpus: all-zero input decodes to a plausible fixed-length forward; other fills steer the
# decoder to backward, varlen, other dtypes and broken fields. libFuzzer grows it from there.
corpus=$build/corpus
mkdir -p "$corpus"
for n in 8 32 128 512; do
  for byte in 00 01 02 07 40 7f 80 ff; do
    head -c "$n" /dev/zero | tr '\0' "\\$(printf '%03o' "0x$byte")" >"$corpus/seed-$byte-$n"
  done
done
for n in 64 256; do
  seq 0 $((n - 1)) | LC_ALL=C awk '{ printf "%c", ($1 * 37 + 11) % 256 }' >"$corpus/seed-ramp-$n"
done

# The CPU backend's threads stay 1 per call under the fuzzer so each input runs in milliseconds.
export SINKATTN_NUM_THREADS=${SINKATTN_NUM_THREADS:-1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
"$build/fuzz/fuzz_validation" "$corpus" -max_total_time="$seconds" -max_len=2048 -timeout=10 \
  -rss_limit_mb=4096 -print_final_stats=1
