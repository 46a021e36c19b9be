// Device memory and clocks of the C ABI benchmark: host memory and a wall clock on the CPU, the
// CUDA runtime and CUDA events when built with SINKATTN_BENCH_CUDA.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifdef SINKATTN_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace cabi {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct OutOfMemory : Failure {
  using Failure::Failure;
};

struct Device {
  bool cuda = false;

#ifdef SINKATTN_BENCH_CUDA
  static void ok(cudaError_t e, const char* what) {
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw OutOfMemory(std::string(what) + ": out of memory");
    }
    if (e != cudaSuccess) throw Failure(std::string(what) + ": " + cudaGetErrorString(e));
  }
#endif

  void* alloc(size_t bytes) const {
    if (bytes == 0) return nullptr;
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) {
      void* p = nullptr;
      ok(cudaMalloc(&p, bytes), "cudaMalloc");
      return p;
    }
#endif
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) throw OutOfMemory("host allocation");
    return p;
  }
  void release(void* p) const {
    if (!p) return;
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) {
      cudaFree(p);
      return;
    }
#endif
    std::free(p);
  }
  void upload(void* dst, const void* src, size_t bytes) const {
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) return ok(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
#endif
    std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) const {
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) return ok(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
#endif
    std::memcpy(dst, src, bytes);
  }
  void sync() const {
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) {
      ok(cudaGetLastError(), "launch");
      ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    }
#endif
  }
  size_t cache_bytes() const {
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) {
      int dev = 0, l2 = 0;
      cudaGetDevice(&dev);
      cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
      return static_cast<size_t>(l2);
    }
#endif
    return size_t(32) << 20;  // a typical server L3 slice
  }
  size_t free_bytes() const {
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) {
      size_t f = 0, t = 0;
      cudaMemGetInfo(&f, &t);
      return f;
    }
#endif
    return size_t(8) << 30;
  }
  // Milliseconds of each call(i), timed one by one (events on the GPU, a wall clock on the CPU).
  std::vector<double> time_calls(const std::function<void(int)>& call, int first, int n) const {
    std::vector<double> ms(n);
#ifdef SINKATTN_BENCH_CUDA
    if (cuda) {
      std::vector<cudaEvent_t> ev(2 * n);
      for (auto& e : ev) ok(cudaEventCreate(&e), "cudaEventCreate");
      for (int i = 0; i < n; ++i) {
        cudaEventRecord(ev[2 * i]);
        call(first + i);
        cudaEventRecord(ev[2 * i + 1]);
      }
      sync();
      for (int i = 0; i < n; ++i) {
        float t = 0;
        cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]);
        ms[i] = t;
      }
      for (auto& e : ev) cudaEventDestroy(e);
      return ms;
    }
#endif
    for (int i = 0; i < n; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      call(first + i);
      ms[i] =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    return ms;
  }
};

// A device buffer freed on scope exit.
struct Buffer {
  const Device* dev = nullptr;
  void* ptr = nullptr;
  size_t bytes = 0;
  Buffer(const Device& d, size_t n) : dev(&d), ptr(d.alloc(n)), bytes(n) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : dev(o.dev), ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(dev, o.dev);
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~Buffer() { dev->release(ptr); }
};

}  // namespace cabi
