// Shared pieces of the CPU backend: tile sizes, where a sequence's rows live, the mask in key
// positions, and per-thread scratch. Hot arithmetic lives in kernels.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "backend.h"

namespace sinkattn {
namespace cpu {

// Query rows and key columns per tile. 64 x 64 fp32 tiles of S keep everything a thread touches
// for one tile (Q, K, V, S, O at D = 128) inside a 2 MB L2.
constexpr int kBlockQ = 64;
constexpr int kBlockK = 64;
// The GEMM micro-kernels work on register blocks of up to 8 rows x 32 columns (x86-64-v4; 4 x 16
// elsewhere): tiles are padded to that.
constexpr int kRowAlign = 8;
constexpr int kColAlign = 32;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

constexpr float kInf = std::numeric_limits<float>::infinity();

inline size_t element_size(int32_t dtype) { return dtype == SINKATTN_FLOAT32 ? 4 : 2; }

// One sequence of the batch: its lengths and where its rows start.
struct Seq {
  int64_t b = 0;   // index in the batch
  int64_t q0 = 0;  // first row in q-like tensors (varlen: cu_seqlens_q[b]; fixed: 0)
  int64_t k0 = 0;  // first row in k-like tensors
  int64_t sq = 0, sk = 0;
};

inline Seq seq_at(const sinkattn_problem& p, int64_t b) {
  Seq s;
  s.b = b;
  if (is_varlen(p)) {
    s.q0 = p.cu_seqlens_q[b];
    s.k0 = p.cu_seqlens_k[b];
    s.sq = p.cu_seqlens_q[b + 1] - s.q0;
    s.sk = p.cu_seqlens_k[b + 1] - s.k0;
  } else {
    s.sq = p.seqlen_q;
    s.sk = p.seqlen_k;
  }
  return s;
}

// Address of (row, head) of sequence s in tensor t; rows count from the sequence's start.
// batch_stride only applies to the fixed-length layout (varlen rows already carry the offset).
inline char* row_ptr(const sinkattn_problem& p, const sinkattn_tensor& t, int64_t b, int64_t row,
                     int64_t head) {
  int64_t off = row * t.row_stride + head * t.head_stride;
  if (!is_varlen(p)) off += b * t.batch_stride;
  return static_cast<char*>(t.data) + off * static_cast<int64_t>(element_size(p.dtype));
}
inline char* q_row(const sinkattn_problem& p, const sinkattn_tensor& t, const Seq& s, int64_t i,
                   int64_t h) {
  return row_ptr(p, t, s.b, s.q0 + i, h);
}
inline char* k_row(const sinkattn_problem& p, const sinkattn_tensor& t, const Seq& s, int64_t j,
                   int64_t h) {
  return row_ptr(p, t, s.b, s.k0 + j, h);
}

// Offset of (sequence, head, row 0) in an lse-shaped array: (B, Hq, Sq) fixed, (Hq, Tq) varlen.
inline int64_t lse_offset(const sinkattn_problem& p, const Seq& s, int64_t h) {
  return is_varlen(p) ? h * p.total_q + s.q0 : (s.b * p.heads_q + h) * p.seqlen_q;
}
// Elements of an lse-shaped array.
inline int64_t lse_elements(const sinkattn_problem& p) {
  return is_varlen(p) ? p.heads_q * p.total_q : p.batch * p.heads_q * p.seqlen_q;
}

// Packed calls: the rows no sequence covers, [0, cu[0]) and [cu[batch], total), get out and the
// gradients 0 (keys: rows of k / v; else of q) and lse -inf (lse may be NULL), as the CUDA
// backend's guard writes them (cuda/offsets_guard.h).
inline void write_outside_rows(const sinkattn_problem& p, const sinkattn_tensor& t, int64_t heads,
                               bool keys, float* lse = nullptr) {
  if (!is_varlen(p)) return;
  const int32_t* cu = keys ? p.cu_seqlens_k : p.cu_seqlens_q;
  const int64_t total = keys ? p.total_k : p.total_q;
  const size_t bytes = element_size(p.dtype) * static_cast<size_t>(p.head_dim);
  for (const auto& [from, to] : {std::pair<int64_t, int64_t>{0, cu[0]}, {cu[p.batch], total}})
    for (int64_t r = from; r < to; ++r)
      for (int64_t h = 0; h < heads; ++h) {
        std::memset(row_ptr(p, t, 0, r, h), 0, bytes);
        if (lse) lse[h * total + r] = -kInf;
      }
}

// Visible keys of query row i: [lo(i), hi(i)] (empty when lo > hi). Query i sits at key position
// pos(i) = i + sk - sq, or, for fused zigzag CP, i + shift_a below row `split` (chunk r) and
// i + shift_b from it on (chunk 2W-1-r). pos is increasing in both cases, so lo and hi are
// nondecreasing, a block of rows sees [lo(first), hi(last)] and each key block is seen by a row
// interval.
struct Mask {
  int64_t left, right;  // -1 = unbounded
  int64_t sk, sq;
  int64_t split, shift_a, shift_b;  // rows < split sit at i + shift_a, the others at i + shift_b
  Mask(const sinkattn_problem& p, const Seq& s) {
    MaskBounds mb = mask_bounds(p);
    left = mb.left;
    right = mb.right;
    sk = s.sk;
    sq = s.sq;
    split = 0;
    shift_a = shift_b = s.sk - s.sq;  // bottom-right alignment
    if (p.zigzag_world > 0) {  // validated: sq = 2c, sk = 2Wc
      const int64_t c = s.sq / 2;
      split = c;
      shift_a = int64_t{p.zigzag_rank} * c;
      shift_b = (2 * int64_t{p.zigzag_world} - 2 - p.zigzag_rank) * c;
    }
  }
  int64_t pos(int64_t i) const { return i + (i < split ? shift_a : shift_b); }
  // Query rows whose position is below x (so the first row at or after x).
  int64_t rows_below(int64_t x) const {
    const int64_t a = std::clamp<int64_t>(x - shift_a, 0, split);
    return a + std::clamp<int64_t>(x - shift_b, split, sq) - split;
  }
  int64_t lo(int64_t i) const { return left < 0 ? 0 : std::max<int64_t>(0, pos(i) - left); }
  int64_t hi(int64_t i) const {
    return right < 0 ? sk - 1 : std::min<int64_t>(sk - 1, pos(i) + right);
  }
  // First and last query rows that see some key of [j0, j1); first > last when none does.
  int64_t first_row(int64_t j0) const { return right < 0 ? 0 : rows_below(j0 - right); }
  int64_t last_row(int64_t j1) const { return left < 0 ? sq - 1 : rows_below(j1 + left) - 1; }
  // Every row of [i0, i0+nq) sees every key of [j0, j0+nk).
  bool full(int64_t i0, int64_t nq, int64_t j0, int64_t nk) const {
    return lo(i0 + nq - 1) <= j0 && hi(i0) >= j0 + nk - 1;
  }
  // Sets s[r][c] = -inf where key j0+c is hidden from query i0+r (and in the padding columns
  // [nk, cols)). Rows past nq are padding and left alone.
  void apply(float* s, int ld, int64_t i0, int nq, int64_t j0, int nk, int cols) const {
    for (int r = 0; r < nq; ++r) {
      float* row = s + static_cast<int64_t>(r) * ld;
      int64_t a = std::clamp<int64_t>(lo(i0 + r) - j0, 0, nk);
      int64_t e = std::clamp<int64_t>(hi(i0 + r) - j0 + 1, a, nk);
      for (int64_t c = 0; c < a; ++c) row[c] = -kInf;
      for (int64_t c = e; c < cols; ++c) row[c] = -kInf;
    }
  }
};

// Per-thread scratch for tiles, reused across calls (64-byte aligned, grows on demand).
inline float* thread_scratch(size_t floats) {
  struct Free {
    void operator()(float* f) const { std::free(f); }
  };
  thread_local std::unique_ptr<float, Free> buf;
  thread_local size_t cap = 0;
  if (cap < floats) {
    size_t bytes = round_up(static_cast<int64_t>(floats * sizeof(float)), 64);
    cap = 0;
    buf.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!buf) throw Error(SINKATTN_ERROR_INTERNAL, "sinkattn cpu: out of host memory for tiles");
    cap = floats;
  }
  return buf.get();
}

// Carves consecutive 64-byte-aligned float arrays out of one scratch buffer.
struct Carver {
  float* base;
  size_t used = 0;
  float* take(size_t n) {
    float* p = base ? base + used : nullptr;  // base == nullptr: only measuring
    used += static_cast<size_t>(round_up(static_cast<int64_t>(n), 16));
    return p;
  }
};

// A tile set (a struct whose constructor takes its arrays from a Carver) laid out in this
// thread's scratch: measured once with a null base, then carved for real.
template <class Tiles, class... Args>
Tiles thread_tiles(const Args&... args) {
  Carver sizing{nullptr};
  Tiles{sizing, args...};
  Carver carve{thread_scratch(sizing.used)};
  return Tiles(carve, args...);
}

}  // namespace cpu
}  // namespace sinkattn
