// The shape grid of DESIGN.md as a list of cases: every axis covered, heavy combinations on
// small head counts. The CUDA list reuses the CPU one in 16-bit dtypes and adds long sequences.
#pragma once

#include <utility>
#include <vector>

#include "attention_case.h"

namespace sinkattn_test {

std::vector<Case> cpu_grid();
std::vector<Case> cuda_grid();

// 120 sequences of 0 to 22 query rows (some with 5 more keys) and, at index 60, one of 1500:
// (query rows, key rows) each. Packed, most of a grid over the longest sequence's row blocks
// would idle, so the kernels take their grids over slots (src/cuda/sm80/grid.h).
std::vector<std::pair<int, int>> short_docs_and_a_long_one();

}  // namespace sinkattn_test
