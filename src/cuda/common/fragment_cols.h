// Which columns of an mma / wgmma C fragment a row's visible range covers, as a bit mask: lane
// (g, t) of a warp holds columns 8n + 2t and 8n + 2t + 1 of each n-tile n, so a mask test per
// score becomes one bit test (ptxas unpacks the bits into predicates with R2P) instead of two
// compares of a materialized column.
#pragma once

#include <cstdint>

#include "cuda/common/host_device.h"

namespace sinkattn::cuda {

// Bit n set iff column 8n + 2t + e lies in [lo, hi] (t = lane % 4, e in {0, 1}), for lo, hi in
// [-1, 8 * 31]: n-tiles 0..30 of a row.
SINKATTN_HOST_DEVICE uint32_t fragment_cols(int lo, int hi, int t, int e) {
  int nlo = (lo - 2 * t - e + 7) >> 3;  // ceil((lo - 2t - e) / 8): shifts floor negatives too
  if (nlo < 0) nlo = 0;
  const int nhi = (hi - 2 * t - e) >> 3;  // floor((hi - 2t - e) / 8)
  return nhi < nlo ? 0u : ((2u << nhi) - 1u) & ~((1u << nlo) - 1u);
}

}  // namespace sinkattn::cuda
