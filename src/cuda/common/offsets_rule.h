// The rules of a packed call's cu_seqlens as the CUDA offsets guard (offsets_guard.h) checks them
// on the device, one entry a thread: the rank of an entry's first broken rule in the CPU's order of
// checks (api.cpp), so that the lowest rank of all entries is the error the CPU would report, and
// the fault a rank names. Host and device: the CPU tests check ranks and faults against the CPU's
// own checks (tests/cpp/test_offsets_rule.cpp).
#pragma once

#include <cstdint>

#include "backend.h"
#include "cuda/common/host_device.h"

namespace sinkattn::cuda {

// The offsets of one call and the bounds they must keep.
struct OffsetsLists {
  const int32_t* cu_q = nullptr;  // (batch + 1,)
  const int32_t* cu_k = nullptr;
  int64_t batch = 0;
  int64_t max_q = 0, max_k = 0;      // the lengths the call was sized by (seqlen_q / _k)
  int64_t total_q = 0, total_k = 0;  // rows of q and of k / v
  int32_t zigzag_world = 0;          // > 0: each len_q even, len_k = zigzag_world * len_q
};

constexpr unsigned long long kNoOffsetsFault = ~0ull;

// The CPU's order: cu_seqlens_q's first offset (rank 0), its sequences' lengths in order (ranks
// 1..batch: decreasing, then too long), its last offset against the rows (batch + 1); the same
// for cu_seqlens_k (ranks batch + 2 ...); then the zigzag lengths of each sequence. Entry b of
// the lists has at most one rank of each list; this is the lowest, or kNoOffsetsFault.
SINKATTN_HOST_DEVICE unsigned long long offsets_fault_rank(const OffsetsLists& l, int64_t b) {
  const unsigned long long span = l.batch + 2;  // a list's ranks
  for (int keys = 0; keys < 2; ++keys) {
    const int32_t* cu = keys ? l.cu_k : l.cu_q;
    const int64_t at = cu[b];
    if (b == 0 && at < 0) return keys * span;
    if (b == l.batch) {
      if (at > (keys ? l.total_k : l.total_q)) return keys * span + b + 1;
      continue;
    }
    const int64_t len = int64_t{cu[b + 1]} - at;
    if (len < 0 || len > (keys ? l.max_k : l.max_q)) return keys * span + b + 1;
  }
  if (l.zigzag_world > 0 && b < l.batch) {
    const int64_t len_q = int64_t{l.cu_q[b + 1]} - l.cu_q[b];
    const int64_t len_k = int64_t{l.cu_k[b + 1]} - l.cu_k[b];
    if (len_q % 2 != 0 || len_k != l.zigzag_world * len_q) return 2 * span + b;
  }
  return kNoOffsetsFault;
}

// The fault a rank of offsets_fault_rank names, re-read from the offsets (device left 0).
SINKATTN_HOST_DEVICE OffsetsFault offsets_fault(const OffsetsLists& l, unsigned long long rank) {
  OffsetsFault f;
  f.world = l.zigzag_world;
  const int64_t span = l.batch + 2, list = (int64_t)(rank / span), pos = (int64_t)(rank % span);
  if (list < 2) {
    const int32_t* cu = list ? l.cu_k : l.cu_q;
    f.keys = (int32_t)list;
    f.entry = pos == span - 1 ? l.batch : pos;
    if (pos == 0) {
      f.rule = OffsetsRule::kNegativeStart;
      f.got = cu[0];
    } else if (pos == span - 1) {
      f.rule = OffsetsRule::kPastRows;
      f.got = cu[l.batch];
      f.bound = list ? l.total_k : l.total_q;
    } else if (cu[pos] < cu[pos - 1]) {
      f.rule = OffsetsRule::kDecreasing;
      f.got = cu[pos];
      f.bound = cu[pos - 1];
    } else {
      f.rule = OffsetsRule::kTooLong;
      f.got = int64_t{cu[pos]} - cu[pos - 1];
      f.bound = list ? l.max_k : l.max_q;
    }
    return f;
  }
  const int64_t len_q = int64_t{l.cu_q[pos + 1]} - l.cu_q[pos];
  const bool odd = len_q % 2 != 0;
  f.entry = pos + 1;
  f.rule = odd ? OffsetsRule::kOddQueryLength : OffsetsRule::kZigzagKeys;
  f.keys = odd ? 0 : 1;
  f.got = odd ? len_q : int64_t{l.cu_k[pos + 1]} - l.cu_k[pos];
  f.bound = len_q;
  return f;
}

}  // namespace sinkattn::cuda
