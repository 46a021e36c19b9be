// Tile shapes of the portable kernels: one constexpr function, used by the host (grid and
// shared-memory sizes) and by the kernels (loop bounds), so the two can never disagree.
#pragma once

#include <cstdint>

namespace sinkattn::cuda::sm80 {

enum class Kernel { kFwd, kBwdDkDv, kBwdDq };

struct TileSize {
  int block_m;  // query rows per block
  int block_n;  // key rows per block
  int warps;
  // kFwd / kBwdDq: warps own m_tiles * 16 query rows each; q_in_regs keeps the
  // q (and dout) fragments in registers for the whole key loop instead of re-reading smem.
  bool q_in_regs;
  // kBwdDkDv: warps split the block_n x block_m score tile as (block_n / 16) x warps_m, and
  // the block_n x D dk/dv accumulators as (block_n / 16) x warps_m along D.
  int warps_m;
  // kBwdDkDv: 2 double-buffers the q/dout tiles (the next one loads during this one's math).
  int q_stages;
  // 16-row m-tiles per warp: kFwd / kBwdDq query rows (each k/v fragment read from shared
  // memory feeds m_tiles mma); kBwdDkDv key rows in the score and dK/dV products and query rows
  // in the dQ one. Then the blocks per SM the register budget is set for (__launch_bounds__).
  int m_tiles;
  int min_blocks;
};

// Two tile sets. The small one fits the 99 KB of shared memory a block may opt into on sm_86 /
// sm_89 (the smallest of the sm_80+ family), so it serves every portable target. The large one
// is for devices with 227 KB per block and 228 KB per SM (sm_90), taken where it measured faster
// there (H200, bf16; each needs over 82 KB, so only sm_90 keeps two blocks per SM): the d 64
// forward with 128-key blocks and q read from shared memory (gptoss 16k 281 -> 297 TFLOP/s, 4k
// 257 -> 276), the d 128 forward with 4 warps of 32 rows (llama 8k 261 -> 310), the d 128
// dk/dv kernel on 64 x 128 tiles with 8 warps of 32 keys x 32 queries (llama 8k backward 134 ->
// 211 with 16 warps of 16 keys, -> 248 with these), and the d 64 one on 128 x 128 tiles with 8
// warps of 32 keys x 64 queries (gptoss 16k backward 207 -> 237; its 16-warp shape measured
// 196). 96-key blocks for the d 64 forward measured 288, not taken.
constexpr TileSize tile_size(Kernel k, int d, bool large = false) {
  switch (k) {
    case Kernel::kFwd:
      if (d <= 64) return large && d > 32 ? TileSize{128, 128, 4, false, 1, 1, 2, 2}
                                          : TileSize{128, 64, 4, true, 1, 1, 2, 2};
      if (d <= 128) return large && d > 96 ? TileSize{128, 64, 4, false, 1, 1, 2, 2}
                                           : TileSize{128, 64, 8, true, 1, 1, 1, 1};
      return {64, 32, 4, false, 1, 1, 1, 1};
    case Kernel::kBwdDkDv:
      if (d <= 64) return large && d > 32 ? TileSize{128, 128, 8, false, 2, 2, 2, 1}
                                          : TileSize{64, 128, 8, false, 1, 2, 1, 1};
      if (d <= 96) return {64, 64, 8, false, 2, 2, 1, 1};
      if (d <= 128) return large ? TileSize{64, 128, 8, false, 2, 2, 2, 1}
                                 : TileSize{32, 64, 8, false, 2, 2, 1, 1};
      return {32, 32, 4, false, 2, 1, 1, 1};
    case Kernel::kBwdDq:
      if (d <= 64) return {128, 32, 4, true, 1, 1, 2, 2};
      if (d <= 128) return {64, 32, 4, false, 1, 1, 1, 1};
      return {32, 16, 2, false, 1, 1, 1, 1};
  }
  return {0, 0, 0, false, 0, 0, 0, 0};
}

// Whether (k, d) has a large tile shape of its own (a second instantiation).
constexpr bool has_large_tiles(Kernel k, int d) {
  const TileSize a = tile_size(k, d, false), b = tile_size(k, d, true);
  return a.block_m != b.block_m || a.block_n != b.block_n || a.warps != b.warps ||
         a.q_in_regs != b.q_in_regs || a.warps_m != b.warps_m || a.q_stages != b.q_stages ||
         a.m_tiles != b.m_tiles || a.min_blocks != b.min_blocks;
}

constexpr int kMaxSmemBytes = 99 * 1024;         // small tiles: every sm_80+ device
constexpr int kMaxSmemBytesLarge = 227 * 1024;   // large tiles: sm_90, per block ...
constexpr int kSmemPerSmLarge = 228 * 1024;      // ... and per SM
constexpr int kSmemReservedPerBlock = 1024;      // what the system keeps per block (sm_80+)

// Shared-memory rows are padded by 8 elements (16 bytes) so that the 8 row addresses of an
// ldmatrix fall in distinct bank groups for every head dim (32..256).
constexpr int smem_stride(int cols) { return cols + 8; }

// kFwd with q in registers: the q tile is staged in the k/v buffers (so its load cannot overlap
// the first k/v load) only where a separate q tile would not fit.
constexpr bool fwd_q_aliases_kv(int d, bool large = false) {
  const TileSize t = tile_size(Kernel::kFwd, d, large);
  return t.q_in_regs && (t.block_m + 4 * t.block_n) * smem_stride(d) * 2 > kMaxSmemBytes;
}

// Bytes of dynamic shared memory per block (16-bit elements; lse/delta as fp32).
constexpr int smem_bytes(Kernel k, int d, bool large = false) {
  const TileSize t = tile_size(k, d, large);
  const int row = smem_stride(d) * 2;
  switch (k) {
    case Kernel::kFwd:  // the q tile and double-buffered k and v tiles
      return fwd_q_aliases_kv(d, large)
                 ? (t.block_m > 4 * t.block_n ? t.block_m : 4 * t.block_n) * row
                 : t.block_m * row + 4 * t.block_n * row;
    case Kernel::kBwdDkDv:  // k, v; q, dout, lse, delta per stage; ds^T; p^T unless the
                            // warps keep it in registers (warps_m == 1)
      return 2 * t.block_n * row + t.q_stages * t.block_m * (2 * row + 8) +
             (t.warps_m == 1 ? 1 : 2) * t.block_n * smem_stride(t.block_m) * 2;
    case Kernel::kBwdDq:  // q, dout; double-buffered k and v
      return 2 * t.block_m * row + 4 * t.block_n * row;
  }
  return 0;
}

// Whether a device with smem_block bytes of opt-in shared memory per block and smem_sm per SM
// holds kernel k's large tiles at head dim d at the blocks per SM they were tuned for (the rule
// large_tiles applies at launch).
constexpr bool large_tiles_fit(Kernel k, int d, int smem_block, int smem_sm) {
  const int bytes = smem_bytes(k, d, true);
  return bytes <= smem_block &&
         tile_size(k, d, true).min_blocks * (bytes + kSmemReservedPerBlock) <= smem_sm;
}

// Every small tile fits sm_86; every large one sm_90, at the blocks per SM it was tuned for.
constexpr bool tiles_fit(bool large) {
  for (Kernel k : {Kernel::kFwd, Kernel::kBwdDkDv, Kernel::kBwdDq})
    for (int d : {32, 64, 96, 128, 256})
      if (large ? !large_tiles_fit(k, d, kMaxSmemBytesLarge, kSmemPerSmLarge)
                : smem_bytes(k, d) > kMaxSmemBytes)
        return false;
  return true;
}
static_assert(tiles_fit(false), "small tiles must fit sm_86's shared memory");
static_assert(tiles_fit(true), "large tiles must fit sm_90's shared memory");

// The packed-group forward (fwd_packed_kernel.h): the query rows of a GQA group in one tile.
struct PackedTile {
  static constexpr int kRows = 16;                  // packed rows (one m-tile)
  static constexpr int kWarps = 4;
  static constexpr int kKeys = 64;                  // keys per block step
  static constexpr int kWarpKeys = kKeys / kWarps;  // keys per warp and step (one k16 of P V)
  static constexpr int kMaxDim = 128;

  static constexpr int kMaxSplits = 64;

  // k / v stages: a block holds stages - 1 of them in flight while it computes. With at most
  // kDeepMaxPerSm blocks per SM (few sequences: the key splits aim at ~2) that bounds the
  // cache's read rate, so 3 stages where every block stays resident with them; with more
  // blocks, 2. H200, gptoss decode, 3 stages against 2: B 1 x 32k (256 blocks) +5.5-5.7%,
  // B 16 x 8k (384) about -1.5%, B 64 x 8k (512) -1.7%.
  static constexpr int kDeepStages = 3, kDeepMaxPerSm = 2;

  // Shared memory: `stages` k and v tiles; the q tile is staged in the last one (loaded first
  // after q is in registers) and the merge reuses the area.
  static constexpr int bytes(int d, int stages) { return stages * 2 * kKeys * smem_stride(d) * 2; }
  static constexpr bool deep(int d, int64_t blocks, int sms, int smem_block, int smem_sm) {
    const int64_t per_sm = (blocks + sms - 1) / sms;
    return per_sm <= kDeepMaxPerSm && bytes(d, kDeepStages) <= smem_block &&
           per_sm * (bytes(d, kDeepStages) + kSmemReservedPerBlock) <= smem_sm;
  }

  // Key splits for `blocks` (kv heads x sequences) blocks on `sms` SMs: about two blocks per SM
  // (a block streams one kv head's keys; fewer blocks cannot draw the memory bandwidth), each
  // split keeping at least 4 key blocks.
  static constexpr int64_t splits(int64_t blocks, int64_t seqlen_k, int64_t sms) {
    const int64_t by_keys = (seqlen_k + kKeys - 1) / kKeys / 4;
    int64_t s = (2 * sms + blocks - 1) / blocks;
    s = s < by_keys ? s : by_keys;
    s = s < kMaxSplits ? s : kMaxSplits;
    return s > 1 ? s : 1;
  }

  // Floats of one split's partial results: per block and packed row, D sums, the max, the sum.
  static constexpr int64_t partial_floats(int64_t blocks, int d) { return blocks * kRows * (d + 2); }
};

// gptoss decode on an H200 (132 SMs): batch 64 x 8 kv heads needs no split; batch 1 splits an
// 8k cache 32 ways (two blocks per SM ask for 33, 256 keys per split allow 32); 300 keys, none.
static_assert(PackedTile::deep(64, 256, 132, kMaxSmemBytesLarge, kSmemPerSmLarge) &&
                  !PackedTile::deep(64, 512, 132, kMaxSmemBytesLarge, kSmemPerSmLarge) &&
                  !PackedTile::deep(64, 384, 132, kMaxSmemBytesLarge, kSmemPerSmLarge) &&
                  PackedTile::deep(128, 256, 132, kMaxSmemBytesLarge, kSmemPerSmLarge) &&
                  PackedTile::deep(64, 216, 108, 163 * 1024, 164 * 1024),
              "packed-group stages: 3 for decode at B 1 (sm_90 at d 64 and 128, sm_80), else 2");
static_assert(PackedTile::splits(512, 8192, 132) == 1 && PackedTile::splits(8, 8192, 132) == 32 &&
                  PackedTile::splits(8, 300, 132) == 1,
              "packed-group key splits");

// Whether a problem runs packed: every row of a group fits the tile.
constexpr bool packed_fits(int64_t seqlen_q, int64_t group, int d) {
  return d <= PackedTile::kMaxDim && seqlen_q * group <= PackedTile::kRows;
}

}  // namespace sinkattn::cuda::sm80
