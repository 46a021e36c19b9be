// Hopper forward kernel (sm_90a). A block walks tiles of (BM query rows, query head, sequence):
// one tile when the grid has a block per tile, several in a persistent grid of one block per SM
// (tile_sched.h), where the producer loads the next tile's q and k/v while the consumers finish
// the current one. Warpgroup 0 is the producer: one thread streams the q tile and the k/v tiles
// the mask lets the tile see through TMA into a ring of shared-memory stages, each completing on
// an mbarrier. The other warpgroups are consumers owning 64 query rows each: S = Q K^T and
// O += P V run on wgmma with fp32 accumulators in registers; the mask and online softmax (sink
// folded in once) are the portable path's, since a warp holds the same C-fragment layout.
// A consumer releases a stage by arriving on its "empty" barrier as soon as its product is done
// (the q tile after its last S), issues S_{j+1} together with P_j V_j (its softmax then overlaps
// the tensor cores), and takes turns with the other consumers at every issue (turns.h).
#pragma once

#include <cuda.h>

#include <cstdint>
#include <type_traits>

#include "cuda/sm80/grid.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm90/kv_ring.h"
#include "cuda/sm90/tile_sched.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/turns.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

using sm80::Mask;
using sm80::Params;
using sm80::Sequence;

// Shared memory of the forward kernel, in bytes from a 1024-byte aligned base.
template <int D, bool kShort>
struct FwdSmem {
  static constexpr FwdTile kT = fwd_tile(D, kShort);
  static constexpr int kSub = D / 64;                      // 64-column sub-tiles per row
  static constexpr int kQBytes = kT.block_m * D * 2;       // q tile
  static constexpr int kQStages = kT.persistent ? 2 : 1;   // q tiles in flight
  static constexpr int kKVBytes = KvRing<D, kT.block_n, kT.stages>::kBytes;  // one k or v stage
  static constexpr int kStage = sm80::smem_stride(D);      // epilogue staging row (elements)
  static constexpr int q = 0;
  static constexpr int k = q + kQStages * kQBytes;
  static constexpr int v = k + kT.stages * kKVBytes;
  static constexpr int o = v + kT.stages * kKVBytes;       // 16 staging rows per consumer warp
  // TileInfo ring, twice the q stages: a slot is rewritten only once every consumer has released
  // the q tile two tiles later, so its epilogue has read it
  static constexpr int kInfoSlots = kT.persistent ? 2 * kQStages : 0;
  static constexpr int info = o + kT.consumers * 4 * 16 * kStage * 2;
  static constexpr int bars = info + kInfoSlots * 256;
  static constexpr int kBars = 2 * kQStages + 4 * kT.stages;  // q, k, v: full and empty
  static constexpr int bytes = bars + kBars * 8 + 1024;    // + alignment slack
};

// One tile of the forward: its rows, and the key blocks its mask lets it see.
struct FwdWork {
  Sequence seq;
  int64_t head, m0;  // query head, first row
  bool empty;        // no rows (varlen sequences shorter than the longest)
  Mask mask;
  int n_first = 0, n_end = 0;

  // Heaviest blocks first: under a causal mask the last query blocks see the most keys.
  __device__ __forceinline__ FwdWork(const Params& p, const TileSched& sched,
                                     const sm80::GridPos& at, int bm, int bn)
      : seq(p, at.b),
        head(at.head),
        m0((sched.blocks - 1 - at.block) * bm),
        empty(m0 >= seq.len_q),
        mask(Mask::of(p, seq)) {
    if (empty) return;
    const cuda::KeyBlocks<int> walk = cuda::walked_key_blocks<int>(mask, m0, bm, bn);
    n_first = walk.first;
    n_end = walk.end;
  }
  // Element offset of (row m0, head) in out, and the index of (head, row m0) in lse (rows follow
  // at +1 there).
  __device__ __forceinline__ int64_t out_offset(const Params& p) const {
    return seq.offset(p.out, true, m0, head);
  }
  __device__ __forceinline__ int64_t lse_offset(const Params& p) const {
    return seq.lse_index(p, head, m0);
  }
};

// What a consumer needs of its tile. In a persistent block of 128-row tiles the producer computes
// it once per tile and passes it with the q tile (in shared memory, released by its arrival on
// q_full), so the consumers skip the tile's index arithmetic (Nsight, window-128 forward: ~300
// instructions per warp and tile, 15% of the stall samples, mostly 64-bit) and read each field
// where they use it (H200, window 128 forward 0.284 -> 0.253 ms). A block per tile, and the
// consumers of persistent 192-row tiles (from the tile's pos), compute their own in registers.
struct TileInfo {
  Mask mask;
  int64_t out_off, lse_off;  // FwdWork's out_offset, lse_offset (shared info only: the others
                             // compute them in their epilogue, where they cost no registers)
  int32_t m0, rows;    // first row in the sequence, rows of the tile left in it (>= 1)
  int32_t n_first, n_end;
  int32_t span0[3];    // per consumer: narrow-window span start (0 or 64), -1 to walk
  sm80::GridPos pos;   // persistent 192-row tiles: the tile (its consumers compute the rest)
  float sink_log2;     // sink logit * log2 e; -inf without sinks
  int32_t done;        // persistent: no tile left (the consumers leave)
  RowMask32 rows_mask; // shared info: the mask from (m0, block n_first's first key)
};
static_assert(sizeof(TileInfo) <= 256, "a TileInfo fits its 256-byte slot");

// The tile's info from its work item; span0 for the consumers of a persistent (narrow-window)
// block: when the tile spans two key blocks and consumer c's 64 rows see at most 192 keys from a
// 64-key boundary of them (window 128: rows r0.. see keys r0 - 127 .. r0 + 63), it makes one pass
// over that span instead of walking both blocks.
template <bool kPersistent>
__device__ __forceinline__ void tile_info(TileInfo& t, const Params& p, const FwdWork& w,
                                          int consumers, int bn) {
  // Field by field (into shared memory: the producer has 32-40 registers).
  t.mask = w.mask;
  t.m0 = (int32_t)w.m0;
  t.rows = (int32_t)(w.seq.len_q - w.m0);
  t.n_first = w.n_first;
  t.n_end = w.n_end;
  t.sink_log2 = p.sinks ? p.sinks[w.head] * 1.4426950408889634f : -INFINITY;
  t.done = 0;
  if (kPersistent) {
    t.out_off = w.out_offset(p);
    t.lse_off = w.lse_offset(p);
    t.rows_mask = RowMask32::of(w.mask, w.m0, (int64_t)w.n_first * bn, 64 * consumers);
  }
  for (int c = 0; c < consumers; ++c) {
    int span0 = -1;
    const int64_t row0 = w.m0 + 64 * c;
    if (kPersistent && w.n_end - w.n_first == 2 && row0 < w.seq.len_q) {
      int64_t lo, hi;
      w.mask.key_range(row0, min(row0 + 64, w.seq.len_q), lo, hi);
      const int64_t first = (int64_t)w.n_first * bn, a = (lo - first) / 64 * 64;
      if (hi > lo && a <= 64 && hi - first <= a + 192) span0 = (int)a;
    }
    t.span0[c] = span0;
  }
}

template <typename T, int D, bool kShort>
__global__ void __launch_bounds__((fwd_tile(D, kShort).consumers + 1) * 128, 1)
    fwd_kernel(const __grid_constant__ Params p, const __grid_constant__ CUtensorMap map_q,
               const __grid_constant__ CUtensorMap map_k, const __grid_constant__ CUtensorMap map_v,
               int pingpong) {
  using L = FwdSmem<D, kShort>;
  constexpr FwdTile kT = L::kT;
  constexpr int BM = kT.block_m, BN = kT.block_n, S = kT.stages;
  constexpr int kConsumerThreads = kT.consumers * 128;

  extern __shared__ char smem_raw[];
  char* base = align1024(smem_raw);
  uint64_t* bars = reinterpret_cast<uint64_t*>(base + L::bars);
  constexpr int QS = L::kQStages;
  uint64_t* q_full = bars;
  uint64_t* q_empty = bars + QS;
  const KvRing<D, BN, S> ring{base + L::k, base + L::v, bars + 2 * QS};
  // The ring's barriers as arrays by stage, for the walk's waits and hand-backs.
  uint64_t* k_full = ring.k_full(0);
  uint64_t* v_full = ring.v_full(0);
  uint64_t* k_empty = ring.k_empty(0);
  uint64_t* v_empty = ring.v_empty(0);
  auto info_slot = [&](int tile) {  // the slot of the tile-th tile (persistent kernels only)
    constexpr int kSlots = L::kInfoSlots > 0 ? L::kInfoSlots : 1;
    return reinterpret_cast<TileInfo*>(base + L::info + tile % kSlots * 256);
  };

  const TileSched sched{(p.seqlen_q + BM - 1) / BM, p.heads_q, p.batch};
  const int64_t tiles = sched.total();
  // Persistent 128-row (narrow-window, short) tiles take their info from the producer (shared
  // memory); 192-row tiles, long enough to pay for it, compute it in their consumers' registers
  // as a block per tile does: their walk then reads no field from shared memory (H200, 7
  // rounds, 192-row tiles on the shared info: 32k -4% against a block per tile).
  constexpr bool kSharedInfo = kT.persistent && BM == BN;
  // Tile t of a persistent grid, or this block's tile in a grid of sm80/grid.h make_query_grid,
  // found here by all threads (its slot search is warp-wide; the producer's thread asks alone).
  const sm80::GridPos at = kT.persistent ? sm80::GridPos{} : sm80::query_grid_pos(p, BM);
  auto work = [&](int64_t t) {
    return FwdWork(p, sched, kT.persistent ? sched.pos(t) : at, BM, BN);
  };

  // A block per tile leaves before anything else if its tile has no rows.
  if (!kT.persistent && work(0).empty) return;

  if (threadIdx.x == 0) {
    mbar_init_ring(q_full, q_empty, QS, kConsumerThreads);
    ring.init(kConsumerThreads);
    mbar_fence_init();
  }
  __syncthreads();

  // Through a shuffle from lane 0 the compiler knows the warpgroup index is warp-uniform and
  // keeps per-consumer addresses and wgmma descriptors in uniform registers (the persistent
  // kernel spilled with it until its consumers took the tile info from the producer; now 0
  // spills, R2UR 152 -> 38, H200 window 128 forward 0.262 -> 0.241 ms).
  const int wg = __shfl_sync(0xffffffff, (int)threadIdx.x / 128, 0);
  if (wg == 0) {
    regs_dealloc<kT.producer_regs>();
    if (threadIdx.x != 0) return;
    tma_prefetch_desc(&map_q);
    tma_prefetch_desc(&map_k);
    tma_prefetch_desc(&map_v);
    int tiles_done = 0, kv_done = 0;  // q tiles and k/v stages filled so far (barrier phases)
    // The key blocks a begun tile still needs: [n, n_end) of kv head hk, rows from rk, entry bq.
    struct Fills {
      int n, n_end, rk, hk, bq;
    };
    int64_t t = kT.persistent ? (int64_t)blockIdx.x : 0;  // the tile to begin next
    bool have_t = true;                                   // t is ours and not begun
    // Begins the next tile with rows: its info (persistent kernels) and its q load; false when
    // the block has none left.
    auto begin_tile = [&](Fills& f) {
      for (;; have_t = false) {
        if (!have_t) t = L::kT.persistent ? sched.next(p.tile_counter) : 1;
        if (L::kT.persistent ? t >= tiles : t > 0) return false;
        const FwdWork tile = work(t);
        if (tile.empty) {
          if constexpr (L::kT.persistent) sched.skip_rowless(p.tile_counter, t, tile.seq.len_q, BM);
          continue;
        }
        // Packed (varlen) tensors are one batch entry; rows are offset by the sequence start.
        const Sequence& seq = tile.seq;
        f.bq = seq.varlen ? 0 : (int)seq.b;
        const int rq = (int)(seq.varlen ? seq.row_q : 0);
        f.rk = (int)(seq.varlen ? seq.row_k : 0);
        f.hk = (int)(tile.head / p.group);
        f.n = tile.n_first;
        f.n_end = tile.n_end;
        const int qs = tiles_done % QS;
        if (tiles_done >= QS) mbar_wait(&q_empty[qs], ((tiles_done / QS) & 1) ^ 1);
        // released to the consumers by the arrival below
        if constexpr (kSharedInfo) {
          tile_info<true>(*info_slot(tiles_done), p, tile, L::kT.consumers, BN);
        } else if constexpr (L::kT.persistent) {
          info_slot(tiles_done)->pos = sched.pos(t);
          info_slot(tiles_done)->done = 0;
        }
        mbar_expect_tx(&q_full[qs], L::kQBytes);
#pragma unroll
        for (int sub = 0; sub < L::kSub; ++sub)
          tma_load_4d(base + L::q + qs * L::kQBytes + sub * BM * 128, &map_q, &q_full[qs], 64 * sub,
                      rq + (int)tile.m0, (int)tile.head, f.bq);
        ++tiles_done;
        have_t = false;
        return true;
      }
    };
    auto fill = [&](Fills& f) {
      ring.fill(kv_done++, &map_k, &map_v, f.rk + f.n++ * BN, f.hk, f.bq);
    };
    // One tile ahead: the next tile's q (second buffer in persistent kernels) and its index are
    // begun once this tile's first key block is on its way, so they land while this one runs.
    Fills cur, next;
    for (bool more = begin_tile(cur); more;) {
      if (cur.n < cur.n_end) fill(cur);
      more = begin_tile(next);
      while (cur.n < cur.n_end) fill(cur);
      cur = next;
    }
    if constexpr (kT.persistent) {  // one more q slot, holding only "done"
      const int qs = tiles_done % QS;
      if (tiles_done >= QS) mbar_wait(&q_empty[qs], ((tiles_done / QS) & 1) ^ 1);
      info_slot(tiles_done)->done = 1;
      mbar_arrive(&q_full[qs]);
    }
    return;
  }

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1;                         // consumer index: query rows 64c .. 64c + 63
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;

  // Ping-pong (runtime flag, turns.h) around every issue of matrix products. The turn passes on
  // from tile to tile: every consumer takes the same number of turns in a tile.
  const Turns turns{pingpong != 0 && kT.consumers > 1, c, kT.consumers, 1};
  turns.start();

  int tiles_done = 0, kv_done = 0;  // as the producer counts them
  for (int r = 0;; ++r) {
    const int qs = tiles_done % QS;
    TileInfo local;  // a block per tile and 192-row tiles: their own, in registers
    const TileInfo* info = &local;
    if constexpr (kT.persistent) {
      mbar_wait(&q_full[qs], (tiles_done / QS) & 1);
      const TileInfo* slot = info_slot(tiles_done);
      if (slot->done) break;
      if constexpr (kSharedInfo) {
        info = slot;
      } else {
        tile_info<false>(local, p, FwdWork(p, sched, slot->pos, BM, BN), kT.consumers, BN);
      }
    } else {
      if (r > 0) break;
      tile_info<false>(local, p, work(0), kT.consumers, BN);
      mbar_wait(&q_full[qs], (tiles_done / QS) & 1);
    }
    const TileInfo& tile = *info;
    ++tiles_done;
    const Mask& mask = tile.mask;  // read where used: fewer live registers
    const int n_first = tile.n_first, n_end = tile.n_end;
    const int64_t row0 = tile.m0 + 64 * c;      // first query row of this warpgroup
    // 192-row tiles (d 64): this warpgroup's rows see no key from block own_end on (under a
    // causal mask the tile's last 128-key block, for its first one or two warpgroups; every
    // block for rows past the sequence), so it walks [n_first, own_end) and takes the other
    // blocks' turns empty. H200, 7 rounds: 4k +4.2%, varlen +2.3%, 16k +0.9%, 32k 0.0%.
    // 128-row tiles are aligned with the key blocks, so no such block (their kernels stay as
    // they were).
    int own_end = n_end;
    if constexpr (BM > BN) {
      int64_t klo = 0, khi = 0;
      if (64 * c < tile.rows) mask.key_range(row0, row0 + min(64, tile.rows - 64 * c), klo, khi);
      own_end = khi > klo ? (int)min((int64_t)n_end, (khi + BN - 1) / BN) : n_first;
      own_end = max(own_end, n_first);
    }

    // Eager rescaling: lazy (softmax.h) measured no gain here (llama 8k, 7 rounds: 598 against
    // 605 TFLOP/s): the multiply hides behind the other consumer's products.
    sm80::OnlineSoftmax<1, BN / 8> softmax;
    softmax.init_log2(tile.sink_log2, lane);
    float acc_o[1][D / 8][4];
    sm80::zero(acc_o);
    const T* sQ = reinterpret_cast<const T*>(base + L::q + qs * L::kQBytes + c * 64 * 128);

    // Software pipeline over key blocks: the product S_j = Q K_j^T is issued together with
    // O += P_{j-1} V_{j-1}, and the softmax of S_j runs while the tensor cores finish P V.
    auto stage_of = [&](int n, int& s, uint32_t& phase) { ring.slot(kv_done + n - n_first, s, phase); };
    auto issue_s = [&](float (&sc)[1][BN / 8][4], int n) {
      int s;
      uint32_t phase;
      stage_of(n, s, phase);
      const T* sK = reinterpret_cast<const T*>(base + L::k + s * L::kKVBytes);
      mbar_wait(&k_full[s], phase);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(sc[0], kmajor_desc(sQ, kk, BM * 128), kmajor_desc(sK, kk, BN * 128), kk > 0, T{});
      wgmma_commit();
    };
    auto issue_pv = [&](uint32_t (&p_frag)[BN / 16][4], int n) {
      int s;
      uint32_t phase;
      stage_of(n, s, phase);
      const T* sV = reinterpret_cast<const T*>(base + L::v + s * L::kKVBytes);
      mbar_wait(&v_full[s], phase);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)
        mma_rs<1>(acc_o[0], p_frag[kk], nmajor_desc(sV, kk, BN * 128), 1, T{});
      wgmma_commit();
    };
    auto release = [&](uint64_t* empty, int n) {
      int s;
      uint32_t phase;
      stage_of(n, s, phase);
      mbar_arrive(&empty[s]);
    };
    // S_n is in registers: its k stage is free, and after the last S the q tile too.
    auto s_done = [&](int n) {
      release(k_empty, n);
      if (kT.persistent && n == own_end - 1) mbar_arrive(&q_empty[qs]);
    };
    // Masks this warp's rows of a score tile whose first key is n0: from the shared tile info's
    // int32 RowMask32, or through Mask.
    auto mask_rows = [&](auto& sc, int64_t n0) {
      if constexpr (kSharedInfo) {
        constexpr int NT = std::extent_v<std::remove_reference_t<decltype(sc)>, 1>;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int lo, hi;
          tile.rows_mask.bounds(64 * c + 16 * warp + lane / 4 + 8 * h,
                                (int)(n0 - (int64_t)n_first * BN), NT * 8, lo, hi);
          sm80::mask_row(sc[0], h, lo, hi, lane);
        }
      } else {
        sm80::apply_mask(sc, mask, row0 + 16 * warp, n0, lane);
      }
    };
    // Mask and online softmax of S_n (raw scores become P); when it returns true, corr rescales
    // O from the old max.
    auto softmax_step = [&](float (&sc)[1][BN / 8][4], int n, float (&corr)[2]) {
      const int64_t n0 = (int64_t)n * BN;
      if (!mask.all_visible(row0, row0 + 64, n0, n0 + BN))
        mask_rows(sc, n0);
      return softmax.update(sc, p.scale_log2, corr);
    };

    // Narrow windows (persistent kernel, tile_info): one pass over this warpgroup's span of
    // 192 keys replaces the walk over both key blocks: S in three 64-key pieces, one softmax,
    // P V in twelve 16-key steps. A quarter fewer products and exps than the two 128-key
    // blocks, no second softmax or rescale; the tile's three turns and both stages' hand-backs
    // stay as in the walk.
    // 0 or 64 from block n_first; -1: walk. 128-row tiles only (S and P of a 192-key span, 96 +
    // 48 registers, do not fit the 3 consumers of 192-row tiles).
    const int span0 = kSharedInfo ? tile.span0[c] : -1;
    constexpr int kSpan = 192;
    auto span_pass = [&]() {
      int s0, s1;
      uint32_t ph0, ph1;
      stage_of(n_first, s0, ph0);
      stage_of(n_first + 1, s1, ph1);
      // Key k of the span (from block n_first's first key) in the stage holding its block.
      auto key_row = [&](const char* tiles, int k) {
        const int key = span0 + k;
        return reinterpret_cast<const T*>(tiles + (key < BN ? s0 : s1) * L::kKVBytes + (key % BN) * 128);
      };
      float sc[1][kSpan / 8][4];
      turns.wait();
      mbar_wait(&k_full[s0], ph0);
      mbar_wait(&k_full[s1], ph1);
      wgmma_fence();
#pragma unroll
      for (int piece = 0; piece < kSpan / 64; ++piece) {
        auto& d = *reinterpret_cast<float(*)[8][4]>(&sc[0][8 * piece]);
        const T* sK = key_row(base + L::k, 64 * piece);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
          mma_ss<0, 0>(d, kmajor_desc(sQ, kk, BM * 128), kmajor_desc(sK, kk, BN * 128), kk > 0, T{});
      }
      wgmma_commit();
      turns.pass();
      wgmma_wait<0>();
      pin(sc[0]);
      release(k_empty, n_first);
      release(k_empty, n_first + 1);
      mbar_arrive(&q_empty[qs]);
      mask_rows(sc, (int64_t)n_first * BN + span0);
      // One max over the span, then per 64-key piece its exps and its P V, issued while the
      // next piece's exps run (O is still zero: no rescale).
      float m_use[2];
      softmax.begin(sc, p.scale_log2, m_use);
      uint32_t pf[kSpan / 16][4];
      auto piece_pv = [&](auto piece_c) {
        constexpr int kP = decltype(piece_c)::value;
        softmax.template exps<8 * kP, 8 * kP + 8>(sc, p.scale_log2, m_use);
        sm80::acc_to_a<4, T>(*reinterpret_cast<uint32_t(*)[4][4]>(&pf[4 * kP]),
                             *reinterpret_cast<float(*)[8][4]>(&sc[0][8 * kP]));
        if constexpr (kP == 0) {
          turns.wait();
          mbar_wait(&v_full[s0], ph0);
          mbar_wait(&v_full[s1], ph1);
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 4 * kP; kk < 4 * kP + 4; ++kk)
          mma_rs<1>(acc_o[0], pf[kk], nmajor_desc(key_row(base + L::v, 16 * kk), 0, BN * 128), 1, T{});
        if constexpr (kP == 0) turns.pass();
      };
      piece_pv(std::integral_constant<int, 0>{});
      piece_pv(std::integral_constant<int, 1>{});
      piece_pv(std::integral_constant<int, 2>{});
      wgmma_commit();
      wgmma_wait<0>();
      pin(acc_o[0]);
      pin(pf);
      release(v_empty, n_first);
      release(v_empty, n_first + 1);
      turns.wait();  // the walk's third turn (its last P V)
      turns.pass();
    };

    uint32_t p_frag[BN / 16][4];
    if (span0 >= 0) {
      span_pass();
    } else if (n_first < own_end) {
      float sc[1][BN / 8][4];
      float corr[2];
      turns.wait();
      issue_s(sc, n_first);
      turns.pass();
      wgmma_wait<0>();
      pin(sc[0]);
      s_done(n_first);
      softmax_step(sc, n_first, corr);  // O is still zero: corr is not needed
      sm80::acc_to_a<BN / 16, T>(p_frag, sc[0]);
    } else {
      if (kT.persistent) mbar_arrive(&q_empty[qs]);  // no key to see: the output is the sink's alone
    }
    for (int n = n_first + 1; n < own_end && span0 < 0; ++n) {
      float sc[1][BN / 8][4];
      float corr[2];
      turns.wait();
      issue_s(sc, n);
      issue_pv(p_frag, n - 1);
      turns.pass();
      wgmma_wait<1>();  // S_n is done, P V may still run
      pin(sc[0]);
      s_done(n);
      const bool rescale = softmax_step(sc, n, corr);
      wgmma_wait<0>();  // P_{n-1} V_{n-1} is in O; its registers and stage are free
      pin(acc_o[0]);
      pin(p_frag);
      release(v_empty, n - 1);
      if (rescale) sm80::scale_rows(acc_o, corr);
      sm80::acc_to_a<BN / 16, T>(p_frag, sc[0]);
    }
    if (n_first < own_end && span0 < 0) {
      turns.wait();
      issue_pv(p_frag, own_end - 1);
      turns.pass();
      wgmma_wait<0>();
      pin(acc_o[0]);
      pin(p_frag);
      release(v_empty, own_end - 1);
    }
    if constexpr (BM > BN) {
      // The blocks these rows do not see go back unread, and every consumer takes
      // n_end - n_first + 1 turns a tile, so the walk's own extra turn too when it saw no block.
      for (int n = own_end; n < n_end; ++n) {
        ring.skip(kv_done + n - n_first);
        turns.wait();
        turns.pass();
      }
      if (own_end == n_first && n_first < n_end) {
        turns.wait();
        turns.pass();
      }
    }
    kv_done += n_end - n_first;

    float inv[2], lse[2];
    softmax.finish(inv, lse);
    sm80::scale_rows(acc_o, inv);
    const int warp_row = 64 * c + 16 * warp;  // this warp's first row in the tile
    int64_t out_off, lse_off;
    if constexpr (kSharedInfo) {
      out_off = tile.out_off;
      lse_off = tile.lse_off;
    } else {  // recomputed here, where they cost no registers
      const FwdWork w =
          kT.persistent ? FwdWork(p, sched, info_slot(tiles_done - 1)->pos, BM, BN) : work(0);
      out_off = w.out_offset(p);
      lse_off = w.lse_offset(p);
    }
    const int rows_left = tile.rows - warp_row;
    if (p.lse != nullptr && lane % 4 == 0) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = r * 8 + lane / 4;
        if (row < rows_left) p.lse[lse_off + warp_row + row] = lse[r];
      }
    }
    T* stage = reinterpret_cast<T*>(base + L::o) + (c * 4 + warp) * 16 * L::kStage;
    sm80::stage_acc<D / 8, T>(stage, L::kStage, acc_o[0], 1.f, lane);
    __syncwarp();
    T* gO = static_cast<T*>(p.out.data) + out_off + (int64_t)warp_row * p.out.row_stride;
    sm80::store_rows16<D>(gO, p.out.row_stride, stage, rows_left, lane);
    if (kT.persistent) __syncwarp();  // the staging rows are rewritten by this warp's next tile
  }
  turns.finish();
}

}  // namespace sinkattn::cuda::sm90
