// A positive value per CUDA device, queried once and then read without a lock: host threads
// driving their own GPUs call in at once, and two racing on a first query store the same answer.
#pragma once

#include <atomic>

namespace sinkattn::cuda {

// known[device] once a query answered it; query() otherwise. Answers <= 0 (a failed query) are
// not kept, so the next call asks again; ordinals outside 0..63 are asked every time.
template <typename Query>
int per_device(std::atomic<int> (&known)[64], int device, Query&& query) {
  const bool cached = device >= 0 && device < 64;
  int v = cached ? known[device].load(std::memory_order_relaxed) : 0;
  if (v > 0) return v;
  v = query();
  if (cached && v > 0) known[device].store(v, std::memory_order_relaxed);
  return v;
}

}  // namespace sinkattn::cuda
