#!/usr/bin/env bash
# Sets everything up and runs every test: the C++ tests (CPU build, and again under ASan + UBSan and
# TSan), the CUDA compile (and the CUDA tests where a GPU is present), the fuzz target for a bounded
# time, and the Python tests.
#   FUZZ_SECONDS=60 (default)   SINKATTN_SKIP_CUDA=1 skips the CUDA build
#   SINKATTN_SKIP_SANITIZERS=1 skips the C++ tests under ASan + UBSan and TSan
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$SINKATTN_ROOT"
start=$(date +%s)
step() { printf '\n=== %s (%ds) ===\n' "$*" $(( $(date +%s) - start )); }

gtest=OFF
have_or_skip GoogleTest test -f /usr/include/gtest/gtest.h && gtest=ON
step "C++ build, CPU only (a machine without nvcc builds exactly this)"
build_lib cpu -DSINKATTN_CUDA=OFF -DSINKATTN_BUILD_TESTS=$gtest
if [ $gtest = ON ]; then
  step "C++ tests (CPU backend)"
  ctest --test-dir build/cpu --output-on-failure -j "$SINKATTN_JOBS"
  if [ -z "${SINKATTN_SKIP_SANITIZERS:-}" ]; then
    # The CPU backend's thread pool and the C ABI's pointer arithmetic under the sanitizers: gcc's
    # runtimes link into the shared library (clang's TSan runtime does not), 4 threads per call
    # so the pool's workers interleave more than nproc would make them.
    for san in address,undefined thread; do
      step "C++ tests under -fsanitize=$san (CPU backend)"
      flags="-fsanitize=$san -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
      [ "$san" = thread ] || flags+=" -D_GLIBCXX_ASSERTIONS"  # bounds checks in the std containers
      build_lib "san-${san%%,*}" -DSINKATTN_CUDA=OFF -DSINKATTN_BUILD_BENCH=OFF \
        -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ "-DCMAKE_C_FLAGS=$flags" \
        "-DCMAKE_CXX_FLAGS=$flags" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$san" \
        "-DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=$san" >/dev/null
      SINKATTN_NUM_THREADS=4 ASAN_OPTIONS=detect_leaks=1 TSAN_OPTIONS=halt_on_error=1 \
        "build/san-${san%%,*}/tests/cpp/sinkattn_tests" --gtest_brief=1
    done
  fi
fi

lib="$SINKATTN_ROOT/build/cpu/libsinkattn.so"
if [ -z "${SINKATTN_SKIP_CUDA:-}" ] && command -v nvcc >/dev/null; then
  step "CUDA build (${SINKATTN_CUDA_ARCHS:=80;90})"
  build_lib cuda -DSINKATTN_CUDA=ON -DSINKATTN_PORTABLE_ARCHS="$SINKATTN_CUDA_ARCHS" \
    -DSINKATTN_BUILD_BENCH=OFF -DSINKATTN_BUILD_TESTS=$gtest
  if nvidia-smi -L >/dev/null 2>&1; then  # a GPU: the Python tests use the CUDA build too
    lib="$SINKATTN_ROOT/build/cuda/libsinkattn.so"
    if [ $gtest = ON ]; then
      step "C++ tests (CUDA build, GPU present)"
      ctest --test-dir build/cuda --output-on-failure -j 1
    fi
  fi
fi

if have_or_skip "clang (libFuzzer)" command -v clang++; then
  step "fuzzing the C ABI validation for ${FUZZ_SECONDS:=60} s"
  bash fuzz/run.sh "$FUZZ_SECONDS"
fi

step "Python tests ($("$SINKATTN_PY" -c 'import torch; print("torch", torch.__version__)'))"
SINKATTN_LIBRARY="$lib" PYTHONPATH="$SINKATTN_ROOT/python${PYTHONPATH:+:$PYTHONPATH}" \
  "$SINKATTN_PY" -m pytest -q -p no:cacheprovider tests/python
step "all tests passed"
