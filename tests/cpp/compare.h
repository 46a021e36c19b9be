// Tolerance checks of DESIGN.md: a kernel's max error against fp64 is at most twice the error of
// the same math in the dtype plus a small atol; fp32 results use a fixed relative bound.
// Non-finite values are allowed only where the fp64 reference has the same value.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "references.h"

namespace sinkattn_test {

// Bound on max |got - ref| = rtol * max |ref| + atol (+ 2 * max |lowp - ref| with use_lowp).
struct Tolerance {
  double rtol;
  double atol;
  bool use_lowp;
};

::testing::AssertionResult close_to_reference(const std::string& what,
                                              const std::vector<double>& got,
                                              const std::vector<double>& ref,
                                              const std::vector<double>* lowp, Tolerance tol);

// Forward (out, lse) or backward (dq, dk, dv, dsink) of `got` against the references with the
// tolerance of the case's dtype. lowp may be null for fp32 cases.
void expect_forward_close(sinkattn_dtype t, const Result& got, const Result& ref,
                          const Result* lowp);
// dq, dk, dv as above. dsink: in fp32 against the fp64 reference; in every dtype against the
// formula applied to the library's own out and lse (own_forward), which isolates the backward:
// a 16-bit out's rounding moves a per-head scalar by a random amount that a 2x rule on so few
// values cannot bound reliably.
void expect_backward_close(sinkattn_dtype t, const Result& got, const Result& ref,
                           const Result* lowp, const DsinkCheck* own_forward);

// Runs forward and backward of case c on dev and checks everything against the references: out,
// lse, dq, dk, dv, dsink, untouched gaps and inputs. A CUDA case whose backend refuses with
// NOT_SUPPORTED, or with no device present, is skipped with the reason. Returns the problem
// with the library's results for further checks (null when skipped or a call failed).
std::unique_ptr<Attention> run_and_check(const Case& c, Device dev);

}  // namespace sinkattn_test
