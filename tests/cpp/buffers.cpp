#include "buffers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#ifdef SINKATTN_TEST_CUDA
#include <cuda_runtime_api.h>
#endif

namespace sinkattn_test {

namespace {
constexpr size_t kAlign = 256;
constexpr uint32_t kPoison32 = 0x7fc00000u;  // quiet NaN
constexpr uint16_t kPoisonBf16 = 0x7fc0u;
constexpr uint16_t kPoisonHalf = 0x7e00u;

#ifdef SINKATTN_TEST_CUDA
void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#endif
}  // namespace

bool cuda_device_present(std::string* why) {
#ifdef SINKATTN_TEST_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    *why = std::string("no CUDA device: ") + (e != cudaSuccess ? cudaGetErrorString(e) : "count 0");
    return false;
  }
  return true;
#else
  *why = "tests built without CUDA";
  return false;
#endif
}

void cuda_synchronize() {
#ifdef SINKATTN_TEST_CUDA
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a library call");
#endif
}

void Blob::Free::operator()(uint8_t* p) const { std::free(p); }

Blob::Blob(size_t bytes, Device dev) : bytes_(bytes), device_(dev) {
  size_t rounded = std::max<size_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  host_.reset(static_cast<uint8_t*>(std::aligned_alloc(kAlign, rounded)));
  if (!host_) throw std::bad_alloc();
  std::memset(host_.get(), 0, rounded);
  if (dev == Device::kCuda) {
#ifdef SINKATTN_TEST_CUDA
    check_cuda(cudaMalloc(&dev_, rounded), "cudaMalloc");
#else
    throw std::runtime_error("Blob: tests built without CUDA");
#endif
  }
}

Blob::Blob(Blob&& o) noexcept { *this = std::move(o); }

Blob& Blob::operator=(Blob&& o) noexcept {
  std::swap(host_, o.host_);
  std::swap(dev_, o.dev_);
  std::swap(bytes_, o.bytes_);
  std::swap(device_, o.device_);
  return *this;
}

Blob::~Blob() {
#ifdef SINKATTN_TEST_CUDA
  if (dev_) cudaFree(dev_);
#endif
}

void* Blob::data() { return device_ == Device::kCuda ? dev_ : host_.get(); }

void Blob::upload() {
#ifdef SINKATTN_TEST_CUDA
  if (device_ == Device::kCuda && bytes_)
    check_cuda(cudaMemcpy(dev_, host_.get(), bytes_, cudaMemcpyHostToDevice), "upload");
#endif
}

void Blob::download() {
#ifdef SINKATTN_TEST_CUDA
  if (device_ == Device::kCuda && bytes_)
    check_cuda(cudaMemcpy(host_.get(), dev_, bytes_, cudaMemcpyDeviceToHost), "download");
#endif
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::kHeadMajor: return "headmajor";
    case Layout::kPadded: return "padded";
    default: return "contig";
  }
}

Tensor::Tensor(sinkattn_dtype t, int64_t b, int64_t r, int64_t h, int64_t d, Layout layout,
               Device dev)
    : batch(b), rows(r), heads(h), dim(d), dtype(t) {
  int64_t rows1 = std::max<int64_t>(r, 1);  // keeps strides nonzero for empty tensors
  switch (layout) {
    case Layout::kContiguous:
      head_stride_ = d, row_stride_ = h * d, batch_stride_ = rows1 * h * d;
      break;
    case Layout::kHeadMajor:
      row_stride_ = d, head_stride_ = rows1 * d, batch_stride_ = h * rows1 * d;
      break;
    case Layout::kPadded:  // gaps of 8 elements keep every row 16-byte aligned
      start_ = 8, head_stride_ = d + 8, row_stride_ = h * (d + 8) + 8;
      batch_stride_ = rows1 * row_stride_ + 16;
      break;
  }
  elements_ = start_ + b * batch_stride_ + (layout == Layout::kPadded ? 8 : 0);
  blob_ = Blob(static_cast<size_t>(elements_) * dtype_size(t), dev);
  poison();
}

void Tensor::write_poison(int64_t e) {
  uint8_t* p = blob_.host() + e * dtype_size(dtype);
  if (dtype == SINKATTN_FLOAT32) std::memcpy(p, &kPoison32, 4);
  if (dtype == SINKATTN_BFLOAT16) std::memcpy(p, &kPoisonBf16, 2);
  if (dtype == SINKATTN_FLOAT16) std::memcpy(p, &kPoisonHalf, 2);
}

bool Tensor::is_poison(int64_t e) const {
  const uint8_t* p = blob_.host() + e * dtype_size(dtype);
  if (dtype == SINKATTN_FLOAT32) return std::memcmp(p, &kPoison32, 4) == 0;
  if (dtype == SINKATTN_BFLOAT16) return std::memcmp(p, &kPoisonBf16, 2) == 0;
  return std::memcmp(p, &kPoisonHalf, 2) == 0;
}

void Tensor::poison() {
  for (int64_t e = 0; e < elements_; ++e) write_poison(e);
}

bool Tensor::gaps_intact() const {
  std::vector<bool> logical(elements_, false);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t c = 0; c < dim; ++c) logical[offset(b, r, h, c)] = true;
  for (int64_t e = 0; e < elements_; ++e)
    if (!logical[e] && !is_poison(e)) return false;
  return true;
}

float Tensor::get(int64_t b, int64_t r, int64_t h, int64_t c) const {
  const uint8_t* p = blob_.host() + offset(b, r, h, c) * dtype_size(dtype);
  if (dtype == SINKATTN_FLOAT32) {
    float x;
    std::memcpy(&x, p, 4);
    return x;
  }
  uint16_t x;
  std::memcpy(&x, p, 2);
  return dtype == SINKATTN_BFLOAT16 ? bf16_to_float(x) : half_to_float(x);
}

void Tensor::set(int64_t b, int64_t r, int64_t h, int64_t c, float x) {
  uint8_t* p = blob_.host() + offset(b, r, h, c) * dtype_size(dtype);
  if (dtype == SINKATTN_FLOAT32) {
    std::memcpy(p, &x, 4);
    return;
  }
  uint16_t y = dtype == SINKATTN_BFLOAT16 ? float_to_bf16(x) : float_to_half(x);
  std::memcpy(p, &y, 2);
}

sinkattn_tensor Tensor::view() {
  sinkattn_tensor t;
  t.data = static_cast<uint8_t*>(blob_.data()) + start_ * dtype_size(dtype);
  t.batch_stride = batch_stride_;
  t.row_stride = row_stride_;
  t.head_stride = head_stride_;
  return t;
}

FloatArray::FloatArray(size_t n, Device dev) : blob_(n * sizeof(float), dev), n_(n) { poison(); }

void FloatArray::poison() {
  for (size_t i = 0; i < n_; ++i) std::memcpy(host() + i, &kPoison32, 4);
}

}  // namespace sinkattn_test
