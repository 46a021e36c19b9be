// TMA tensor maps, encoded through the driver entry point the runtime hands out (so the
// library needs no link-time dependency on libcuda).
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include "backend.h"
#include "cuda/sm90/tensor_map.h"

namespace sinkattn::cuda::sm90 {
namespace {

constexpr uint64_t kMaxStrideBytes = uint64_t{1} << 40;  // TMA's limit on global strides

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found);
    if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) ptr = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// Byte strides of dims 1..3 (rows, heads, batch); a dim of extent 1 gets the rows' stride,
// which TMA accepts and never multiplies by a non-zero coordinate.
void strides(const sinkattn_tensor& t, const TensorShape& s, uint64_t (&out)[3]) {
  out[0] = uint64_t(t.row_stride) * 2;
  out[1] = s.heads > 1 ? uint64_t(t.head_stride) * 2 : out[0];
  out[2] = s.batch > 1 ? uint64_t(t.batch_stride) * 2 : out[0];
}

}  // namespace

std::string tma_unsupported(const char* name, const sinkattn_tensor& t, const TensorShape& s) {
  if (encode_fn() == nullptr) return "the driver offers no cuTensorMapEncodeTiled";
  if (s.rows == 0) return std::string(name) + " has no rows (a tensor map needs at least one)";
  uint64_t st[3];
  strides(t, s, st);
  for (uint64_t b : st)
    if (b == 0 || b % 16 != 0 || b >= kMaxStrideBytes)
      return std::string(name) + ": a stride of " + std::to_string(b) +
             " bytes, TMA needs a non-zero multiple of 16 below 2^40";
  return "";
}

namespace {

CUtensorMap encode(CUtensorMapDataType type, uint32_t rank, void* data, const cuuint64_t* dims,
                   const cuuint64_t* byte_strides, const cuuint32_t* box) {
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  CUtensorMap map{};
  const CUresult r = encode_fn()(&map, type, rank, data, dims, byte_strides, box, unit,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error(SINKATTN_ERROR_CUDA, "sinkattn: cuTensorMapEncodeTiled failed with CUresult " +
                                         std::to_string(int(r)));
  return map;
}

}  // namespace

CUtensorMap make_tile_map(const sinkattn_tensor& t, const TensorShape& s, int box_rows,
                          int box_heads) {
  uint64_t st[3];
  strides(t, s, st);
  const cuuint64_t dims[4] = {cuuint64_t(s.dim), cuuint64_t(s.rows), cuuint64_t(s.heads),
                              cuuint64_t(s.batch)};
  const cuuint64_t byte_strides[3] = {st[0], st[1], st[2]};
  const cuuint32_t box[4] = {64, cuuint32_t(box_rows), cuuint32_t(box_heads), 1};
  // 16-bit elements are copied, never converted, so one type serves bf16 and fp16.
  return encode(CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, t.data, dims, byte_strides, box);
}

CUtensorMap make_accum_map(float* data, int64_t rows, int64_t heads, int dim, int box_rows) {
  const cuuint64_t dims[3] = {cuuint64_t(dim), cuuint64_t(heads), cuuint64_t(rows)};
  const cuuint64_t byte_strides[2] = {cuuint64_t(dim) * 4, cuuint64_t(heads * dim) * 4};
  const cuuint32_t box[3] = {32, 1, cuuint32_t(box_rows)};
  return encode(CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, data, dims, byte_strides, box);
}

}  // namespace sinkattn::cuda::sm90
