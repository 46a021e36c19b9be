#!/usr/bin/env bash
# GPU machine: Nsight Compute sections for one kernel of one shape (tests/cuda/profile_one.py), with
# the CUDA build carried in build/cuda (LIB= another .so), clocks left as they are. Full reports
# under $OUT; a few lines printed, then the stall ledger (tests/cuda/ncu_stalls.py: the SASS
# instructions that hold most of the sampled warp stalls, with their reasons).
#   usage: [LIB=...] [PIPES=1] scripts/gpu_ncu.sh "SHAPE KERNEL_REGEX" ...   e.g. "window128 ^fwd_kernel$"
#   (ncu matches the kernel's base name: fwd_kernel, bwd_kernel, bwd_dkdv_kernel, ...)
#   PIPES=1: instead, each unit's busy share (tensor, SFU, issue, ALU, FMA, shared-memory
#   wavefronts, which include wgmma's operand reads), a few seconds per kernel.
set -uo pipefail
cd "$(dirname "$0")/../tests/cuda"
OUT="${OUT:-/tmp/sinkattn-out}"; mkdir -p "$OUT"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
LIB=${LIB:-../../build/cuda/libsinkattn.so}
if [ "${PIPES:-0}" = 1 ]; then
  pct=avg.pct_of_peak_sustained_active
  metrics="gpu__time_duration.sum,sm__pipe_tensor_cycles_active.$pct,sm__inst_executed_pipe_xu.$pct"
  metrics="$metrics,sm__issue_active.$pct,sm__pipe_alu_cycles_active.$pct,sm__pipe_fma_cycles_active.$pct"
  metrics="$metrics,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed"
  for spec in "$@"; do
    set -- $spec
    echo "=== ncu pipes $1 $2"
    timeout 150 "$NCU" --clock-control none --kernel-name "regex:$2" --launch-skip 1 --launch-count 1 \
      --metrics "$metrics" python3 profile_one.py "$LIB" "$1" 2>&1 | grep -E "pct|duration|ERROR" | sed 's/  */ /g'
  done
  exit 0
fi
for spec in "$@"; do
  set -- $spec
  tag="${1}_${2//[^A-Za-z0-9]/}"
  log="$OUT/ncu_$tag.txt"
  timeout 200 "$NCU" --clock-control none --import-source no --kernel-name "regex:$2" \
    --launch-skip 1 --launch-count 1 -f -o "$OUT/ncu_$tag" \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
    --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section SourceCounters python3 profile_one.py "$LIB" "$1" > "$log" 2>&1
  echo "=== ncu $1 $2 (rc $?)"
  "$NCU" -i "$OUT/ncu_$tag.ncu-rep" --page details >> "$log" 2>&1
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|No Eligible|Eligible Warps|Active Warps Per|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Grid Size|Executed Ipc A|L2 Hit|ERR|rror" "$log" | cut -c1-200 | head -24
  "$NCU" -i "$OUT/ncu_$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/src_$tag.csv" 2>&1 \
    || "$NCU" -i "$OUT/ncu_$tag.ncu-rep" --page source --csv > "$OUT/src_$tag.csv" 2>&1
  python3 ncu_stalls.py "$OUT/src_$tag.csv" | tee "$OUT/stalls_$tag.txt" | head -70
  gzip -f "$OUT/src_$tag.csv"; rm -f "$OUT/ncu_$tag.ncu-rep"
done
