#!/usr/bin/env bash
export PATH=/usr/local/cuda/bin:$PATH OUT=${OUT:-/tmp/o}
mkdir -p $OUT
t0=$SECONDS
SINKATTN_CUDA_PATH=auto timeout 120 build/cuda/tests/cpp/sinkattn_tests --gtest_brief=1 > $OUT/gtest.log 2>&1
echo "[$((SECONDS-t0)) s] gtest rc=$?: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' $OUT/gtest.log | tr '\n' ' ')"
NAME=main GRID_TIMEOUT=120 bash scripts/gpu_grid.sh build/cuda/libsinkattn.so auto auto,SINKATTN_SM90_BAND_DQ=0 auto,SINKATTN_SM90_DQ_HANDOFF=0
( cd tests/cuda && t0=$SECONDS && SINKATTN_CUDA_PATH=auto timeout 120 compute-sanitizer --tool racecheck --kernel-name kns=bwd_kernel \
    python3 check_cuda.py ../../build/cuda/libsinkattn.so --small --no-bench > $OUT/race.log 2>&1
  echo "[$((SECONDS-t0)) s] racecheck rc=$?: $(grep -E 'RACECHECK SUMMARY|GRID' $OUT/race.log | tr '\n' ' ')" )
t0=$SECONDS
LD_LIBRARY_PATH=$PWD/build/cuda SINKATTN_LIBRARY=$PWD/build/cuda/libsinkattn.so PYTHONPATH=$PWD/python \
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/python --ignore=tests/python/test_cp.py > $OUT/pytest.log 2>&1
echo "[$((SECONDS-t0)) s] pytest rc=$?: $(tail -1 $OUT/pytest.log)"; grep -E "^(FAILED|ERROR)" $OUT/pytest.log | head
