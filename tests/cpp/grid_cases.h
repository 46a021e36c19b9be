// The shape grid of DESIGN.md as a list of cases: every axis covered, heavy combinations on
// small head counts. The CUDA list reuses the CPU one in 16-bit dtypes and adds long sequences.
#pragma once

#include <vector>

#include "attention_case.h"

namespace sinkattn_test {

std::vector<Case> cpu_grid();
std::vector<Case> cuda_grid();

}  // namespace sinkattn_test
