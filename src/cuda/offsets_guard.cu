// The packed-call guard (offsets_guard.h).
#include "cuda/offsets_guard.h"

#include "cuda/sm80/launch.h"

namespace sinkattn::cuda {
namespace {

constexpr int kThreads = 1024;  // a long list (65,535 sequences) in 16 rounds of 4 entries a thread

// Whether entry b of the offsets breaks a rule the CPU backend checks.
__device__ bool broken(const OffsetsGuard& g, int64_t b) {
  const int64_t q0 = g.cu_q[b], k0 = g.cu_k[b];
  if (b == 0 && (q0 < 0 || k0 < 0)) return true;
  if (b == g.batch) return q0 > g.total_q || k0 > g.total_k;
  const int64_t len_q = int64_t{g.cu_q[b + 1]} - q0, len_k = int64_t{g.cu_k[b + 1]} - k0;
  if (len_q < 0 || len_k < 0 || len_q > g.max_q || len_k > g.max_k) return true;
  return g.zigzag_world > 0 && (len_q % 2 != 0 || len_k != g.zigzag_world * len_q);
}

// The rows to write: [0, first) and [last, total). (Checked offsets: 0 <= first <= last <= total.)
struct Outside {
  int64_t first, last, total;
  __device__ int64_t count() const { return first + total - last; }
  __device__ int64_t row(int64_t i) const { return i < first ? i : last + (i - first); }
};

__global__ void __launch_bounds__(kThreads) offsets_guard_kernel(const OffsetsGuard g) {
  bool bad = false;  // every block reads the whole list; no early exit, so the loads overlap
#pragma unroll 4
  for (int64_t b = threadIdx.x; b <= g.batch; b += kThreads) bad |= broken(g, b);
  bad = __syncthreads_or(bad);

  // Broken: everything, NaN (a cold path). Else the rows outside the sequences: 0, lse -inf.
  const Outside q = bad ? Outside{0, 0, g.total_q} : Outside{g.cu_q[0], g.cu_q[g.batch], g.total_q};
  const Outside k = bad ? Outside{0, 0, g.total_k} : Outside{g.cu_k[0], g.cu_k[g.batch], g.total_k};
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
      g.lse[i / q.count() * g.total_q + q.row(i % q.count())] = lse;
  if (bad && g.dsink != nullptr)
    for (int64_t i = first; i < g.heads_q; i += stride) g.dsink[i] = __int_as_float(0x7fc00000);
}

}  // namespace

void launch_offsets_guard(const OffsetsGuard& g, int sms, cudaStream_t stream) {
  // As many blocks as SMs for the fills, fewer for a long list (each block reads all of it, 8
  // bytes an entry), so that the check stays a few microseconds (~16 rounds of loads at most).
  const int64_t by_list = 65536 / (g.batch + 1);
  const int blocks = (int)(by_list < 1 ? 1 : by_list < sms ? by_list : sms);
  offsets_guard_kernel<<<blocks, kThreads, 0, stream>>>(g);
  sm80::check_launch("sinkattn packed offsets guard kernel");
}

}  // namespace sinkattn::cuda
