// C++ API over the C ABI: exceptions instead of status codes, and builders for the usual layouts.
// Header-only, so it adds nothing to the ABI; the params structs are the C ones.
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "sinkattn/sinkattn.h"

namespace sinkattn {

// Thrown for every failed call; what() is the library's message naming the argument.
class Exception : public std::runtime_error {
 public:
  Exception(sinkattn_status status, const std::string& msg)
      : std::runtime_error(msg), status_(status) {}
  sinkattn_status status() const { return status_; }

 private:
  sinkattn_status status_;
};

inline void check(sinkattn_status status) {
  if (status != SINKATTN_OK) throw Exception(status, sinkattn_last_error());
}

// A contiguous (batch, seqlen, heads, head_dim) tensor.
inline sinkattn_tensor contiguous(const void* data, int64_t seqlen, int64_t heads,
                                  int64_t head_dim) {
  return {const_cast<void*>(data), seqlen * heads * head_dim, heads * head_dim, head_dim};
}

// A contiguous packed (total_rows, heads, head_dim) tensor of a varlen batch.
inline sinkattn_tensor packed(const void* data, int64_t heads, int64_t head_dim) {
  return {const_cast<void*>(data), 0, heads * head_dim, head_dim};
}

// A fixed-length problem with contiguous q, k, v; causal, no window, no sink, scale 1/sqrt(D).
// Adjust the returned fields (window_*, causal, sinks, scale, device_*, stream) as needed.
inline sinkattn_problem make_problem(sinkattn_dtype dtype, int64_t batch, int64_t seqlen_q,
                                     int64_t seqlen_k, int64_t heads_q, int64_t heads_kv,
                                     int32_t head_dim, const void* q, const void* k,
                                     const void* v) {
  sinkattn_problem p{};
  p.device_type = SINKATTN_DEVICE_CPU;
  p.dtype = dtype;
  p.head_dim = head_dim;
  p.batch = batch;
  p.seqlen_q = seqlen_q;
  p.seqlen_k = seqlen_k;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.q = contiguous(q, seqlen_q, heads_q, head_dim);
  p.k = contiguous(k, seqlen_k, heads_kv, head_dim);
  p.v = contiguous(v, seqlen_k, heads_kv, head_dim);
  p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  p.causal = 1;
  p.window_left = -1;
  p.window_right = -1;
  return p;
}

inline size_t workspace_size(const sinkattn_fwd_params& params) {
  size_t bytes = 0;
  check(sinkattn_fwd_workspace_size(&params, &bytes));
  return bytes;
}
inline size_t workspace_size(const sinkattn_bwd_params& params) {
  size_t bytes = 0;
  check(sinkattn_bwd_workspace_size(&params, &bytes));
  return bytes;
}

// Empty string when the params would run, else the reason they would not.
inline std::string why_not(const sinkattn_fwd_params& params) {
  return sinkattn_fwd_can_implement(&params) == SINKATTN_OK ? "" : sinkattn_last_error();
}
inline std::string why_not(const sinkattn_bwd_params& params) {
  return sinkattn_bwd_can_implement(&params) == SINKATTN_OK ? "" : sinkattn_last_error();
}

inline void forward(const sinkattn_fwd_params& params) { check(sinkattn_fwd(&params)); }
inline void backward(const sinkattn_bwd_params& params) { check(sinkattn_bwd(&params)); }

// Throws the error of a packed CUDA call whose cu_seqlens its device-side check found broken
// (sinkattn_deferred_error): synchronise the calls' streams first to cover them all.
inline void check_deferred_error() { check(sinkattn_deferred_error()); }

}  // namespace sinkattn
