// Tile shapes and register split of the Hopper kernels: one constexpr function used by the host
// (grid, shared memory) and the kernels, so the two never disagree.
#pragma once

namespace sinkattn::cuda::sm90 {

// setmaxnreg moves registers within the block's pool, which the launch sized at what ptxas gave
// every thread (at most 65536 / threads, a multiple of 8): a split above it hangs the block.
constexpr bool regs_fit(int consumers, int producer_regs, int consumer_regs) {
  return 128 * (producer_regs + consumers * consumer_regs) <=
         65536 / ((consumers + 1) * 128) / 8 * 8 * (consumers + 1) * 128;
}
static_assert(!regs_fit(2, 32, 240), "384 threads: 168 registers each");
template <typename Tile>
constexpr bool tile_regs_fit(Tile t) {
  return regs_fit(t.consumers, t.producer_regs, t.consumer_regs);
}

struct FwdTile {
  int block_m;        // query rows per block: 64 per consumer warpgroup
  int block_n;        // key rows per stage
  int stages;         // k/v stages in flight
  int consumers;      // consumer warpgroups (one producer warpgroup besides)
  int producer_regs;  // setmaxnreg targets: 128 * (producer + consumers * consumer) <= 64K
  int consumer_regs;
  bool persistent;    // a block per SM walks the tiles, the next q tile loading into a second buffer
};

// d 64: three consumers (more warps to hide the softmax, which costs as much per pair as at
// d 128 against half the matrix work), or two for narrow windows and short sequences
// (short_rows, fwd_short_tiles), where a 192-row block spans 4 key blocks of a 128-wide band and
// a 128-row block 2; d 128: two, with room for 64 + 64 accumulators each. Persistent at d 64:
// a block's start (its launch, the producer's set-up, the q and first k/v loads) took ~3700
// cycles before the first S, 2.2% of the gptoss 16k forward and 6.5% of a varlen batch (H200,
// per-block clock64 timeline), and overlaps the tile before in a persistent block. Tiles come
// from a counter (tile_sched.h), the producer begins the next one once the current tile's first
// key block is on its way, and 192-row consumers compute their tile's info in registers (read
// from shared memory, it cost the walk 4% at 32k). H200, 7 rounds against a block per tile: 4k
// +4.5%, varlen +2.3%, 16k +0.1%, 32k -0.5%; narrow windows 0.415 -> 0.358 ms (fwd v5). d 128
// has no room for a second q tile.
constexpr FwdTile fwd_tile(int d, bool short_rows = false) {
  return d <= 64 && !short_rows ? FwdTile{192, 128, 2, 3, 32, 160, true}
         : d <= 64              ? FwdTile{128, 128, 2, 2, 40, 232, true}
                                : FwdTile{128, 128, 2, 2, 40, 232, false};
}
// Whether a forward at head dim d may run a persistent kernel (its workspace then holds the
// tile counter, tile_sched.h).
constexpr bool fwd_persistent(int d) {
  return fwd_tile(d).persistent || fwd_tile(d, true).persistent;
}
static_assert(fwd_persistent(64) && !fwd_persistent(128), "persistent forwards");
static_assert(tile_regs_fit(fwd_tile(64)) && tile_regs_fit(fwd_tile(64, true)) &&
                  tile_regs_fit(fwd_tile(128)),
              "forward register split");

// Narrow windows: under 1024 keys (H200, gptoss 16k window 128: 0.40 against 0.47 ms forward
// with 128-row blocks; the backward takes its kNarrow instantiation). Not for longer causal rows:
// at 4k, 3 consumers measured 357 against 330 TFLOP/s, and varlen documents of 256..8k 427
// against 388.
constexpr bool fwd_short_rows(long long left, long long right) {
  return left >= 0 && right >= 0 && left + right < 1024;
}

// Whether the backward takes its narrow-window kernel for a mask whose bounds dispatch.cu's
// kernel_mask cut to the sequences' lengths (causal: up to 512 keys). Its dq is handed from key
// block to key block rather than added atomically and converted. Fiftieth session, H100, backward
// ms causal / cut, 32k tokens: llama heads, documents of 130..256 1.57 / 1.05, 257..512 1.77 /
// 1.34, 64 of 512 1.80 / 1.40, 32 of 1024 2.15 / 2.26; gptoss heads 130..256 1.58 / 1.30 (not
// the band kernels' width), 64 of 512 1.74 / 1.69, 32 of 1024 2.41 / 2.60, 128..1024 2.15 / 2.33.
constexpr bool bwd_cut_narrow(long long left, long long right) {
  return fwd_short_rows(left, right) && left + right < 512;
}
static_assert(bwd_cut_narrow(511, 0) && bwd_cut_narrow(199, 249) && !bwd_cut_narrow(512, 0) &&
                  !bwd_cut_narrow(-1, 0),
              "the backward's cut: causal sequences of up to 512 keys");

// The d 64 forward's choice: 128-row blocks for narrow windows and for sequences of at most
// kShortSeq queries and keys (for packed batches the longest), whose tiles walk few key blocks:
// a 192-row tile leaves consumers idle past each sequence's end, and the tile's start weighs
// more. Tenth session (H200, both kernels a block per tile then), packed documents of one
// length, 192 -> 128 rows: 256 0.738 -> 0.415 ms, 512 0.724 -> 0.562, 1024 1.010 -> 0.874; 2048
// 1.564 against 1.589. Since the 192-row kernel is persistent (a short tile's idle consumers
// take empty turns) the line moved: forty-ninth session, H100, forward ms 192 / 128 rows, packed
// (fixed): 256 x 128 0.415 / 0.322 (0.385 / 0.324), 128 x 256 0.504 / 0.488 (0.484 / 0.473),
// 64 x 512 0.540 / 0.583 (0.523 / 0.569), 32 x 1024 0.876 / 0.915 (0.846 / 0.877), documents of
// 128..1024 0.703 / 0.770.
constexpr long long kShortSeq = 256;
constexpr bool fwd_short_tiles(long long seqlen_q, long long seqlen_k, long long left,
                               long long right) {
  return fwd_short_rows(left, right) || (seqlen_q <= kShortSeq && seqlen_k <= kShortSeq);
}
// Causal (left -1, right 0): documents of 256 yes, 512 no, a short query block over a long
// cache no (its tiles walk every key block); a window of 128 at any length yes.
static_assert(fwd_short_tiles(256, 256, -1, 0) && !fwd_short_tiles(512, 512, -1, 0) &&
                  !fwd_short_tiles(2048, 2048, -1, 0) && !fwd_short_tiles(256, 32768, -1, 0) &&
                  fwd_short_tiles(16384, 16384, 127, 0),
              "d 64 forward tile choice");

// The GQA-packed band forward (fwd_band_kernel.h): a consumer warpgroup's 64 rows are 16 query
// positions of 4 query heads of one kv group (warp w: head 4c + w), so all of its warps see the
// same key span, at most `span` keys from the first position's window start; a block serves
// 2 x 4 = `heads` query heads over a run of `run` blocks of 16 positions, which share one k / v
// tile of 16 run + span - 16 keys (at most TMA's 256-row box).
struct BandTile {
  int span;           // keys of one 16-position block's span (an m64nNk16 product's N)
  int heads;          // query heads per block: 4 per consumer
  int run;            // 16-position blocks per block
  int stages;         // q stages in flight (16 positions x heads rows each)
  int consumers;      // consumer warpgroups
  int producer_regs;  // setmaxnreg targets, as in FwdTile
  int consumer_regs;
};
// The band dq kernel's split: 2 consumers, one per 4-head quad of a position block. H200, gptoss
// 16k window 128 forward, interleaved rounds, with the forward on this split (its pipelined
// form, before band_fwd_tile()): runs of 4 blocks 0.145 against 0.141 ms with 8; 3 q stages
// 0.138 against 0.141 with 2; ping-pong turns 0.136 against 0.137 without (noise: left off).
constexpr BandTile band_tile() { return BandTile{144, 8, 8, 3, 2, 40, 232}; }
// The band forward's split: 3 consumer warpgroups, each taking whole (position block, 4-head
// quad) items in turn, S, softmax, P V and the epilogue in series. That form holds S or P and O,
// not all three, so 3 consumers fit 160 registers (the pipelined form, S of the next block under
// P V of the one before, needs S, P and O at once: 232 registers for 2 consumers). H200, 9
// interleaved rounds against that form: gptoss 16k window 128 0.151 against 0.149 ms with 24
// bytes of spills, 0.124 against 0.144 without; ~1000 packed documents of 16..48 tokens 0.346
// against 0.403 (no consumer idles at the many run boundaries); a 4th q stage 0.152 (spilling
// form). 4 consumers do not compile: at 640 threads ptxas keeps the entry budget of 96
// registers for the wgmma chain.
constexpr BandTile band_fwd_tile() { return BandTile{144, 8, 8, 3, 3, 32, 160}; }
static_assert(tile_regs_fit(band_tile()) && tile_regs_fit(band_fwd_tile()), "band register split");
static_assert(band_fwd_tile().span == band_tile().span &&
                  band_fwd_tile().heads == band_tile().heads &&
                  band_fwd_tile().run == band_tile().run,
              "one work item for both band kernels (BandItems, band_grid)");

// Where the band forward applies: head dim 64, query groups of a multiple of 8 heads, and a
// window (both sides bounded, no zigzag positions) whose span fits: a 16-row block sees keys
// [pos - left, pos + 15 + right], 16 + left + right of them.
constexpr bool fwd_band(int d, long long group, long long left, long long right, int zigzag_world) {
  return d == 64 && group % band_tile().heads == 0 && left >= 0 && right >= 0 &&
         16 + left + right <= band_tile().span && zigzag_world == 0;
}
// Runs of 16 run positions in a sequence of seqlen_q (per kv head, group of 8 query heads and
// sequence: the band forward's work items).
constexpr long long band_runs(long long seqlen_q) {
  return (seqlen_q + 16 * band_tile().run - 1) / (16 * band_tile().run);
}
static_assert(fwd_band(64, 8, 127, 0, 0) && fwd_band(64, 16, 64, 64, 0) &&
                  fwd_band(64, 8, 128, 0, 0) && !fwd_band(64, 8, 129, 0, 0) &&
                  !fwd_band(64, 4, 127, 0, 0) && !fwd_band(128, 8, 127, 0, 0) &&
                  !fwd_band(64, 8, -1, 0, 0) && !fwd_band(64, 8, 127, 0, 2),
              "band forward choice");

struct BwdTile {
  int block_n;        // key rows per block: 64 per consumer warpgroup (its dK, dV rows)
  int block_m;        // query rows per step
  int stages;         // q / dout stages in flight
  int consumers;      // consumer warpgroups
  int producer_regs;  // setmaxnreg targets, as in FwdTile
  int consumer_regs;
  unsigned exp2_fma;  // P^T columns n (8 queries each) whose exps run on the FMA pipe: bit n % 8
};

// Each consumer keeps its 64 keys' dK and dV (2 x D/2 fp32 per thread) for the whole block and
// holds S^T and dP^T of its keys against the step's queries (2 x block_m / 2 fp32): d 64 has
// the registers for 128-query steps, d 128 for 64. At d 64 an exp costs the SFU about what its
// score's products cost the tensor cores, and the SFU work of a step's P^T has only dP^T to hide
// behind: an eighth of those exps run on the FMA pipe. H200: a quarter gave +1-2% (3/8 and 1/2
// lost); once v8 had trimmed the step's other instructions, an eighth measured +1.4-2.3% over a
// quarter on every gptoss shape (16k 409 -> 416 TFLOP/s). The forward measured only losses
// (1/8: 466 -> 440): its exps already overlap the other consumers' products.
// The dq reductions are a producer warp's (the dq writer, bwd_kernel.h; H200, 7 rounds against
// each consumer warp reducing its own rows: gptoss 4k +5.9%, 16k +3.7%, 32k +4.2%, varlen
// +3.9%, llama 8k +2.4%). The writer needs more than 24 registers: 40 for the producer
// warpgroup and 232 for the consumers, 0 bytes of spills in every instantiation (the narrow
// ones with dQ had spilled 28-88 bytes at 240).
constexpr BwdTile bwd_tile(int d) {
  return d <= 64 ? BwdTile{128, 128, 2, 2, 40, 232, 0x80u}
                 : BwdTile{128, 64, 2, 2, 40, 232, 0u};
}
static_assert(tile_regs_fit(bwd_tile(64)) && tile_regs_fit(bwd_tile(128)),
              "backward register split");

// The deterministic mode's dq kernel (bwd_dq_kernel.h): 64 query rows per consumer, each holding
// S and dP of its rows against a key block and its dQ rows (d 64: 128-key blocks, 64 + 64 + 32
// fp32 per thread; d 128: 64-key blocks, 32 + 32 + 64).
struct DqTile {
  int block_m;        // query rows per block
  int block_n;        // key rows per stage
  int stages;         // k / v stages in flight
  int consumers;      // consumer warpgroups
  int producer_regs;  // setmaxnreg targets, as in FwdTile
  int consumer_regs;
};
constexpr DqTile dq_tile(int d) {
  return d <= 64 ? DqTile{128, 128, 2, 2, 24, 240} : DqTile{128, 64, 2, 2, 24, 240};
}
static_assert(tile_regs_fit(dq_tile(64)) && tile_regs_fit(dq_tile(128)), "dq register split");

}  // namespace sinkattn::cuda::sm90
