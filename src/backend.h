// Internal interface between src/api.cpp (validation, dispatch) and the backends.
// api.cpp calls a backend only after every argument has been validated, so backends may assume
// valid, in-bounds params (sizes, strides, alignment, cu_seqlens on the CPU).
#pragma once

#include <cstddef>
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
