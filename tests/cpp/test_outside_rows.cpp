// Rows outside every packed sequence (before cu_seqlens[0], from cu_seqlens[batch] on): the
// library writes them into NaN-poisoned outputs (out, dq, dk, dv 0; lse -inf), and the rows of
// the sequences are bit-identical to the same call without those rows. CPU; the CUDA guard that
// writes them is tested from Python (tests/python/test_cuda.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "buffers.h"
#include "sinkattn/sinkattn.h"

namespace sinkattn_test {
namespace {

constexpr int64_t kHq = 4, kHkv = 2, kD = 32;
const std::vector<int32_t> kLensQ = {5, 0, 9}, kLensK = {7, 3, 9};
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

struct Results {
  std::vector<float> out, lse, dq, dk, dv, dsink;
};

sinkattn_tensor view(std::vector<float>& t, int64_t heads) {
  return {t.data(), 0, heads * kD, kD};
}

// The sequences' rows from `inner` (q-like: rows x kHq x kD; k-like: rows x kHkv x kD) placed
// after `lead` rows and before `pad` rows of other values, which no sequence may read.
std::vector<float> placed(const std::vector<float>& inner, int64_t heads, int64_t lead,
                          int64_t pad) {
  std::vector<float> t((lead + pad) * heads * kD, 7.5f);
  t.insert(t.begin() + lead * heads * kD, inner.begin(), inner.end());
  return t;
}

std::vector<int32_t> offsets(const std::vector<int32_t>& lens, int32_t lead) {
  std::vector<int32_t> cu = {lead};
  for (int32_t n : lens) cu.push_back(cu.back() + n);
  return cu;
}

Results run(const std::vector<float>& q_in, const std::vector<float>& k_in,
            const std::vector<float>& v_in, const std::vector<float>& dout_in,
            std::vector<float>& sinks, int64_t lead_q, int64_t pad_q, int64_t lead_k,
            int64_t pad_k) {
  std::vector<float> q = placed(q_in, kHq, lead_q, pad_q), dout = placed(dout_in, kHq, lead_q, pad_q);
  std::vector<float> k = placed(k_in, kHkv, lead_k, pad_k), v = placed(v_in, kHkv, lead_k, pad_k);
  std::vector<int32_t> cu_q = offsets(kLensQ, (int32_t)lead_q), cu_k = offsets(kLensK, (int32_t)lead_k);
  const int64_t tq = (int64_t)q.size() / (kHq * kD), tk = (int64_t)k.size() / (kHkv * kD);

  sinkattn_problem p{};
  p.device_type = SINKATTN_DEVICE_CPU;
  p.dtype = SINKATTN_FLOAT32;
  p.head_dim = kD;
  p.batch = (int64_t)kLensQ.size();
  p.seqlen_q = 9, p.seqlen_k = 9;
  p.heads_q = kHq, p.heads_kv = kHkv;
  p.q = view(q, kHq), p.k = view(k, kHkv), p.v = view(v, kHkv);
  p.sinks = sinks.data();
  p.cu_seqlens_q = cu_q.data(), p.cu_seqlens_k = cu_k.data();
  p.total_q = tq, p.total_k = tk;
  p.scale = 1.0f / std::sqrt((float)kD);
  p.causal = 1;
  p.window_left = -1, p.window_right = -1;

  Results r;
  r.out.assign(q.size(), kNan), r.lse.assign(kHq * tq, kNan);
  sinkattn_fwd_params f{};
  f.problem = p;
  f.out = view(r.out, kHq);
  f.lse = r.lse.data();
  EXPECT_EQ(sinkattn_fwd_workspace_size(&f, &f.workspace_size), SINKATTN_OK);
  Blob fws(f.workspace_size, Device::kCpu);  // 256-byte aligned, as the library asks 16
  f.workspace = f.workspace_size ? fws.data() : nullptr;
  EXPECT_EQ(sinkattn_fwd(&f), SINKATTN_OK) << sinkattn_last_error();

  r.dq.assign(q.size(), kNan), r.dk.assign(k.size(), kNan), r.dv.assign(v.size(), kNan);
  r.dsink.assign(kHq, kNan);
  sinkattn_bwd_params b{};
  b.problem = p;
  b.out = view(r.out, kHq), b.dout = view(dout, kHq), b.lse = r.lse.data();
  b.dq = view(r.dq, kHq), b.dk = view(r.dk, kHkv), b.dv = view(r.dv, kHkv);
  b.dsink = r.dsink.data();
  EXPECT_EQ(sinkattn_bwd_workspace_size(&b, &b.workspace_size), SINKATTN_OK);
  Blob bws(b.workspace_size, Device::kCpu);
  b.workspace = b.workspace_size ? bws.data() : nullptr;
  EXPECT_EQ(sinkattn_bwd(&b), SINKATTN_OK) << sinkattn_last_error();
  return r;
}

// Row r, head h, element x of a (rows, heads, kD) tensor; lse is (kHq, rows).
float at(const std::vector<float>& t, int64_t heads, int64_t r, int64_t h, int64_t x) {
  return t[(r * heads + h) * kD + x];
}

TEST(OutsideRows, WrittenAndTheSequencesUnchanged) {
  int64_t nq = 0, nk = 0;
  for (int32_t n : kLensQ) nq += n;
  for (int32_t n : kLensK) nk += n;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  auto draw = [&](int64_t n) {
    std::vector<float> t(n);
    for (float& x : t) x = normal(rng);
    return t;
  };
  const std::vector<float> q = draw(nq * kHq * kD), k = draw(nk * kHkv * kD),
                           v = draw(nk * kHkv * kD), dout = draw(nq * kHq * kD);
  std::vector<float> sinks = draw(kHq);

  const int64_t lead_q = 3, pad_q = 2, lead_k = 2, pad_k = 4;
  const Results plain = run(q, k, v, dout, sinks, 0, 0, 0, 0);
  const Results outside = run(q, k, v, dout, sinks, lead_q, pad_q, lead_k, pad_k);
  const int64_t tq = lead_q + nq + pad_q, tk = lead_k + nk + pad_k;

  for (int64_t r = 0; r < tq; ++r) {
    const int64_t inner = r - lead_q;
    const bool in = inner >= 0 && inner < nq;
    for (int64_t h = 0; h < kHq; ++h) {
      const float lse = outside.lse[h * tq + r];
      if (in)
        EXPECT_EQ(lse, plain.lse[h * nq + inner]) << "lse, row " << r << " head " << h;
      else
        EXPECT_EQ(lse, -std::numeric_limits<float>::infinity()) << "lse, row " << r;
      for (int64_t x = 0; x < kD; ++x) {
        const float o = at(outside.out, kHq, r, h, x), g = at(outside.dq, kHq, r, h, x);
        EXPECT_EQ(o, in ? at(plain.out, kHq, inner, h, x) : 0.f) << "out, row " << r;
        EXPECT_EQ(g, in ? at(plain.dq, kHq, inner, h, x) : 0.f) << "dq, row " << r;
      }
    }
  }
  for (int64_t r = 0; r < tk; ++r) {
    const int64_t inner = r - lead_k;
    const bool in = inner >= 0 && inner < nk;
    for (int64_t h = 0; h < kHkv; ++h)
      for (int64_t x = 0; x < kD; ++x) {
        EXPECT_EQ(at(outside.dk, kHkv, r, h, x), in ? at(plain.dk, kHkv, inner, h, x) : 0.f)
            << "dk, row " << r;
        EXPECT_EQ(at(outside.dv, kHkv, r, h, x), in ? at(plain.dv, kHkv, inner, h, x) : 0.f)
            << "dv, row " << r;
      }
  }
  for (int64_t h = 0; h < kHq; ++h) EXPECT_EQ(outside.dsink[h], plain.dsink[h]) << "dsink " << h;
}

}  // namespace
}  // namespace sinkattn_test
