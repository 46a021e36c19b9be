#!/usr/bin/env bash
# Sets everything up and runs the main job: a small GPT-OSS-architecture model trained with
# sinkattn and with transformers' eager attention side by side (GPU when present, else CPU).
# Extra arguments go to `python -m sinkattn.demo` (e.g. --steps 50 --seq 512).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$SINKATTN_ROOT"
if command -v nvcc >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  build_lib cuda -DSINKATTN_CUDA=ON -DSINKATTN_BUILD_TESTS=OFF -DSINKATTN_BUILD_BENCH=OFF \
    -DSINKATTN_PORTABLE_ARCHS="${SINKATTN_CUDA_ARCHS:-90}" >/dev/null
  lib=build/cuda/libsinkattn.so
else
  build_lib cpu -DSINKATTN_CUDA=OFF -DSINKATTN_BUILD_TESTS=OFF -DSINKATTN_BUILD_BENCH=OFF >/dev/null
  lib=build/cpu/libsinkattn.so
fi
SINKATTN_LIBRARY="$SINKATTN_ROOT/$lib" PYTHONPATH="$SINKATTN_ROOT/python${PYTHONPATH:+:$PYTHONPATH}" \
  exec "$SINKATTN_PY" -m sinkattn.demo "$@"
