#!/bin/bash
# GPU machine: build the CUDA backend (portable sm80 path) into a check library and run the
# standalone checker (tests/cuda/check_cuda.py: shape grid vs fp64, determinism, timings).
# usage: scripts/gpu_dev.sh [checker args...]      env: ARCH (SASS target, default 90), JOBS
# The library is api.cpp + src/cuda + a CPU stub, so the check does not depend on src/cpu/.
set -eo pipefail
export PATH=/usr/local/cuda/bin:$PATH
cd "$(dirname "$0")/.."
ARCH=${ARCH:-90}
JOBS=${JOBS:-16}
BUILD=${BUILD:-/tmp/sinkattn-gpu}
OUTDIR=${OUT:-/tmp}
mkdir -p "$BUILD"
NVFLAGS="-std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr -Xptxas=-warn-spills -Xcompiler=-fPIC,-fvisibility=hidden -Iinclude -Isrc -DSINKATTN_WITH_CUDA=1 -gencode=arch=compute_${ARCH},code=sm_${ARCH}"
start=$(date +%s)
ls src/cuda/*.cu src/cuda/sm80/*.cu | xargs -P "$JOBS" -I{} sh -c \
  'nvcc '"$NVFLAGS"' -Xptxas=-v -c {} -o '"$BUILD"'/$(echo {} | tr / _).o 2> '"$BUILD"'/$(echo {} | tr / _).log || { cat '"$BUILD"'/$(echo {} | tr / _).log; exit 255; }'
g++ -std=c++17 -O2 -fPIC -fvisibility=hidden -Iinclude -Isrc -I/usr/local/cuda/include -DSINKATTN_WITH_CUDA=1 -c src/api.cpp -o "$BUILD/api.o"
g++ -std=c++17 -O2 -fPIC -Iinclude -Isrc -c tests/cuda/cpu_stub.cpp -o "$BUILD/cpu_stub.o"
nvcc -shared -o "$BUILD/libsinkattn_check.so" "$BUILD"/*.o -lcudart_static
echo "build: $(( $(date +%s) - start )) s"
# Register / spill report of the kernels (the ptxas -v lines).
cat "$BUILD"/*.log | grep -E "Compiling entry|registers|spill" | sed -E 's/.*entry function .(_ZN8sinkattn4cuda4sm80)?([0-9]+[a-z_]+)I?.*(Li[0-9]+E).*/\2\3/' \
  | paste - - - | awk '{print $1, $0}' | grep -oE "^[^ ]+|[0-9]+ bytes spill stores|Used [0-9]+ registers" | paste - - - > "$OUTDIR/regs.txt" || true
cd tests/cuda
PYTHONUNBUFFERED=1 python3 check_cuda.py "$BUILD/libsinkattn_check.so" "$@" 2>&1 | tee "$OUTDIR/check.log"
# SANITIZE=1: memcheck and racecheck of the sinkattn kernels over the small grid.
if [ "${SANITIZE:-0}" = 1 ]; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer $tool"
    PYTHONUNBUFFERED=1 compute-sanitizer --tool $tool --kernel-name kns=sinkattn --error-exitcode 1 \
      python3 check_cuda.py "$BUILD/libsinkattn_check.so" --small --no-bench 2>&1 | tail -4 | tee -a "$OUTDIR/sanitizer.log"
  done
fi
