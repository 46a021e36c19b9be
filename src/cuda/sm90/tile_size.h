// Tile shapes and register split of the Hopper kernels: one constexpr function used by the host
// (grid, shared memory) and the kernels, so the two never disagree.
#pragma once

namespace sinkattn::cuda::sm90 {

struct FwdTile {
  int block_m;        // query rows per block: 64 per consumer warpgroup
  int block_n;        // key rows per stage
  int stages;         // k/v stages in flight
  int consumers;      // consumer warpgroups (one producer warpgroup besides)
  int producer_regs;  // setmaxnreg targets: 128 * (producer + consumers * consumer) <= 64K
  int consumer_regs;
};

constexpr FwdTile fwd_tile(int d) {
  // d 64: three consumers (more warps to hide the softmax, which costs as much per pair as at
  // d 128 against half the matrix work); d 128: two, with room for 64 + 64 accumulators each.
  return d <= 64 ? FwdTile{192, 128, 2, 3, 32, 160} : FwdTile{128, 128, 2, 2, 40, 232};
}

struct BwdTile {
  int block_n;        // key rows per block: 64 per consumer warpgroup (its dK, dV rows)
  int block_m;        // query rows per step
  bool query_split;   // consumers split the step's queries for S, dP and dQ (d 64) instead of
                      // the keys (d 128, where S^T and dP^T of 64 queries fit beside dK, dV)
  int stages;         // q / dout stages in flight
  int consumers;      // consumer warpgroups
  int producer_regs;  // setmaxnreg targets, as in FwdTile
  int consumer_regs;
};

// Each consumer keeps its 64 keys' dK and dV (2 x D/2 fp32 per thread) for the whole block.
// d 64 has the registers for 64 x 128 tiles of S and dP, so it takes 128-query steps with
// bigger products; d 128 takes 64-query steps with S^T and dP^T over the consumer's own keys.
constexpr BwdTile bwd_tile(int d) {
  return d <= 64 ? BwdTile{128, 128, true, 2, 2, 24, 240} : BwdTile{128, 64, false, 2, 2, 24, 240};
}

}  // namespace sinkattn::cuda::sm90
