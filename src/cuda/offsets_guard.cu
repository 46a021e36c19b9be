// The packed-call guard (offsets_guard.h).
#include "cuda/offsets_guard.h"

#include <atomic>
#include <cstring>
#include <mutex>

#include "cuda/sm80/launch.h"

namespace sinkattn::cuda {
namespace {

constexpr int kThreads = 1024;  // a long list (65,535 sequences) in 16 rounds of 4 entries a thread

// Keeps a fault for the host unless one is already kept (FaultRecord).
__device__ void publish(FaultRecord* record, const OffsetsFault& f) {
  volatile uint64_t* published = &record->published;
  if (*published != 0) return;
  record->fault = f;
  __threadfence_system();
  *published = 1;
}

// The rows to write: [0, first) and [last, total). (Checked offsets: 0 <= first <= last <= total.)
struct Outside {
  int64_t first, last, total;
  __device__ int64_t count() const { return first + total - last; }
  __device__ int64_t row(int64_t i) const { return i < first ? i : last + (i - first); }
};

__global__ void __launch_bounds__(kThreads) offsets_guard_kernel(const OffsetsGuard g) {
  const OffsetsLists& l = g.lists;
  __shared__ unsigned long long lowest;  // the block's lowest fault rank
  if (threadIdx.x == 0) lowest = kNoOffsetsFault;
  __syncthreads();
  unsigned long long mine = kNoOffsetsFault;  // every block reads the whole list; no early exit,
#pragma unroll 4                              // so the loads overlap
  for (int64_t b = threadIdx.x; b <= l.batch; b += kThreads) {
    const unsigned long long rank = offsets_fault_rank(l, b);
    mine = rank < mine ? rank : mine;
  }
  if (mine != kNoOffsetsFault) atomicMin(&lowest, mine);
  const bool bad = __syncthreads_or(mine != kNoOffsetsFault);
  if (bad && blockIdx.x == 0 && threadIdx.x == 0 && g.fault != nullptr) {
    OffsetsFault f = offsets_fault(l, lowest);
    f.device = g.device;
    publish(g.fault, f);
  }

  // Broken: everything, NaN (a cold path). Else the rows outside the sequences: 0, lse -inf.
  const Outside q = bad ? Outside{0, 0, l.total_q} : Outside{l.cu_q[0], l.cu_q[l.batch], l.total_q};
  const Outside k = bad ? Outside{0, 0, l.total_k} : Outside{l.cu_k[0], l.cu_k[l.batch], l.total_k};
  const int64_t first = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  const uint32_t pair = bad ? uint32_t{g.nan} * 0x10001u : 0u;
  const uint4 fill = make_uint4(pair, pair, pair, pair);
  const int64_t vecs = g.head_dim / 8;  // 16-byte pieces of a (row, head)
  for (const OffsetsGuard::Rows& r : g.rows) {
    if (r.t.data == nullptr) continue;
    const Outside& o = r.keys ? k : q;
    const int64_t n = o.count() * r.heads * vecs;
    for (int64_t i = first; i < n; i += stride) {
      const int64_t row = o.row(i / (r.heads * vecs)), head = i / vecs % r.heads;
      auto* at = static_cast<uint16_t*>(r.t.data) + row * r.t.row_stride + head * r.t.head_stride;
      reinterpret_cast<uint4*>(at)[i % vecs] = fill;
    }
  }
  const float lse = bad ? __int_as_float(0x7fc00000) : -INFINITY;
  if (g.lse != nullptr)
    for (int64_t i = first; i < q.count() * g.heads_q; i += stride)
      g.lse[i / q.count() * l.total_q + q.row(i % q.count())] = lse;
  if (bad && g.dsink != nullptr)
    for (int64_t i = first; i < g.heads_q; i += stride) g.dsink[i] = __int_as_float(0x7fc00000);
}

std::atomic<FaultRecord*> g_record{nullptr};  // fault_record()'s allocation

}  // namespace

FaultRecord* fault_record() {
  static std::once_flag allocated;
  std::call_once(allocated, [] {
    // Allowed while the caller captures a CUDA graph: the thread's capture mode relaxed around it.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    void* p = nullptr;
    // Mapped and portable: with unified addressing the host address is the device address on
    // every device.
    if (cudaHostAlloc(&p, sizeof(FaultRecord), cudaHostAllocMapped | cudaHostAllocPortable) ==
        cudaSuccess) {
      std::memset(p, 0, sizeof(FaultRecord));
      g_record.store(static_cast<FaultRecord*>(p), std::memory_order_release);
    } else {
      cudaGetLastError();  // not sticky: clear it, or the next launch check would report it
    }
    cudaThreadExchangeStreamCaptureMode(&mode);
  });
  return g_record.load(std::memory_order_acquire);
}

bool take_offsets_fault(OffsetsFault* fault) {
  FaultRecord* r = g_record.load(std::memory_order_acquire);
  if (r == nullptr || __atomic_load_n(&r->published, __ATOMIC_ACQUIRE) == 0) return false;
  *fault = r->fault;
  uint64_t expected = 1;  // claimed by one caller only
  return __atomic_compare_exchange_n(&r->published, &expected, uint64_t{0}, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE);
}

void launch_offsets_guard(const OffsetsGuard& g, cudaStream_t stream) {
  // As many blocks as SMs for the fills, fewer for a long list (each block reads all of it, 8
  // bytes an entry), so that the check stays a few microseconds (~16 rounds of loads at most).
  const int64_t by_list = 65536 / (g.lists.batch + 1), sms = sm80::sm_count();
  const int blocks = (int)(by_list < 1 ? 1 : by_list < sms ? by_list : sms);
  offsets_guard_kernel<<<blocks, kThreads, 0, stream>>>(g);
  sm80::check_launch("sinkattn packed offsets guard kernel");
}

}  // namespace sinkattn::cuda
