// Test buffers: host memory (poisonable, 256-byte aligned) mirrored on the GPU when a case runs
// there, and strided (batch, row, head, dim) tensors laid out in several ways over them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "half.h"
#include "sinkattn/sinkattn.h"

namespace sinkattn_test {

enum class Device { kCpu, kCuda };

// True when a CUDA device can run tests; otherwise *why says what is missing.
bool cuda_device_present(std::string* why);
void cuda_synchronize();  // waits for the default stream; fails the test on a CUDA error

// First statement of a test body that runs on `dev`: skips the test (before any device memory
// is touched) when dev is CUDA and no device can run it. GTEST_SKIP only leaves the function it
// is written in, hence a macro.
#define SINKATTN_SKIP_WITHOUT_DEVICE(dev)                                                   \
  do {                                                                                      \
    std::string why_no_device_;                                                             \
    if ((dev) == ::sinkattn_test::Device::kCuda &&                                          \
        !::sinkattn_test::cuda_device_present(&why_no_device_))                             \
      GTEST_SKIP() << why_no_device_;                                                       \
  } while (0)

// Bytes the library reads or writes: host memory, plus a device copy for Device::kCuda.
class Blob {
 public:
  Blob() = default;
  Blob(size_t bytes, Device dev);
  Blob(Blob&&) noexcept;
  Blob& operator=(Blob&&) noexcept;
  Blob(const Blob&) = delete;
  Blob& operator=(const Blob&) = delete;
  ~Blob();

  uint8_t* host() { return host_.get(); }
  const uint8_t* host() const { return host_.get(); }
  size_t size() const { return bytes_; }
  std::vector<uint8_t> host_bytes() const { return {host(), host() + bytes_}; }
  void* data();      // the pointer handed to the library (device memory for CUDA)
  void upload();     // host -> device (no-op on the CPU)
  void download();   // device -> host (no-op on the CPU)

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> host_;
  void* dev_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::kCpu;
};

// How a logical (batch, rows, heads, dim) tensor sits in memory. The head dim is always
// contiguous; the others exercise the library's stride handling.
enum class Layout {
  kContiguous,  // (B, S, H, D)
  kHeadMajor,   // (B, H, S, D) viewed as (B, S, H, D): a transposed view
  kPadded,      // (B, S, H, D) with gaps after each head, row and batch and before the start
};
const char* layout_name(Layout l);

// Gaps and unwritten elements hold NaN ("poison") so a read of a gap propagates into the results
// and a missed write stays visible.
class Tensor {
 public:
  Tensor() = default;
  Tensor(sinkattn_dtype dtype, int64_t batch, int64_t rows, int64_t heads, int64_t dim,
         Layout layout, Device dev);

  float get(int64_t b, int64_t r, int64_t h, int64_t c) const;
  void set(int64_t b, int64_t r, int64_t h, int64_t c, float x);  // rounds to the dtype
  void poison();             // every byte of the buffer, gaps included (host side)
  bool gaps_intact() const;  // every element outside the logical tensor still holds poison
  sinkattn_tensor view();    // strides and the library-side pointer
  Blob& blob() { return blob_; }

  int64_t batch = 0, rows = 0, heads = 0, dim = 0;
  sinkattn_dtype dtype = SINKATTN_FLOAT32;

 private:
  int64_t offset(int64_t b, int64_t r, int64_t h, int64_t c) const {
    return start_ + b * batch_stride_ + r * row_stride_ + h * head_stride_ + c;
  }
  void write_poison(int64_t element);
  bool is_poison(int64_t element) const;

  Blob blob_;
  int64_t start_ = 0, batch_stride_ = 0, row_stride_ = 0, head_stride_ = 0, elements_ = 0;
};

// fp32 vector on the library's device (sinks, lse, dsink) with poison support.
class FloatArray {
 public:
  FloatArray() = default;
  FloatArray(size_t n, Device dev);
  float* host() { return reinterpret_cast<float*>(blob_.host()); }
  const float* host() const { return reinterpret_cast<const float*>(blob_.host()); }
  float* data() { return n_ ? static_cast<float*>(blob_.data()) : nullptr; }
  size_t size() const { return n_; }
  void poison();
  Blob& blob() { return blob_; }

 private:
  Blob blob_;
  size_t n_ = 0;
};

}  // namespace sinkattn_test
