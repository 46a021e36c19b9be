// Launch order of the attention kernels' blocks (one per row block, head and sequence), shared by
// the portable and the Hopper kernels: grid = (heads, row blocks, sequences), so within a
// sequence the heads vary fastest and every head's heaviest row blocks launch before anyone's
// light ones. Before (row blocks fastest), the last head's heaviest blocks started when the
// other heads were nearly done: H200, Hopper kernels, gptoss 4k backward 222 -> 365 TFLOP/s,
// llama 8k 369 -> 478. Sequences stay slowest so that the blocks running together share one
// sequence's rows in L2 (the dq accumulator above all: with sequences in x as well, 8 packed
// documents measured 9.6 -> 12.1 ms backward). Grids with over 65535 row blocks keep the row
// blocks in grid.x. (The dK/dV kernels take their kv heads a few at a time instead, all of one
// group's blocks before the next group's: kv_group below.)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/slots.h"
#include "cuda/sm80/params.h"

namespace sinkattn::cuda::sm80 {

struct GridPos {
  int64_t block;  // row block, in launch order (-1: none, a slot grid's idle slot)
  int64_t head;   // query head (forward, dq) or kv head (dk/dv)
  int64_t b;      // batch entry or sequence
};

constexpr int64_t kGridYMax = 65535;

// A grid of `blocks` row blocks x heads x z entries, heads fastest.
inline dim3 grid_of(int64_t blocks, int64_t heads, int64_t z) {
  if (blocks <= kGridYMax) return dim3((unsigned)heads, (unsigned)blocks, (unsigned)z);
  return dim3((unsigned)blocks, (unsigned)heads, (unsigned)z);
}

inline dim3 make_grid(const Params& p, int64_t blocks, int64_t heads) {
  return grid_of(blocks, heads, p.batch);
}

// This block's position; `blocks` as given to grid_of / make_grid.
__device__ __forceinline__ GridPos grid_pos(int64_t blocks) {
  if (blocks <= kGridYMax) return {blockIdx.y, blockIdx.x, blockIdx.z};
  return {blockIdx.x, blockIdx.y, blockIdx.z};
}

// The dK/dV kernels' launch order (both paths): the key blocks of kv_group kv heads at a time,
// about one wave of blocks (kv_group x blocks nearest `slots`, the blocks the GPU runs at once),
// a divisor of heads_kv; force > 0 asks for another group. Blocks of one kv head read the same
// q / dO tiles and reduce into the same dq rows, and with every kv head at once (the order
// before) the blocks in flight held 8 kv heads' tiles: a trace of the walk through an LRU model
// of L2 (tests/cuda/bwd_l2_model.py: 50 MB, uniform steps) put the Hopper kernel's DRAM misses
// at 1.7 GB for llama 8k and 8.0 GB for gptoss 16k (hit rates 0.80 and 0.76, as Nsight
// measured), against 0.26 and 0.51 GB with 2 and 1 kv heads at a time, for walks 0.8% longer in
// the model (one kv head at a time at 4k: 1.6x longer, the blocks of the last head starting
// late). H200, 7 interleaved rounds: Hopper kernel gptoss 16k +4.3%, llama 8k +3.5%, 32k +0.9%,
// varlen +0.5%, 4k -0.6% (at the 700 W limit, the clock rose 1680 -> 1740 MHz at 16k and 1590
// -> 1680 at llama 8k: most of the gain is DRAM energy); portable kernel 16k +2.0%, llama 8k
// +2.3%, 4k +2.4%, varlen -1.2 / -0.2% (two calls).
constexpr int kv_group(long long heads_kv, long long blocks, long long slots,
                       long long force = 0) {
  long long g = force > 0 ? force : (slots + blocks / 2) / (blocks > 0 ? blocks : 1);
  g = g < 1 ? 1 : g > heads_kv ? heads_kv : g;
  while (g > 1 && heads_kv % g != 0) --g;
  return (int)g;
}
static_assert(kv_group(8, 64, 132) == 2 && kv_group(8, 128, 132) == 1 &&
                  kv_group(8, 32, 132) == 4 && kv_group(8, 1, 132) == 8 &&
                  kv_group(8, 256, 132) == 1 && kv_group(6, 33, 132) == 3 &&
                  kv_group(3, 64, 132) == 1 && kv_group(8, 4, 132, 3) == 2,
              "backward launch order: llama 8k 2 kv heads at a time, gptoss 16k 1, 4k 4");

// The grid of kv_group's order: heads_kv x key blocks in x, sequences in z. Over 2^31 - 1 blocks
// in x would take over 2^36 key rows of all kv heads (blocks hold >= 32 keys), and dK alone
// (outputs may not overlap themselves) 4 TB: no backward gets there.
inline dim3 make_kv_group_grid(const Params& p, int64_t blocks) {
  return dim3((unsigned)(blocks * p.heads_kv), 1, (unsigned)p.batch);
}

// Entry i of one sequence's run of `blocks` key blocks x heads_kv in kv_group's order: each
// sequence's key blocks heaviest first, kv_group kv heads at a time, heads fastest within the
// group (32-bit math: a 64-bit division is ~50 instructions).
__device__ __forceinline__ GridPos kv_group_pos(uint32_t i, uint32_t blocks, uint32_t kv_group,
                                                int64_t b) {
  const uint32_t per_chunk = blocks * kv_group, chunk = i / per_chunk;
  const uint32_t r = i - chunk * per_chunk;
  return {r / kv_group, chunk * kv_group + r % kv_group, b};
}

// The block's (key block, kv head, sequence) in the grid of make_kv_group_grid.
__device__ __forceinline__ GridPos kv_group_grid_pos(int64_t blocks, int kv_group) {
  return kv_group_pos(blockIdx.x, (uint32_t)blocks, (uint32_t)kv_group, blockIdx.z);
}

// Packed batches: grids over slots. A grid of a block per sequence and row block of the longest
// sat nearly all idle for short sequences beside a long one (4,000 tiny documents beside one of
// 16k: 4.2M dK/dV blocks, 34k with keys; that kernel took 37.6 ms, the 16k sequence alone 10.5).
// Slots number the row blocks of `rows` rows like the row groups (common/slots.h): sequence b's
// run starts at slot start(b) = b + row(b) / rows, row(b) its first packed row, and holds its
// blocks and at most one idle slot; batch + total / rows slots in all. A block finds its
// sequence by a warp-wide search (packed_slot_sequence, ~1 us before its first load), all cost
// where the rows fill their blocks (H100, dK/dV, ~1,000 documents of 16..48 tokens: -5.4%), so
// a slot grid runs only where over half of the per-sequence grid would idle (64..256-token
// documents beside an 8k one: dK/dV +2.4%; the tiny ones: 1.77x).

// One side's prefix sums (common/slots.h PackedRows).
__device__ __forceinline__ PackedRows packed_q(const Params& p) {
  return {p.cu_seqlens_q, p.batch, (int)p.total_q};
}
__device__ __forceinline__ PackedRows packed_k(const Params& p) {
  return {p.cu_seqlens_k, p.batch, (int)p.total_k};
}

__host__ __device__ inline int64_t query_slots(const Params& p, int bm) {
  return slot_count(p.batch, p.total_q, bm);
}
__host__ __device__ inline int64_t key_slots(const Params& p, int bn) {
  return slot_count(p.batch, p.total_k, bn);
}
// The query-side kernels' (blocks of bm rows: forwards, dq kernels, prep) and the dK/dV kernels'
// (bn keys) choice; both the launchers and the kernels ask.
__host__ __device__ inline bool query_slot_grid(const Params& p, int bm) {
  return p.cu_seqlens_q != nullptr &&
         slot_grid_pays(p.batch, (p.seqlen_q + bm - 1) / bm, query_slots(p, bm));
}
__host__ __device__ inline bool key_slot_grid(const Params& p, int bn) {
  return p.cu_seqlens_k != nullptr &&
         slot_grid_pays(p.batch, (p.seqlen_k + bn - 1) / bn, key_slots(p, bn), p.heads_kv);
}

// The sequence whose run holds slot s: the last b with start(b) <= s (0 if none). Increasing in
// b for sound offsets; for others some b, whose clamped rows keep every access in bounds.
// Warp-wide (all 32 lanes call it): each round probes 32 entries, so ceil(log32(batch)) rounds
// of one load (3 for 4,000 sequences, 1 for up to 32).
__device__ __forceinline__ int packed_slot_sequence(const PackedRows& r, int rows, int s) {
  const int lane = threadIdx.x % 32;
  int lo = 0, n = (int)r.batch;  // the answer lies in [lo, lo + n)
  while (n > 1) {
    const int step = (n + 31) / 32, c = lo + lane * step;
    bool le = lane == 0;  // lo qualifies, or is the fallback
    if (lane > 0 && c < lo + n) le = r.start(c, rows) <= s;
    const int k = __popc(__ballot_sync(0xffffffffu, le)) - 1;  // lanes 0..k qualify
    lo += k * step;
    n = min(step, n - k * step);
  }
  return lo;
}

// The query-side grid: grid.h's order over the longest sequence's row blocks, or (packed, where
// query_slot_grid) over slots, z = 1.
inline dim3 make_query_grid(const Params& p, int bm, int64_t heads) {
  if (query_slot_grid(p, bm)) return grid_of(query_slots(p, bm), heads, 1);
  return make_grid(p, (p.seqlen_q + bm - 1) / bm, heads);
}

// The block's position in make_query_grid's grid, as grid_pos gives it in the per-sequence grid
// (its row block counted among the longest's `blocks`, heaviest first: a sequence's run starts
// with its last row block); an idle slot gets block -1 (past every row). Warp-wide. The slot
// grid's part is a call (query_slot_pos): inlined, ptxas spilled 16 bytes more in the portable
// forward's large tiles (255 registers). Called, the sm_80 SASS of its small tiles spills 44 /
// 56 bytes against main's 40 / 52; the other kernels' spill counts did not move.
static __device__ __noinline__ GridPos query_slot_pos(const Params& p, int bm) {
  const int64_t blocks = (p.seqlen_q + bm - 1) / bm;
  const GridPos at = grid_pos(query_slots(p, bm));  // at.block: the slot
  const PackedRows r = packed_q(p);
  const int s = (int)at.block, b = packed_slot_sequence(r, bm, s);
  const int len = (int)min(int64_t{max(r.row(b + 1) - r.row(b), 0)}, p.seqlen_q);
  const int needed = (len + bm - 1) / bm, local = s - r.start(b, bm);
  return {slot_row_block(blocks, local, needed), at.head, b};
}
__device__ __forceinline__ GridPos query_grid_pos(const Params& p, int bm) {
  if (query_slot_grid(p, bm)) return query_slot_pos(p, bm);
  return grid_pos((p.seqlen_q + bm - 1) / bm);
}

// The Hopper dK/dV kernel's grid: kv_group's order over the longest sequence's key blocks
// (make_kv_group_grid), or where key_slot_grid, over key-block slots: sequence b's run of slots
// [start(b), start(b + 1)) x heads_kv in kv_group's order. (The portable dK/dV kernel keeps
// make_kv_group_grid: with the slot grid ptxas spilled 16 bytes there, and on H100 gptoss 4k
// lost 5.7% with it inlined, 16k and varlen 32k 2.7-2.9% with it called (the tiny documents
// beside a 16k one gained 44.4 -> 30.7 ms). Called, the Hopper kernel spilled 484 bytes.)
inline dim3 make_kv_grid(const Params& p, int bn) {
  if (key_slot_grid(p, bn)) return dim3((unsigned)(key_slots(p, bn) * p.heads_kv));
  return make_kv_group_grid(p, (p.seqlen_k + bn - 1) / bn);
}

// The block's (key block, kv head, sequence) in make_kv_grid's grid; slots outside every run
// (before the first sequence's rows, after the last's) get a block past all keys. Warp-wide.
__device__ __forceinline__ GridPos kv_grid_pos(const Params& p, int bn, int kv_group) {
  if (!key_slot_grid(p, bn)) return kv_group_grid_pos((p.seqlen_k + bn - 1) / bn, kv_group);
  const int heads = (int)p.heads_kv, i = (int)blockIdx.x;
  const PackedRows r = packed_k(p);
  const int b = packed_slot_sequence(r, bn, i / heads);
  const int start = r.start(b, bn), end = r.start(b + 1, bn);
  const int local = i - start * heads;
  if (local < 0 || local >= (end - start) * heads) return {p.seqlen_k, 0, b};
  return kv_group_pos((uint32_t)local, (uint32_t)(end - start), (uint32_t)kv_group, b);
}

}  // namespace sinkattn::cuda::sm80
