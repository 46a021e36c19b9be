// Whole-problem results in one dense layout, from the library or from the references:
// out, dq (rows_q, Hq, D); dk, dv (rows_k, Hkv, D); lse in the library's order; dsink (Hq).
#pragma once

#include <vector>

#include "attention_case.h"

namespace sinkattn_test {

struct Result {
  std::vector<double> out, lse, dq, dk, dv, dsink;
};

// What the library wrote (host copies after Attention::forward / backward).
Result library_result(const Attention& a);
// fp64 reference (reference.h) on the same rounded inputs.
Result reference_fp64(const Attention& a);
// The same math in the dtype (lowprec_reference.h), the yardstick for the tolerance; its
// backward starts from the library's out and lse (call it after Attention::forward).
Result reference_lowp(const Attention& a);

// dsink_h = -sum_i exp(s_h - lse_i) delta_i in fp64 from the out and lse in `fwd` (pass the
// library's own to check the backward alone), with sum_i |term_i| per head as its error scale.
struct DsinkCheck {
  std::vector<double> value, abs_sum;
};
DsinkCheck dsink_from_forward(const Attention& a, const Result& fwd);

}  // namespace sinkattn_test
