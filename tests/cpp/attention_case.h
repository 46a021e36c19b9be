// One attention problem for the tests: its description (Case), random inputs, poisoned outputs,
// the library calls on the CPU or a GPU, and the geometry shared with the references.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "buffers.h"
#include "sinkattn/sinkattn.h"

namespace sinkattn_test {

struct Case {
  sinkattn_dtype dtype = SINKATTN_FLOAT32;
  int64_t batch = 1, sq = 0, sk = 0;       // fixed-length shape (sq, sk: max lengths for varlen)
  std::vector<std::pair<int, int>> docs;  // varlen: (Sq, Sk) per sequence; empty = fixed-length
  int64_t hq = 1, hkv = 1;
  int d = 64;
  bool causal = false;
  int64_t left = -1, right = -1;  // window; -1 = unbounded
  bool sinks = true;
  float scale = 0.0f;  // 0 = 1/sqrt(d)
  Layout in = Layout::kContiguous, out = Layout::kContiguous;  // q,k,v,dout / out,dq,dk,dv
  // Neighbouring tensors of a group in different layouts (in_layout, out_layout), so that a
  // kernel reading one tensor with another's strides (v with k's, dout with q's, dv with dk's)
  // fails; otherwise the tensors of a group share their strides and such a mix-up passes.
  bool mixed = false;
  int zigzag_rank = 0, zigzag_world = 0;  // fused zigzag CP (problem.zigzag_*); world 0 = off

  static Case fixed(sinkattn_dtype t, int64_t b, int64_t sq, int64_t sk, int64_t hq, int64_t hkv,
                    int d);
  static Case varlen(sinkattn_dtype t, std::vector<std::pair<int, int>> docs, int64_t hq,
                     int64_t hkv, int d);
  Case with_causal() const;
  Case with_window(int64_t l, int64_t r) const;
  Case without_sinks() const;
  Case with_layout(Layout i, Layout o) const;
  Case with_scale(float s) const;
  Case with_dtype(sinkattn_dtype t) const;
  Case with_zigzag(int rank, int world) const;
  Case with_mixed_layouts() const;
  // The layout of input i (q, k, v, dout) or output i (out, dq, dk, dv).
  Layout in_layout(int i) const;
  Layout out_layout(int i) const;

  bool is_varlen() const { return !docs.empty(); }
  float softmax_scale() const;
  std::string name() const;  // unique, [A-Za-z0-9_]
};

// gtest prints a parameter through this instead of its bytes.
inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name(); }

// Seed for this test: a per-run seed (SINKATTN_TEST_SEED to replay) mixed with the test's name.
uint64_t test_seed();
// Text to attach to failures so the run can be replayed.
std::string replay_hint();

// A sequence of the batch: where its rows sit in the tensors, dense results and lse.
struct Seq {
  int64_t tb;        // batch index into the tensors (0 for varlen)
  int64_t q0, nq;    // first row and count in q (tensor rows)
  int64_t k0, nk;    // first row and count in k, v
  int64_t dq0, dk0;  // first row in the dense (rows, heads, dim) results
  int64_t lse0, lse_head_stride;
};

class Attention {
 public:
  // Draws q, k, v, dout, sinks from `seed` (rounded to the dtype) and places them on `dev`.
  Attention(const Case& c, Device dev, uint64_t seed);

  // Poison the outputs, call the library, wait, bring the outputs back to the host.
  // want_lse / want_dsink = false pass NULL for that output.
  sinkattn_status forward(bool want_lse = true);
  sinkattn_status backward(bool deterministic = false, bool want_dsink = true);

  sinkattn_fwd_params fwd_params();
  sinkattn_bwd_params bwd_params(bool deterministic);

  // True when no library call changed an input (q, k, v, sinks, cu_seqlens, and out/lse/dout
  // after backward) or wrote into the gaps of a strided output.
  bool inputs_intact();
  bool output_gaps_intact() const;
  // True when the last call wrote nothing past the workspace it asked for (64 KB of poison
  // follow it).
  bool workspace_slack_intact();

  const std::vector<Seq>& seqs() const { return seqs_; }
  int64_t rows_q() const { return rows_q_; }  // dense query rows: B*Sq or Tq
  int64_t rows_k() const { return rows_k_; }

  Case c;
  Device dev;
  Tensor q, k, v, out, dout, dq, dk, dv;
  FloatArray sinks, lse, dsink;
  std::vector<int32_t> cu_q_host, cu_k_host;

 private:
  sinkattn_problem problem();
  std::vector<uint8_t> snapshot(Blob& b);

  std::vector<Seq> seqs_;
  int64_t rows_q_ = 0, rows_k_ = 0;
  Blob cu_q_, cu_k_, ws_;
  size_t ws_bytes_ = 0;  // the workspace the last call asked for
  std::vector<std::vector<uint8_t>> input_snapshots_;
  std::vector<uint8_t> fwd_out_snapshot_, fwd_lse_snapshot_;
};

}  // namespace sinkattn_test
