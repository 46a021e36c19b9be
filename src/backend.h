// Internal interface between src/api.cpp (validation, dispatch) and the backends.
// api.cpp calls a backend only after every argument has been validated, so backends may assume
// valid, in-bounds params (sizes, strides, alignment, cu_seqlens on the CPU).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sinkattn/sinkattn.h"

namespace sinkattn {

// Thrown by backends (and validation); api.cpp turns it into a status and the last-error text.
struct Error : std::runtime_error {
  sinkattn_status status;
  Error(sinkattn_status s, const std::string& msg) : std::runtime_error(msg), status(s) {}
};

// Effective mask bounds in key positions relative to the query's aligned position
// (query i of a sequence sits at key position i + Sk - Sq). -1 = unbounded.
struct MaskBounds {
  long long left;
  long long right;
};
inline MaskBounds mask_bounds(const sinkattn_problem& p) {
  return {p.window_left, p.causal ? 0 : p.window_right};
}

inline bool is_varlen(const sinkattn_problem& p) { return p.cu_seqlens_q != nullptr; }

namespace cpu {
size_t fwd_workspace_size(const sinkattn_fwd_params& p);
size_t bwd_workspace_size(const sinkattn_bwd_params& p);
void fwd(const sinkattn_fwd_params& p);  // synchronous
void bwd(const sinkattn_bwd_params& p);  // synchronous
}  // namespace cpu

namespace cuda {
// Broken cu_seqlens of a packed CUDA call: the CUDA backend cannot read the offsets without a
// device synchronisation, so its offsets guard (src/cuda/offsets_guard.h) checks them on the
// device after the call has returned, fills the call's outputs with NaN and keeps the first rule
// broken here until a later call reports it (api.cpp words it as the CPU's check would).
enum class OffsetsRule : int32_t {
  kNone = 0,
  kNegativeStart,   // cu[0] < 0: got cu[0]
  kDecreasing,      // cu[entry] < cu[entry - 1]: got cu[entry], bound cu[entry - 1]
  kTooLong,         // a sequence longer than seqlen_q / _k: got its length, bound the max
  kPastRows,        // cu[batch] > total_q / _k: got cu[batch], bound the total
  kOddQueryLength,  // zigzag: an odd query length: got it
  kZigzagKeys,      // zigzag: keys != world x queries: got the key length, bound the query length
};
struct OffsetsFault {
  OffsetsRule rule = OffsetsRule::kNone;
  int32_t keys = 0;    // 1: in cu_seqlens_k, 0: in cu_seqlens_q
  int32_t device = 0;  // CUDA ordinal of the call
  int32_t world = 0;   // the call's zigzag_world (the zigzag rules)
  int64_t entry = 0;   // index into cu_seqlens of the offset that breaks the rule
  int64_t got = 0, bound = 0;
};
// Claims the fault kept for the host, if any: true once per fault.
bool take_offsets_fault(OffsetsFault* fault);

// Built from src/cuda/ when nvcc is available, else from src/cuda_stub.cpp (refuses).
bool compiled();
// Checks what only the CUDA backend knows (device arch, pointer residency, head dim and dtype
// support); throws Error(SINKATTN_ERROR_NOT_SUPPORTED or INVALID_ARGUMENT) with the reason.
void check_supported(const sinkattn_problem& p);
size_t fwd_workspace_size(const sinkattn_fwd_params& p);
size_t bwd_workspace_size(const sinkattn_bwd_params& p);
void fwd(const sinkattn_fwd_params& p);  // enqueues on p.problem.stream
void bwd(const sinkattn_bwd_params& p);  // enqueues on p.problem.stream
// The kernel family the forward / backward would run for a supported problem, and why a faster one is not
// used, e.g. "cuda sm90 (wgmma, TMA)".
std::string fwd_path(const sinkattn_problem& p);
std::string bwd_path(const sinkattn_bwd_params& p);
}  // namespace cuda

}  // namespace sinkattn
