// The CUDA backend of a build without nvcc: api.cpp refuses CUDA params before reaching these,
// so only compiled() and take_offsets_fault() are ever called; the rest keep the linker and the
// interface honest.
#include "backend.h"

namespace sinkattn {
namespace cuda {

namespace {
[[noreturn]] void unavailable() {
  throw Error(SINKATTN_ERROR_NOT_SUPPORTED, "this build of libsinkattn has no CUDA backend");
}
}  // namespace

bool compiled() { return false; }
bool take_offsets_fault(OffsetsFault*) { return false; }  // no CUDA call, no fault
void check_supported(const sinkattn_problem&) { unavailable(); }
size_t fwd_workspace_size(const sinkattn_fwd_params&) { unavailable(); }
size_t bwd_workspace_size(const sinkattn_bwd_params&) { unavailable(); }
void fwd(const sinkattn_fwd_params&) { unavailable(); }
void bwd(const sinkattn_bwd_params&) { unavailable(); }
std::string fwd_path(const sinkattn_problem&) { unavailable(); }
std::string bwd_path(const sinkattn_bwd_params&) { unavailable(); }

}  // namespace cuda
}  // namespace sinkattn
