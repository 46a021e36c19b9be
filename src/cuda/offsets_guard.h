// The last step of a packed (varlen) call on CUDA, in its stream after the kernels: the rows
// outside every sequence, and the check of cu_seqlens that the host cannot make without a device
// synchronisation.
//
// The kernels clamp the offsets, so bad ones never index out of bounds; but a sequence longer
// than the max length the grid was sized by would leave rows unwritten and decreasing offsets
// would overlap sequences: a wrong answer. So the guard checks the rules the CPU backend enforces
// (api.cpp) and, where one is broken, fills every output with NaN and keeps the first rule broken
// (in the CPU's order of checks) for the host: a later call reports it as an argument error
// (take_offsets_fault in backend.h). Where they hold, it writes the rows no sequence covers
// ([0, cu[0]) and [cu[batch], total)): out and the gradients 0, lse -inf, so that callers need
// not clear whole outputs before each call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend.h"
#include "cuda/common/offsets_rule.h"
#include "sinkattn/sinkattn.h"

namespace sinkattn::cuda {

// Where the guards keep a fault for the host: mapped pinned host memory, so that the host reads it
// without a synchronisation (one per process, allocated by the first packed call). A guard writes
// it only while `published` is 0, the fault first and `published` after a system fence; the host
// copies the fault and then claims it by resetting `published`. (Two broken calls whose guards run
// at the same moment may mix their faults' fields: either is reported.)
struct FaultRecord {
  uint64_t published;
  OffsetsFault fault;
};

struct OffsetsGuard {
  OffsetsLists lists;  // on the device; the bounds from the problem

  // Outputs with a row per q row (keys == false) or k row: (total, heads, head_dim) tensors of
  // 2-byte elements (head_dim contiguous, 16-byte aligned rows, as api.cpp requires on CUDA).
  // Unused entries have t.data == nullptr.
  struct Rows {
    sinkattn_tensor t{};
    int64_t heads = 0;
    bool keys = false;
  } rows[3];
  int32_t head_dim = 0;
  uint16_t nan = 0;        // the dtype's quiet NaN (bf16 0x7fc0, fp16 0x7e00)
  float* lse = nullptr;    // (heads_q, total_q) fp32, or nullptr
  int64_t heads_q = 0;
  float* dsink = nullptr;  // (heads_q,) fp32, or nullptr: NaN where the offsets are broken
  FaultRecord* fault = nullptr;  // the process's record (device address), or nullptr
  int32_t device = 0;            // the call's CUDA ordinal, for the fault's message
};

// The process's fault record (device address): allocated on first use, nullptr if that failed
// (the guard then only fills with NaN).
FaultRecord* fault_record();

// Launches the guard in stream, on the current device: a few microseconds where the offsets hold
// and cover every row.
void launch_offsets_guard(const OffsetsGuard& g, cudaStream_t stream);

}  // namespace sinkattn::cuda
