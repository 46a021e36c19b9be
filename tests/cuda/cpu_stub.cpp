// Stands in for the CPU backend in the standalone CUDA check library (scripts/gpu_dev.sh), so
// the CUDA path can be checked through api.cpp while src/cpu/ is being changed elsewhere.
#include "backend.h"

namespace sinkattn::cpu {
[[noreturn]] static void unavailable() {
  throw Error(SINKATTN_ERROR_NOT_SUPPORTED, "CPU backend not linked into the CUDA check library");
}
size_t fwd_workspace_size(const sinkattn_fwd_params&) { unavailable(); }
size_t bwd_workspace_size(const sinkattn_bwd_params&) { unavailable(); }
void fwd(const sinkattn_fwd_params&) { unavailable(); }
void bwd(const sinkattn_bwd_params&) { unavailable(); }
}  // namespace sinkattn::cpu
