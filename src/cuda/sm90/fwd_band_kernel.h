// Hopper forward for narrow bands under GQA (sm_90a, head dim 64; tile_size.h's fwd_band says
// where it applies). A consumer warpgroup's 64 rows are 16 query positions of 4 query heads of
// one kv group (warp w: head 4c + w, TMA lays the q box out as [heads][16 positions][64]), so
// every warp's rows share one key span of at most 144 keys, computed by one m64n144 product and
// one softmax pass. The per-head narrow kernel (fwd_kernel.h's span pass) gives each warpgroup
// 64 positions of one head: a 192-key span of which a warp's rows see 144, and k / v loaded
// once per query head. A block here: a producer thread and 2 consumers (8 query heads) over a
// run of BandTile::run blocks of 16 positions, whose spans overlap in one k / v tile loaded
// once; the q blocks stream through 2 stages.
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm80/softmax.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/turns.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

// Shared memory of the band forward, in bytes from a 1024-byte aligned base.
struct BandSmem {
  static constexpr BandTile kT = band_tile();
  static constexpr int kKeys = 16 * kT.run + kT.span - 16;  // keys of the block's k / v tile
  static constexpr int kKVBytes = kKeys * 128;              // [kKeys][64] 16-bit
  static constexpr int kQBytes = kT.heads * 16 * 128;       // one q stage: [heads][16][64]
  static constexpr int kStage = sm80::smem_stride(64);      // epilogue staging row (elements)
  static constexpr int k = 0;
  static constexpr int v = k + kKVBytes;
  static constexpr int q = v + kKVBytes;                    // [stages]
  static constexpr int o = q + kT.stages * kQBytes;         // 16 staging rows per consumer warp
  static constexpr int bars = o + kT.consumers * 4 * 16 * kStage * 2;
  static constexpr int kBars = 1 + 2 * kT.stages;           // kv full, q full / empty
  static constexpr int bytes = bars + kBars * 8 + 1024;     // + alignment slack
  static_assert(kKeys <= 256, "one TMA box per k / v tile");
  static_assert(kKVBytes % 1024 == 0 && kQBytes % 1024 == 0, "swizzled tiles stay aligned");
};

// Grid: x = (kv head, group of kT.heads query heads), y = run of positions, z = sequence.
template <typename T>
__global__ void __launch_bounds__((band_tile().consumers + 1) * 128, 1)
    fwd_band_kernel(const __grid_constant__ sm80::Params p, const __grid_constant__ CUtensorMap map_q,
                    const __grid_constant__ CUtensorMap map_k,
                    const __grid_constant__ CUtensorMap map_v, int pingpong) {
  using L = BandSmem;
  constexpr BandTile kT = L::kT;
  constexpr int NT = kT.span / 8;  // n-tiles of a span
  constexpr int S = kT.stages;

  extern __shared__ char smem_raw[];
  char* base = align1024(smem_raw);
  uint64_t* kv_full = reinterpret_cast<uint64_t*>(base + L::bars);
  uint64_t* q_full = kv_full + 1;
  uint64_t* q_empty = q_full + S;

  const sm80::Sequence seq(p, blockIdx.z);
  const int64_t r0 = (int64_t)blockIdx.y * 16 * kT.run;  // the run's first query row
  if (r0 >= seq.len_q) return;
  const int octets = p.group / kT.heads;
  const int64_t hk = blockIdx.x / octets, h0 = hk * p.group + (blockIdx.x % octets) * kT.heads;
  const cuda::Mask mask = cuda::Mask::of(p, seq);
  const int blocks = (int)min((int64_t)kT.run, (seq.len_q - r0 + 15) / 16);
  // Key of the k / v tile's row 0: the window start of the run's first position. Position block
  // j's span starts 16 j rows further (positions advance by one per row: no zigzag here); keys
  // outside [0, len_k) are masked (TMA reads zeros before row 0 and past the last, a packed
  // neighbour's rows inside).
  const int64_t key0 = mask.pos(r0) - p.window_left;
  const int bq = seq.varlen ? 0 : (int)seq.b;
  const int rq = (int)(seq.varlen ? seq.row_q : 0), rk = (int)(seq.varlen ? seq.row_k : 0);

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    mbar_init_ring(q_full, q_empty, S, kT.consumers * 128);
    mbar_fence_init();
  }
  __syncthreads();

  const int wg = __shfl_sync(0xffffffff, (int)threadIdx.x / 128, 0);
  if (wg == 0) {
    regs_dealloc<kT.producer_regs>();
    if (threadIdx.x != 0) return;
    mbar_expect_tx(kv_full, 2 * L::kKVBytes);
    tma_load_4d(base + L::k, &map_k, kv_full, 0, rk + (int)key0, (int)hk, bq);
    tma_load_4d(base + L::v, &map_v, kv_full, 0, rk + (int)key0, (int)hk, bq);
    for (int j = 0; j < blocks; ++j) {
      const int s = j % S;
      if (j >= S) mbar_wait(&q_empty[s], ((j / S) & 1) ^ 1);
      mbar_expect_tx(&q_full[s], L::kQBytes);
      tma_load_4d(base + L::q + s * L::kQBytes, &map_q, &q_full[s], 0, rq + (int)(r0 + 16 * j),
                  (int)h0, bq);
    }
    return;
  }

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int64_t head = h0 + 4 * c + warp;
  const float sink_log2 = p.sinks ? p.sinks[head] * 1.4426950408889634f : -INFINITY;
  T* stage = reinterpret_cast<T*>(base + L::o) + (c * 4 + warp) * 16 * L::kStage;
  const Turns turns{pingpong != 0, c, kT.consumers, 1};
  turns.start();
  mbar_wait(kv_full, 0);

  // Software pipeline over the position blocks, as the causal walk (fwd_kernel.h) does over key
  // blocks: S_j is issued together with P_{j-1} V, the mask and softmax of S_j run while P_{j-1} V
  // is on the tensor cores, then block j - 1's epilogue. Each block's O starts from zero (the
  // first product overwrites it).
  uint32_t pf[NT / 2][4];  // P of the block before, as A fragments
  float acc_o[1][8][4];
  float inv[2], lse[2];    // its rows' 1 / denominator and lse
  auto issue_pv = [&](int j) {
    const T* sV = reinterpret_cast<const T*>(base + L::v + j * 16 * 128);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk)
      mma_rs<1>(acc_o[0], pf[kk], nmajor_desc(sV, kk, 0), kk > 0, T{});
    wgmma_commit();
  };
  auto epilogue = [&](int j) {
    const int64_t m0 = r0 + 16 * j, rows_left = seq.len_q - m0;
    sm80::scale_rows(acc_o, inv);
    if (p.lse != nullptr && lane % 4 == 0) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = lane / 4 + 8 * h;
        if (row < rows_left) p.lse[seq.lse_index(p, head, m0 + row)] = lse[h];
      }
    }
    sm80::stage_acc<8, T>(stage, L::kStage, acc_o[0], 1.f, lane);
    __syncwarp();
    sm80::store_rows16<64>(static_cast<T*>(p.out.data) + seq.offset(p.out, true, m0, head),
                           p.out.row_stride, stage, rows_left, lane);
    __syncwarp();  // the staging rows are rewritten by the next block
  };

  // Block j; the first (kFirst) has no P V before it, and waits for its S alone.
  auto block = [&](int j, auto first_c) {
    constexpr bool kFirst = decltype(first_c)::value;
    const int s = j % S;
    const int64_t m0 = r0 + 16 * j;  // first row of this position block
    const T* sQ = reinterpret_cast<const T*>(base + L::q + s * L::kQBytes + c * 64 * 128);
    const T* sK = reinterpret_cast<const T*>(base + L::k + j * 16 * 128);
    float sc[1][NT][4];
    turns.wait();
    mbar_wait(&q_full[s], (j / S) & 1);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      mma_ss<0, 0>(sc[0], kmajor_desc(sQ, kk, 0), kmajor_desc(sK, kk, 0), kk > 0, T{});
    wgmma_commit();
    if constexpr (!kFirst) issue_pv(j - 1);
    turns.pass();
    wgmma_wait<kFirst ? 0 : 1>();  // S_j is done, P V may still run
    pin(sc[0]);
    mbar_arrive(&q_empty[s]);

    // Row g + 8h of the warp sees keys [max(0, pos - left), min(len_k - 1, pos + right)], as
    // span columns from key0 + 16 j.
    const int64_t span0 = key0 + 16 * j;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t pos = mask.pos(m0 + lane / 4 + 8 * h);
      const int64_t lo = max(int64_t{0}, pos - p.window_left) - span0;
      const int64_t hi = min(seq.len_k - 1, pos + p.window_right) - span0;
      sm80::mask_row(sc[0], h, (int)max(int64_t{-1}, min(lo, (int64_t)kT.span)),
                     (int)max(int64_t{-1}, min(hi, (int64_t)kT.span)), lane);
    }
    sm80::OnlineSoftmax<1, NT> softmax;
    softmax.init_log2(sink_log2, lane);
    float m_use[2];
    softmax.begin(sc, p.scale_log2, m_use);
    softmax.template exps<0, NT>(sc, p.scale_log2, m_use);

    if constexpr (!kFirst) {
      wgmma_wait<0>();  // P_{j-1} V is in O; pf is free
      pin(acc_o[0]);
      pin(pf);
      epilogue(j - 1);
    }
    softmax.finish(inv, lse);
    sm80::acc_to_a<NT / 2, T>(pf, sc[0]);
  };
  block(0, std::true_type{});
  for (int j = 1; j < blocks; ++j) block(j, std::false_type{});
  turns.wait();
  issue_pv(blocks - 1);
  turns.pass();
  wgmma_wait<0>();
  pin(acc_o[0]);
  pin(pf);
  epilogue(blocks - 1);
  turns.finish();
}

}  // namespace sinkattn::cuda::sm90
