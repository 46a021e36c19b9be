#!/usr/bin/env bash
# GPU machine: Nsight Compute sections for one kernel of one shape (tests/cuda/profile_one.py), with
# the CUDA build carried in build/cuda. Full reports under $OUT; a few lines printed.
#   usage: scripts/gpu_ncu.sh "SHAPE KERNEL_REGEX" ...   e.g. "window128 sm90::fwd_kernel"
set -uo pipefail
cd "$(dirname "$0")/../tests/cuda"
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for spec in "$@"; do
  set -- $spec
  log="$OUT/ncu_${1}_${2//[^A-Za-z0-9]/_}.txt"
  timeout 150 "$NCU" --kernel-name "regex:$2" --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
    --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    python3 profile_one.py ../../build/cuda/libsinkattn.so "$1" > "$log" 2>&1
  echo "=== ncu $1 $2 (rc $?)"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|No Eligible|Eligible Warps|Active Warps Per|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Grid Size|Executed Ipc A|L2 Hit|ERR|rror|stall" "$log" | cut -c1-400 | head -30
done
