// Hopper backward dK/dV kernel (sm_90a), with dQ accumulated by TMA reductions: one block per
// (128 keys, kv head, sequence). Warpgroup 0's first warp produces: K and V once, then for every
// (query head of the GQA group, query block) that can see the keys, Q and dO through TMA and
// lse / delta rows into a ring of stages. Consumer warpgroups 1 and 2 own 64 keys each for dK
// and dV, kept in registers across the whole walk (so GQA needs no dK/dV reduction). Per step
// of block_m queries, each consumer over its own keys:
//   S^T = K Q^T and dP^T = V dO^T (wgmma, shared operands, two commit groups: P^T = exp(S^T
//   scale - lse) is computed while dP^T is still on the tensor cores, at d 64 an eighth of its
//   exps on the FMA pipe, BwdTile::exp2_fma);
//   dS^T = P^T (dP^T - delta); dV += P^T dO and dK += dS^T Q with P^T, dS^T from registers,
//   dS^T stored to shared memory between the two so the stores overlap them;
//   dQ = dS K over all 128 keys of the block (both consumers' dS^T, double-buffered so a step
//   needs one barrier between the consumers; the k-steps over a consumer's own keys issued before
//   it): at d 64 (128-query steps) consumer c computes
//   queries 64c.. of it; at d 128 (64-query steps, causal) one consumer all 64 x 128 of it, the
//   two taking turns (kDqTurns; narrow windows: head-dim columns 64c.. each). The parts are added
//   into the fp32 accumulator with TMA reductions (`cp.reduce.async.bulk.tensor`, boxes of 64
//   rows x 32 columns), so every dQ element of a step is reduced once, not once per consumer.
//   The consumers only stage their part in shared memory: a producer warp, the dq writer,
//   issues the reductions and hands the staging back once TMA has read it.
// The prep / dq conversion / dsink kernels around it are the portable path's. In the
// deterministic mode this kernel skips dQ (its dK and dV have a fixed summation order already)
// and bwd_dq_kernel.h computes dq. Narrow windows outside zigzag instead hand dQ from key block
// to key block in either mode (dq_handoff.h): no reductions, no conversion; or, for narrow bands
// under GQA, the band dq kernel (bwd_band_dq_kernel.h) writes dq and delta first and this
// kernel's kDkDvOnly instantiation does dK and dV alone.
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/common/ptx.h"
#include "cuda/common/step_walk.h"
#include "cuda/sm80/grid.h"
#include "cuda/sm80/mask.h"
#include "cuda/sm80/params.h"
#include "cuda/sm80/sequence.h"
#include "cuda/sm80/smem_tile.h"
#include "cuda/sm90/dq_handoff.h"
#include "cuda/sm90/tile_size.h"
#include "cuda/sm90/tma.h"
#include "cuda/sm90/wgmma.h"

namespace sinkattn::cuda::sm90 {

using sm80::Mask;
using sm80::Params;
using sm80::Sequence;

// Shared memory of the backward kernel, in bytes from a 1024-byte aligned base. kDkDvOnly (dq by
// the band dq kernel): no dS^T tiles, their room holding two more q / dO stages (the narrow
// steps are short, and Nsight had 14% of the kernel's stall samples on the q / dO waits).
template <int D, bool kDkDvOnly = false>
struct BwdSmem {
  static constexpr BwdTile kT = bwd_tile(D);
  static constexpr int kStages = kDkDvOnly ? kT.stages + 2 : kT.stages;
  static constexpr int kKVBytes = kT.block_n * D * 2;      // k or v (resident)
  static constexpr int kQBytes = kT.block_m * D * 2;       // one q or dout stage
  // dS^T of the block: [block_m / 64 query sub-tiles][block_n keys][64 queries], 16-bit
  static constexpr int kDSBytes = kT.block_n * kT.block_m * 2;
  // one consumer's 64 x 64 fp32 dq part (2 chunks of [64 rows][32]; with dq turns, d 128, the two
  // consumers' staging together holds a step's 64 x 128), or with the dq handoff the partial it
  // adds, also its dK / dV staging rows in the epilogue (64 rows of sm80::smem_stride(D)
  // elements)
  static constexpr int kDQBytes = 64 * 64 * 4 > 64 * (D + 8) * 2 ? 64 * 64 * 4 : 64 * (D + 8) * 2;
  static constexpr int k = 0;
  static constexpr int v = k + kKVBytes;
  static constexpr int q = v + kKVBytes;                   // [stages]
  static constexpr int dout = q + kStages * kQBytes;       // [stages]
  static constexpr int ds = dout + kStages * kQBytes;      // [2]: steps alternate
  static constexpr int dq = ds + (kDkDvOnly ? 0 : 2 * kDSBytes);  // [consumers]
  static constexpr int ld = dq + kT.consumers * kDQBytes;  // [stages][block_m] {lse2, delta}
  static constexpr int dq_steps = ld + kStages * kT.block_m * 8;  // [stages] DqStep (handoff)
  static constexpr int bars = dq_steps + kStages * sizeof(DqStep);
  // kv_full, q_full, empty, part_full / _empty, the handoff's stored-pieces counter, and
  // dq_full / dq_empty per consumer (the dq writer warp)
  static constexpr int kBars = 8 + 2 * kStages;
  static constexpr int bytes = bars + kBars * 8 + 1024;
  static_assert(bytes <= 227 * 1024, "fits one block per SM");
};

// kNarrow: narrow windows (sm90::fwd_short_rows), whose every step is cut by the mask.
// kDkDvOnly (narrow, params.band_dq): dK and dV alone, with deeper q / dO staging (BwdSmem).
template <typename T, int D, bool kNarrow, bool kDkDvOnly = false>
__global__ void __launch_bounds__((bwd_tile(D).consumers + 1) * 128, 1)
    bwd_kernel(const __grid_constant__ Params p, const __grid_constant__ CUtensorMap map_q,
               const __grid_constant__ CUtensorMap map_k, const __grid_constant__ CUtensorMap map_v,
               const __grid_constant__ CUtensorMap map_dout,
               const __grid_constant__ CUtensorMap map_dq) {
  static_assert(kNarrow || !kDkDvOnly, "dK / dV alone: narrow windows (band dq) only");
  using L = BwdSmem<D, kDkDvOnly>;
  constexpr BwdTile kT = L::kT;
  constexpr int BM = kT.block_m, BN = kT.block_n, S = L::kStages, kSub = D / 64;
  constexpr int kConsumerThreads = kT.consumers * 128;
  constexpr int kQSub = BM / 64;  // 64-query sub-tiles of a step
  // d 128 (causal): a step's whole dQ (64 queries x 128 columns, one m64n128 product) is one
  // consumer's, the two taking turns, instead of 64 columns each: a quarter less shared memory
  // read for it (6 KB per k-step where two m64n64 read 8; at d 128 the shared-memory pipe is the
  // busiest unit), and the consumer off turn goes on to the next step. Its part fills both
  // consumers' staging (4 boxes), one dq_full / dq_empty. H200, llama 8k backward: +1.4% in 11
  // interleaved rounds, 471.5 -> 483.9 TFLOP/s in the benchmark harness.
  constexpr bool kDqTurns = D == 128 && !kNarrow;
  static_assert(!kDqTurns || 2 * L::kDQBytes >= 64 * D * 4, "a whole part fits the staging");
  static_assert(BN == 128 && kT.consumers == 2 && kSub * kQSub == 2,
                "64 keys per consumer; dQ splits the queries (d 64) or the head dim (d 128)");
  static_assert(L::kDQBytes >= 64 * sm80::smem_stride(D) * 2, "epilogue staging fits");

  extern __shared__ char smem_raw[];
  char* base = align1024(smem_raw);
  uint64_t* bars = reinterpret_cast<uint64_t*>(base + L::bars);
  uint64_t* kv_full = bars;
  uint64_t* q_full = bars + 1;
  uint64_t* empty = q_full + S;
  uint64_t* part_full = empty + S;  // dq handoff: the partial is in the dq staging
  uint64_t* part_empty = part_full + 1;
  // Pieces passed on, counted in consumer warps: a warp counts piece n + 1 only after the step
  // barrier (named_sync 3) that every warp reaches after counting piece n, so 8 n counts mean
  // pieces 0 .. n - 1 are all stored.
  int32_t* stored = reinterpret_cast<int32_t*>(part_empty + 1);
  // A consumer's dq part is in its staging (its 4 warps arrive), and has been read by the writer.
  uint64_t* dq_full = part_empty + 2;
  uint64_t* dq_empty = dq_full + 2;
  float2* sLD = reinterpret_cast<float2*>(base + L::ld);
  DqStep* sDqStep = reinterpret_cast<DqStep*>(base + L::dq_steps);

  const sm80::GridPos at = sm80::kv_grid_pos(p, BN, p.bwd_kv_group);
  const int64_t head_kv = at.head, b = at.b;
  const Sequence seq(p, b);
  const int64_t n0 = at.block * BN;  // under a causal mask the first key blocks see the most
  if (n0 >= seq.len_k) return;
  const Mask mask = Mask::of(p, seq);
  int mb_first, mb_count;
  cuda::walked_query_blocks(mask, n0, BN, BM, mb_first, mb_count);
  const int iters = mb_count * p.group;  // (query head of the group, query block) steps
  // dq handed from key block to key block (dq_handoff.h; the host sets dq_flags for narrow
  // windows only).
  const bool handoff = kNarrow && !kDkDvOnly && p.dq_flags != nullptr;
  static_assert(BM % sm80::kPrepRows == 0, "a query block has its own handoff counter");
  const int group0 = (int)seq.group0(p);  // the handoff counters' slot (DqStep)
  // The steps' order (step_walk.h): by diagonals with the handoff, else head by head.
  const cuda::StepWalk walk0 = cuda::StepWalk::first(handoff, mb_count);
  auto advance = [&](cuda::StepWalk& w) { w.advance(handoff, mb_count, p.group); };
  auto step = [&](const cuda::StepWalk& w, int64_t& head, int64_t& m0) {
    head = head_kv * p.group + w.head;
    m0 = (int64_t)(mb_first + w.block) * BM;
  };
  // Packed (varlen) tensors are one batch entry; rows are offset by the sequence start.
  const int bq = seq.varlen ? 0 : (int)b;
  const int rq = (int)(seq.varlen ? seq.row_q : 0), rk = (int)(seq.varlen ? seq.row_k : 0);
  const int dq_row0 = (int)(seq.varlen ? seq.row_q : b * p.seqlen_q);  // rows of dq_accum

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    for (int s = 0; s < S; ++s) {
      mbar_init(&q_full[s], 32);  // the producer's lanes, each after its lse / delta stores
      mbar_init(&empty[s], kConsumerThreads);
    }
    mbar_init(part_full, 1);
    mbar_init(part_empty, kConsumerThreads);
    for (int c = 0; c < 2; ++c) {
      mbar_init(&dq_full[c], 4);
      mbar_init(&dq_empty[c], 1);
    }
    *stored = 0;
    mbar_fence_init();
  }
  __syncthreads();

  // The warpgroup index through a shuffle from lane 0: the compiler then knows it is warp-uniform
  // and keeps the per-consumer addresses and wgmma descriptors in uniform registers (SASS: 54 ->
  // 19 R2UR moves; in the forward the same spilled the persistent kernel, so it stays there).
  const int wg = __shfl_sync(0xffffffff, (int)threadIdx.x / 128, 0), lane = threadIdx.x % 32;
  // Atomic mode: dQ here, by TMA reductions. Deterministic mode: dQ comes from the Hopper dq
  // kernel afterwards (reductions land in no fixed order), this kernel does dK and dV only. With
  // the handoff, dQ here in either mode (its sum has a fixed order).
  const bool with_dq = !kDkDvOnly && (p.dq_atomic != 0 || handoff);
  // The reductions: a producer warp (the writer) issues them for each consumer's dq part once its
  // 4 warps have staged it, so the consumers only store and fence (FA3's dQ writer). Nsight had
  // put the consumers' own issue (its elect loop waiting on the TMA unit), the wait for the
  // previous step's reads and the warp-box bookkeeping at ~4% of their stall samples.
  const bool writer = with_dq && !handoff;
  if (wg == 0) {
    regs_dealloc<kT.producer_regs>();
    const int pwarp = threadIdx.x / 32;
    if (handoff && (pwarp == 1 || pwarp == 2)) {
      // The dq handoff's other two warps, each walking the steps with one lane: 1 fetches the
      // partials (dq_handoff.h), 2 releases each step's stored piece to the next key block once
      // all 8 consumer warps have counted it into `stored`.
      if (lane != 0) return;
      int n = 0;  // partials fetched / pieces released
      cuda::StepWalk w = walk0;
      for (int it = 0; it < iters; ++it, advance(w)) {
        int64_t head, m0;
        step(w, head, m0);
        const DqStep st =
            DqStep::of(p, seq, mask, group0, head, at.block, BN, BM, mb_first + w.block, D);
        if (pwarp == 1 && st.prior > 0) {
          if (n > 0) mbar_wait(part_empty, (n - 1) & 1);  // the last one has been added
          fetch_partial<D>(st, &map_dq, part_full, base + L::dq, L::kDQBytes, (int)head,
                           dq_row0 + (int)m0);
          ++n;
        } else if (pwarp == 2 && !st.last) {
          ++n;
          while (ptx::ld_acquire_cta_shared(stored) < kDqWarps * n) __nanosleep(32);
          ptx::red_release_gpu_add(st.counter, 1);
        }
      }
      return;
    }
    if (writer && pwarp == 1) {
      if (lane != 0) return;
      // Step by step, each consumer's part: 2 boxes of 64 rows x 32 columns.
      cuda::StepWalk w = walk0;
      for (int it = 0; it < iters; ++it, advance(w)) {
        int64_t head, m0;
        step(w, head, m0);
        if constexpr (kDqTurns) {  // the step's whole part, from whichever consumer's turn it was
          mbar_wait(&dq_full[0], it & 1);
#pragma unroll
          for (int ch = 0; ch < 4; ++ch)
            tma_reduce_add_3d(&map_dq, base + L::dq + ch * 64 * 128, 32 * ch, (int)head,
                              dq_row0 + (int)m0);
          bulk_commit();
          bulk_wait_read();
          mbar_arrive(&dq_empty[0]);
          continue;
        }
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int qs = kQSub == 2 ? c : 0, ds = kSub == 2 ? c : 0;
          mbar_wait(&dq_full[c], it & 1);
#pragma unroll
          for (int ch = 0; ch < 2; ++ch)
            tma_reduce_add_3d(&map_dq, base + L::dq + c * L::kDQBytes + ch * 64 * 128,
                              64 * ds + 32 * ch, (int)head, dq_row0 + (int)m0 + 64 * qs);
          bulk_commit();
        }
        bulk_wait_read();
        mbar_arrive(&dq_empty[0]);
        mbar_arrive(&dq_empty[1]);
      }
      bulk_wait();
      return;
    }
    if (pwarp > 0) return;
    if (lane == 0) {
      tma_prefetch_desc(&map_q);
      tma_prefetch_desc(&map_dout);
      mbar_expect_tx(kv_full, 2 * L::kKVBytes);
#pragma unroll
      for (int sub = 0; sub < kSub; ++sub) {
        tma_load_4d(base + L::k + sub * BN * 128, &map_k, kv_full, 64 * sub, rk + (int)n0,
                    (int)head_kv, bq);
        tma_load_4d(base + L::v + sub * BN * 128, &map_v, kv_full, 64 * sub, rk + (int)n0,
                    (int)head_kv, bq);
      }
    }
    cuda::StepWalk w = walk0;
    for (int it = 0; it < iters; ++it, advance(w)) {
      const int s = it % S;
      if (it >= S) mbar_wait(&empty[s], ((it / S) & 1) ^ 1);
      int64_t head, m0;
      step(w, head, m0);
      // q and dO first, so that their latency overlaps the lse / delta loads below (the phase
      // completes at the lanes' arrivals after those, which release their stores to the
      // consumers).
      if (lane == 0) {
        mbar_expect_tx_only(&q_full[s], 2 * L::kQBytes);
#pragma unroll
        for (int sub = 0; sub < kSub; ++sub) {
          tma_load_4d(base + L::q + s * L::kQBytes + sub * BM * 128, &map_q, &q_full[s], 64 * sub,
                      rq + (int)m0, (int)head, bq);
          tma_load_4d(base + L::dout + s * L::kQBytes + sub * BM * 128, &map_dout, &q_full[s],
                      64 * sub, rq + (int)m0, (int)head, bq);
        }
      }
      if (handoff && lane == 0)
        sDqStep[s] =
            DqStep::of(p, seq, mask, group0, head, at.block, BN, BM, mb_first + w.block, D);
      // lse in the exp2 domain and delta per query row, all of a lane's rows loaded before any
      // is used; rows past the end (and rows that saw nothing, lse = -inf) get lse2 = +inf, so
      // P = 0 there.
      constexpr int kRows = BM / 32;
      float lse[kRows], delta[kRows];
#pragma unroll
      for (int k = 0; k < kRows; ++k) {
        const int64_t i = m0 + lane + 32 * k;
        const bool in = i < seq.len_q;
        const int64_t li = in ? seq.lse_index(p, head, i) : 0;
        lse[k] = in ? p.lse[li] : -INFINITY;
        delta[k] = in ? p.delta[li] : 0.f;
      }
#pragma unroll
      for (int k = 0; k < kRows; ++k)
        sLD[s * BM + lane + 32 * k] =
            make_float2(lse[k] == -INFINITY ? INFINITY : lse[k] * 1.4426950408889634f, delta[k]);
      mbar_arrive(&q_full[s]);
    }
    return;
  }

  regs_alloc<kT.consumer_regs>();
  const int c = wg - 1;                          // keys 64c .. 64c + 63 of the block (dK, dV)
  const int warp = (threadIdx.x / 32) % 4, g = lane / 4, t = lane % 4;
  const int64_t key0 = n0 + 64 * c;
  char* sdQ = base + L::dq + c * L::kDQBytes;    // 2 chunks of [64 rows][32 fp32]
  // This thread's element pair (n-tile nt, row half r) of a dq part staged from `staging` in
  // chunks of [64 rows][32 fp32].
  auto dq_slot = [&](char* staging, int nt, int r) {
    const int row = 16 * warp + g + 8 * r, col = 8 * nt + 2 * t;
    return reinterpret_cast<float2*>(staging + (col / 32) * 64 * 128 +
                                     swizzle128(row, (col % 32) * 4));
  };
  // Stages this warp's rows of the step's dq part (8-column n-tiles) once the writer has read
  // the one before from the same staging, and tells the writer.
  auto stage_dq = [&](char* staging, const auto& dq, int it, uint64_t* full, uint64_t* read) {
    constexpr int NT = std::extent_v<std::remove_reference_t<decltype(dq)>>;
    if (it > 0) mbar_wait(read, (it - 1) & 1);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        *dq_slot(staging, nt, r) = make_float2(dq[nt][2 * r], dq[nt][2 * r + 1]);
    fence_async_smem();  // this warp's rows are in shared memory for the writer's TMA
    __syncwarp();
    if (lane == 0) mbar_arrive(full);
  };
  const T* sK = reinterpret_cast<const T*>(base + L::k + c * 64 * 128);  // this consumer's keys
  const T* sV = reinterpret_cast<const T*>(base + L::v + c * 64 * 128);
  // This consumer's 64 x 64 part of dQ = dS K: A = query sub-tile qs of dS^T (all 128 keys),
  // B = head-dim sub-tile ds of K; it lands at (query row0 + 64 qs, column 64 ds) of the step.
  const int qs = kQSub == 2 ? c : 0, ds = kSub == 2 ? c : 0;
  const char* sKdq = base + L::k + ds * BN * 128;

  float acc_dk[D / 8][4], acc_dv[D / 8][4];
  sm80::zero(acc_dk);
  sm80::zero(acc_dv);
  // Narrow windows: the mask seen from this consumer's keys and this thread's two key rows, once
  // per block (per step it cost every step of a narrow window ~100 instructions of 64-bit
  // arithmetic), and one bit per element. The causal loop keeps the per-step bounds and the
  // compares: with these it measured -0.2 to -1.3% (ptxas schedules the whole step loop).
  const sm80::KeyRowsMask<2> key_mask(mask, key0, key0 + 64,
                                      {key0 + 16 * warp + g, key0 + 16 * warp + g + 8});
  // The narrow dK / dV-only walk (dQ comes from the band dq kernel or the deterministic dq
  // kernel; no zigzag, so the rows that see a key grow with it) skips a step's 64-query half that
  // none of this consumer's keys see: at window 128 one half of each of its two steps per query
  // head goes to one consumer or the other, a quarter of the products.
  const bool halves = kNarrow && !with_dq && p.zigzag_world == 0;
  int64_t key_first = 1, key_last = 0;  // query rows that see some key of this consumer
  if (halves && key0 < seq.len_k) mask.band_rows(key0, key0 + 64, key_first, key_last);
  mbar_wait(kv_full, 0);

  int parts = 0;  // partials added (dq handoff)
  cuda::StepWalk w = walk0;
  for (int it = 0; it < iters; ++it, advance(w)) {
    const int s = it % S;
    int64_t head, m0;
    step(w, head, m0);
    const T* sQ = reinterpret_cast<const T*>(base + L::q + s * L::kQBytes);
    const T* sdO = reinterpret_cast<const T*>(base + L::dout + s * L::kQBytes);
    char* sdS = base + L::ds + (it & 1) * L::kDSBytes;

    // The products of the step's query columns [qoff, qoff + C): all of them (C = BM), or in the
    // narrow dK / dV-only walk the one 64-query half that this consumer's keys see.
    auto products = [&](auto cols_c, int qoff) {
      constexpr int C = decltype(cols_c)::value;
      const T* sQc = sQ + qoff * 64;  // [queries][64] rows: qoff rows further
      const T* sdOc = sdO + qoff * 64;
      // S^T and dP^T: this warp's 16 keys x C queries, one commit group each.
      float st[C / 8][4], dpt[C / 8][4];
      mbar_wait(&q_full[s], (it / S) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(st, kmajor_desc(sK, kk, BN * 128), kmajor_desc(sQc, kk, BM * 128), kk > 0,
                     T{});
      wgmma_commit();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        mma_ss<0, 0>(dpt, kmajor_desc(sV, kk, BN * 128), kmajor_desc(sdOc, kk, BM * 128), kk > 0,
                     T{});
      wgmma_commit();

      // P^T in place while dP^T runs; masked pairs get P = 0.
      const float2* ld = sLD + s * BM + qoff;
      const bool masked =
          kNarrow ? key_mask.cuts((int)m0 + qoff, C) : !mask.all_visible(m0, m0 + BM, key0, key0 + 64);
      // Tiles the mask does not cut skip the bounds (computed only for cut tiles: as a predicated
      // block before the branch they cost every step ~70 instructions) and their per-element test.
      auto p_of_s = [&](auto masked_c) {
        constexpr bool kMasked = decltype(masked_c)::value;
        // Key row r sees query columns [lo[r], hi[r]]; narrow: bit nt of cols[r][e] says whether
        // it sees column 8 nt + 2t + e.
        int lo[2] = {0, 0}, hi[2] = {C - 1, C - 1};
        uint32_t cols[2][2] = {{~0u, ~0u}, {~0u, ~0u}};
        if constexpr (kMasked) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            if constexpr (kNarrow) {
              key_mask.bounds(r, (int)m0 + qoff, C, lo[r], hi[r]);
              cols[r][0] = cuda::fragment_cols(lo[r], hi[r], t, 0);
              cols[r][1] = cuda::fragment_cols(lo[r], hi[r], t, 1);
            } else {
              mask.key_row_bounds(key0 + 16 * warp + g + 8 * r, m0, BM, lo[r], hi[r]);
            }
          }
        }
#pragma unroll
        for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = 8 * nt + 2 * t + e;
            const float lse2 = ld[col].x;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const float arg = fmaf(st[nt][2 * r + e], p.scale_log2, -lse2);
              const float pv = ptx::exp2f_split<kT.exp2_fma>(arg, nt);
              const bool hidden = kNarrow ? !(cols[r][e] & (1u << nt)) : col < lo[r] || col > hi[r];
              st[nt][2 * r + e] = kMasked && hidden ? 0.f : pv;
            }
          }
      };
      wgmma_wait<1>();
      pin(st);
      if (masked)
        p_of_s(std::true_type{});
      else
        p_of_s(std::false_type{});
      wgmma_wait<0>();
      pin(dpt);
#pragma unroll
      for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float delta = ld[8 * nt + 2 * t + e].y;
#pragma unroll
          for (int r = 0; r < 2; ++r) dpt[nt][2 * r + e] = st[nt][2 * r + e] * (dpt[nt][2 * r + e] - delta);
        }
      uint32_t pf[C / 16][4], dsf[C / 16][4];
      sm80::acc_to_a<C / 16, T>(pf, st);
      sm80::acc_to_a<C / 16, T>(dsf, dpt);

      // dV += P^T dO, then dS^T into shared memory while dV runs (the stores then have the dK
      // issue and dV's run to land before the fence below waits for them; H200 +0.1-1.6% d 64,
      // +3.7% llama 8k, against storing after both), then dK += dS^T Q. dS^T is the M-major A
      // operand of dQ = dS K: per 16 queries kk, the A fragment dsf[kk] is four 8 x 8 tiles (key
      // rows 16 warp (+8), query columns 16 kk (+8)), one stmatrix; lane l gives row l % 8 of
      // tile l / 8.
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk)
        mma_rs<1>(acc_dv, pf[kk], nmajor_desc(sdOc, kk, BM * 128), 1, T{});
      if (C == BM && with_dq) {
        const int tile = lane / 8, row = 64 * c + 16 * warp + 8 * (tile % 2) + lane % 8;
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) {
          const int col = 16 * kk + 8 * (tile / 2);
          ptx::stmatrix_x4(sdS + (col / 64) * BN * 128 + swizzle128(row, (col % 64) * 2), dsf[kk]);
        }
      }
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk)
        mma_rs<1>(acc_dk, dsf[kk], nmajor_desc(sQc, kk, BM * 128), 1, T{});
      wgmma_commit();
      if (C != BM || !with_dq) {
        wgmma_wait<0>();
        pin(acc_dv);
        pin(acc_dk);
        pin(pf);
        pin(dsf);
        mbar_arrive(&empty[s]);
        return;
      }

      if constexpr (C == BM) {
        fence_async_smem();
        // dQ = dS K (A: dS^T tile a, B: K tile b with head-dim sub-tiles b_sub bytes apart) in two
        // halves: the k-steps over this consumer's own 64 keys (the dS^T rows it stored itself)
        // behind its own warpgroup's barrier, the other consumer's after the consumers' barrier,
        // so the tensor cores have the first half while that barrier waits (H200, 11 interleaved
        // rounds: gptoss 16k backward +0.3%, 32k +0.5%, llama 8k +1.9%; d 64 +0.2 to +0.5% in
        // two more calls). Key 64 c starts 8 KB into dS^T and K.
        auto dq_halves = [&](auto& dq, const char* a, const char* b, int b_sub) {
          const int own = 64 * 128 * c, other = 64 * 128 * (1 - c);
          named_sync(4 + c, 128);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            mma_ss<1, 1>(dq, nmajor_desc(a + own, kk, 0), nmajor_desc(b + own, kk, b_sub), kk > 0,
                         T{});
          named_sync(3, 256);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk)
            mma_ss<1, 1>(dq, nmajor_desc(a + other, kk, 0), nmajor_desc(b + other, kk, b_sub), 1,
                         T{});
        };
        if constexpr (kDqTurns) {
          const bool turn = c == (it & 1);
          if (!turn) named_sync(3, 256);  // the other consumer's turn: its dQ reads these rows
          wgmma_wait<0>();  // dV and dK: the stage and the A registers are free before dQ's 64
          pin(acc_dv);
          pin(acc_dk);
          pin(pf);
          pin(dsf);
          mbar_arrive(&empty[s]);
          if (!turn) return;
          float dq[D / 8][4];
          dq_halves(dq, sdS, base + L::k, BN * 128);
          wgmma_commit();
          wgmma_wait<0>();
          pin(dq);
          stage_dq(base + L::dq, dq, it, dq_full, dq_empty);  // both consumers' staging
          return;
        }

        float dq[8][4];
        const char* sdSq = sdS + qs * BN * 128;
        if constexpr (!kNarrow) {
          dq_halves(dq, sdSq, sKdq, 0);
        } else {  // narrow windows (dq handoff): one piece after the barrier (split: not measured)
          named_sync(3, 256);  // both consumers' dS^T are in shared memory
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < BN / 16; ++kk)
            mma_ss<1, 1>(dq, nmajor_desc(sdSq, kk, 0), nmajor_desc(sKdq, kk, 0), kk > 0, T{});
        }
        wgmma_commit();
        const DqHandoff<T, D> hand(p, sDqStep[s], 64 * qs + 16 * warp, 64 * ds, lane);
        wgmma_wait<1>();  // dV and dK are done: the stage and the A registers are free
        pin(acc_dv);
        pin(acc_dk);
        pin(pf);
        pin(dsf);
        mbar_arrive(&empty[s]);
        wgmma_wait<0>();
        pin(dq);
        if (handoff) {
          if (hand.prior > 0) {  // add the partial the fetching warp loaded
            mbar_wait(part_full, parts & 1);
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
              for (int r = 0; r < 2; ++r) {
                const float2 v = *dq_slot(sdQ, nt, r);
                dq[nt][2 * r] += v.x;
                dq[nt][2 * r + 1] += v.y;
              }
            ++parts;
            mbar_arrive(part_empty);
          }
          if (hand.pass(p, dq)) {  // passed on: count it for the releasing warp
            __syncwarp();
            if (lane == 0) ptx::red_release_cta_shared_add(stored, 1);
          }
          return;
        }
        stage_dq(sdQ, dq, it, dq_full + c, dq_empty + c);
      }
    };
    if constexpr (kNarrow && kQSub == 2) {
      if (halves) {  // the queries this consumer's keys see: one half of the step, or both
        const int vis = cuda::step_halves(m0, 64, key_first, key_last);
        if (vis != 3) {
          if (vis != 0) {
            products(std::integral_constant<int, 64>{}, vis == 1 ? 0 : 64);
          } else {
            mbar_wait(&q_full[s], (it / S) & 1);
            mbar_arrive(&empty[s]);
          }
          continue;
        }
      }
    }
    products(std::integral_constant<int, BM>{}, 0);
  }

  // Epilogue: dK (scaled) and dV through this warpgroup's staging rows, 16 bytes at a time: its
  // dq staging once the writer has read the last part (a consumer staged part iters - 1 after
  // the read of part iters - 2, so one parity wait suffices). With dq turns the staging is both
  // consumers' and a parity wait cannot tell the writer two parts behind from done, so the rows go
  // where nothing reads any more: the dS^T tiles for the consumer on turn at the last step (its
  // dQ has read them), the q stages for the other (it joined the last barrier after the consumer
  // on turn had finished its dV and dK; the producer has loaded every step).
  constexpr int kStage = sm80::smem_stride(D);
  // (Without dQ, the deterministic mode, there is no writer and no barrier between the consumers:
  // each keeps to its own staging.)
  static_assert(!kDqTurns ||
                    (2 * L::kDSBytes >= 64 * kStage * 2 && S * L::kQBytes >= 64 * kStage * 2),
                "epilogue rows fit the dS^T tiles and the q stages");
  char* epi = sdQ;
  if (kDqTurns && with_dq)
    epi = c == ((iters - 1) & 1) ? base + L::ds : base + L::q;
  else if (writer && iters > 0)
    mbar_wait(dq_empty + c, (iters - 1) & 1);
  named_sync(4 + c, 128);
  T* stage = reinterpret_cast<T*>(epi) + warp * 16 * kStage;
  const int64_t row = key0 + 16 * warp, rows_left = seq.len_k - row;
  T* gdK = static_cast<T*>(p.dk.data) + seq.offset(p.dk, false, row, head_kv);
  T* gdV = static_cast<T*>(p.dv.data) + seq.offset(p.dv, false, row, head_kv);
  sm80::stage_acc<D / 8, T>(stage, kStage, acc_dk, p.scale, lane);
  __syncwarp();
  sm80::store_rows16<D>(gdK, p.dk.row_stride, stage, rows_left, lane);
  __syncwarp();
  sm80::stage_acc<D / 8, T>(stage, kStage, acc_dv, 1.f, lane);
  __syncwarp();
  sm80::store_rows16<D>(gdV, p.dv.row_stride, stage, rows_left, lane);
}

}  // namespace sinkattn::cuda::sm90
