// Ping-pong between consumer warpgroups: they take turns issuing their matrix products, round
// robin through named barriers (first_id + c), so one warpgroup's softmax / elementwise work
// overlaps another's tensor-core work instead of all of them stalling together.
#pragma once

#include "cuda/sm90/tma.h"

namespace sinkattn::cuda::sm90 {

struct Turns {
  bool on;       // off: every call is a no-op
  int c, count;  // this consumer and the number of consumers
  int first_id;  // named barrier ids first_id .. first_id + count - 1

  // Consumer 0 goes first: the last consumer hands it the first turn.
  __device__ __forceinline__ void start() const {
    if (c == count - 1) pass();
  }
  __device__ __forceinline__ void wait() const {
    if (on) named_sync(first_id + c, 256);
  }
  __device__ __forceinline__ void pass() const {
    if (on) named_arrive(first_id + (c + 1) % count, 256);
  }
  // Consumer 0 absorbs the last consumer's final hand-over, so every barrier phase completes.
  __device__ __forceinline__ void finish() const {
    if (c == 0) wait();
  }
};

}  // namespace sinkattn::cuda::sm90
