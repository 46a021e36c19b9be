// Forward (out, lse) and backward (dq, dk, dv, dsink) over the shape grid of grid_cases.cpp.
#include <gtest/gtest.h>

#include "compare.h"
#include "grid_cases.h"

namespace sinkattn_test {
namespace {

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name(); }

class CpuGrid : public ::testing::TestWithParam<Case> {};
TEST_P(CpuGrid, MatchesReference) { run_and_check(GetParam(), Device::kCpu); }
INSTANTIATE_TEST_SUITE_P(Grid, CpuGrid, ::testing::ValuesIn(cpu_grid()), case_name);

#ifdef SINKATTN_TEST_CUDA
class CudaGrid : public ::testing::TestWithParam<Case> {};
TEST_P(CudaGrid, MatchesReference) {
  SINKATTN_SKIP_WITHOUT_DEVICE(Device::kCuda);
  run_and_check(GetParam(), Device::kCuda);
}
INSTANTIATE_TEST_SUITE_P(Grid, CudaGrid, ::testing::ValuesIn(cuda_grid()), case_name);
#endif

}  // namespace
}  // namespace sinkattn_test
