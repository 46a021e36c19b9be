#include "attention_case.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>

namespace sinkattn_test {

Case Case::fixed(sinkattn_dtype t, int64_t b, int64_t sq, int64_t sk, int64_t hq, int64_t hkv,
                 int d) {
  Case c;
  c.dtype = t, c.batch = b, c.sq = sq, c.sk = sk, c.hq = hq, c.hkv = hkv, c.d = d;
  return c;
}

Case Case::varlen(sinkattn_dtype t, std::vector<std::pair<int, int>> docs, int64_t hq,
                  int64_t hkv, int d) {
  Case c;
  c.dtype = t, c.hq = hq, c.hkv = hkv, c.d = d;
  c.batch = static_cast<int64_t>(docs.size());
  for (auto [a, b] : docs) c.sq = std::max<int64_t>(c.sq, a), c.sk = std::max<int64_t>(c.sk, b);
  c.docs = std::move(docs);
  return c;
}

Case Case::with_causal() const { Case c = *this; c.causal = true; return c; }
Case Case::with_window(int64_t l, int64_t r) const { Case c = *this; c.left = l, c.right = r; return c; }
Case Case::without_sinks() const { Case c = *this; c.sinks = false; return c; }
Case Case::with_layout(Layout i, Layout o) const { Case c = *this; c.in = i, c.out = o; return c; }
Case Case::with_scale(float s) const { Case c = *this; c.scale = s; return c; }
Case Case::with_dtype(sinkattn_dtype t) const { Case c = *this; c.dtype = t; return c; }
Case Case::with_zigzag(int rank, int world) const {
  Case c = *this;
  c.zigzag_rank = rank, c.zigzag_world = world;
  return c;
}

Case Case::with_mixed_layouts() const { Case c = *this; c.mixed = true; return c; }

namespace {
// Mixed layouts: tensor i of a group takes its group's layout moved on by kShift[i] in the
// enum's order (q / out keep it; k, v and dout, and dq, dk and dv, differ from their neighbours).
constexpr int kShift[4] = {0, 1, 2, 1};
Layout rotated(Layout l, bool mixed, int i) {
  return mixed ? static_cast<Layout>((static_cast<int>(l) + kShift[i]) % 3) : l;
}
}  // namespace

Layout Case::in_layout(int i) const { return rotated(in, mixed, i); }
Layout Case::out_layout(int i) const { return rotated(out, mixed, i); }

float Case::softmax_scale() const {
  return scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(d));
}

std::string Case::name() const {
  std::ostringstream s;
  s << dtype_name(dtype) << '_';
  if (is_varlen() && docs.size() > 8) {  // counts, sums and maxima, not every length
    int64_t tq = 0, tk = 0, mq = 0, mk = 0;
    for (auto [a, b] : docs) tq += a, tk += b, mq = std::max<int64_t>(mq, a), mk = std::max<int64_t>(mk, b);
    s << "varlen" << docs.size() << "docs_" << tq << 'x' << tk << "_max" << mq << 'x' << mk;
  } else if (is_varlen()) {
    s << "varlen";
    for (auto [a, b] : docs) s << '_' << a << 'x' << b;
  } else {
    s << 'b' << batch << '_' << sq << 'x' << sk;
  }
  s << "_h" << hq << '_' << hkv << "_d" << d << (causal ? "_causal" : "");
  auto w = [](int64_t x) { return x < 0 ? std::string("inf") : std::to_string(x); };
  if (left >= 0 || right >= 0) s << "_win" << w(left) << '_' << w(right);
  s << (sinks ? "_sink" : "_nosink");
  if (scale != 0.0f) s << "_scale" << static_cast<int>(std::lround(scale * 1000));
  if (in != Layout::kContiguous || out != Layout::kContiguous)
    s << '_' << layout_name(in) << '_' << layout_name(out);
  if (mixed) s << "_mixed";
  if (zigzag_world > 0) s << "_zigzag" << zigzag_rank << "of" << zigzag_world;
  return s.str();
}

namespace {
uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t run_seed() {
  static const uint64_t seed = [] {
    if (const char* env = std::getenv("SINKATTN_TEST_SEED"))
      return static_cast<uint64_t>(std::strtoull(env, nullptr, 10));
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  return seed;
}
}  // namespace

uint64_t test_seed() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
  return splitmix(run_seed() ^ std::hash<std::string>()(name));
}

std::string replay_hint() {
  return "replay with SINKATTN_TEST_SEED=" + std::to_string(run_seed()) + " (test seed " +
         std::to_string(test_seed()) + ")";
}

Attention::Attention(const Case& cs, Device d, uint64_t seed) : c(cs), dev(d) {
  // Geometry: fixed-length batches are (B, S, H, D) tensors, varlen ones (1, T, H, D).
  if (c.is_varlen()) {
    cu_q_host.push_back(0), cu_k_host.push_back(0);
    for (auto [a, b] : c.docs) {
      seqs_.push_back({0, cu_q_host.back(), a, cu_k_host.back(), b, cu_q_host.back(),
                       cu_k_host.back(), cu_q_host.back(), 0});
      cu_q_host.push_back(cu_q_host.back() + a), cu_k_host.push_back(cu_k_host.back() + b);
    }
    rows_q_ = cu_q_host.back(), rows_k_ = cu_k_host.back();
    for (Seq& s : seqs_) s.lse_head_stride = rows_q_;
  } else {
    for (int64_t b = 0; b < c.batch; ++b)
      seqs_.push_back({b, 0, c.sq, 0, c.sk, b * c.sq, b * c.sk, b * c.hq * c.sq, c.sq});
    rows_q_ = c.batch * c.sq, rows_k_ = c.batch * c.sk;
  }
  int64_t tb = c.is_varlen() ? 1 : c.batch;
  int64_t tq = c.is_varlen() ? rows_q_ : c.sq, tk = c.is_varlen() ? rows_k_ : c.sk;
  q = Tensor(c.dtype, tb, tq, c.hq, c.d, c.in_layout(0), dev);
  k = Tensor(c.dtype, tb, tk, c.hkv, c.d, c.in_layout(1), dev);
  v = Tensor(c.dtype, tb, tk, c.hkv, c.d, c.in_layout(2), dev);
  dout = Tensor(c.dtype, tb, tq, c.hq, c.d, c.in_layout(3), dev);
  out = Tensor(c.dtype, tb, tq, c.hq, c.d, c.out_layout(0), dev);
  dq = Tensor(c.dtype, tb, tq, c.hq, c.d, c.out_layout(1), dev);
  dk = Tensor(c.dtype, tb, tk, c.hkv, c.d, c.out_layout(2), dev);
  dv = Tensor(c.dtype, tb, tk, c.hkv, c.d, c.out_layout(3), dev);
  lse = FloatArray(static_cast<size_t>(c.hq * rows_q_), dev);
  dsink = FloatArray(static_cast<size_t>(c.hq), dev);
  sinks = FloatArray(static_cast<size_t>(c.hq), dev);

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Tensor* t : {&q, &k, &v, &dout})
    for (int64_t b = 0; b < t->batch; ++b)
      for (int64_t r = 0; r < t->rows; ++r)
        for (int64_t h = 0; h < t->heads; ++h)
          for (int64_t x = 0; x < t->dim; ++x) t->set(b, r, h, x, normal(rng));
  // Sinks from "ignored" to "dominant" relative to the typical row's log-sum-exp.
  std::uniform_real_distribution<float> sink_logit(-2.0f, 6.0f);
  for (int64_t h = 0; h < c.hq; ++h) sinks.host()[h] = sink_logit(rng);

  if (c.is_varlen()) {
    cu_q_ = Blob(cu_q_host.size() * 4, dev), cu_k_ = Blob(cu_k_host.size() * 4, dev);
    std::memcpy(cu_q_.host(), cu_q_host.data(), cu_q_host.size() * 4);
    std::memcpy(cu_k_.host(), cu_k_host.data(), cu_k_host.size() * 4);
  }
  for (Blob* b : {&q.blob(), &k.blob(), &v.blob(), &dout.blob(), &sinks.blob(), &cu_q_, &cu_k_}) {
    b->upload();
    input_snapshots_.push_back(b->host_bytes());
  }
}

sinkattn_problem Attention::problem() {
  sinkattn_problem p{};
  p.device_type = dev == Device::kCuda ? SINKATTN_DEVICE_CUDA : SINKATTN_DEVICE_CPU;
  p.device_index = 0;
  p.dtype = c.dtype;
  p.head_dim = c.d;
  p.batch = c.batch, p.seqlen_q = c.sq, p.seqlen_k = c.sk, p.heads_q = c.hq, p.heads_kv = c.hkv;
  p.q = q.view(), p.k = k.view(), p.v = v.view();
  p.sinks = c.sinks ? sinks.data() : nullptr;
  if (c.is_varlen()) {
    p.cu_seqlens_q = static_cast<const int32_t*>(cu_q_.data());
    p.cu_seqlens_k = static_cast<const int32_t*>(cu_k_.data());
    p.total_q = rows_q_, p.total_k = rows_k_;
  }
  p.scale = c.softmax_scale();
  p.causal = c.causal;
  p.window_left = c.left, p.window_right = c.right;
  p.zigzag_rank = c.zigzag_rank, p.zigzag_world = c.zigzag_world;
  p.stream = nullptr;
  return p;
}

sinkattn_fwd_params Attention::fwd_params() {
  sinkattn_fwd_params p{};
  p.problem = problem();
  p.out = out.view();
  p.lse = lse.data();
  return p;
}

sinkattn_bwd_params Attention::bwd_params(bool deterministic) {
  sinkattn_bwd_params p{};
  p.problem = problem();
  p.out = out.view(), p.dout = dout.view(), p.lse = lse.data();
  p.dq = dq.view(), p.dk = dk.view(), p.dv = dv.view();
  p.dsink = c.sinks ? dsink.data() : nullptr;
  p.deterministic = deterministic;
  return p;
}

namespace {
// Bytes of poison after the workspace the library asked for (workspace_slack_intact).
constexpr size_t kWorkspaceSlack = 64 * 1024;

// Poisoned workspace of the size the library asks for and a poisoned slack after it; `bytes`
// stays 0 when it needs none.
void size_workspace(Blob& ws, size_t bytes, Device dev) {
  if (bytes && ws.size() < bytes + kWorkspaceSlack) ws = Blob(bytes + kWorkspaceSlack, dev);
  if (!ws.size()) return;
  std::memset(ws.host(), 0xff, ws.size());
  ws.upload();
}
}  // namespace

bool Attention::workspace_slack_intact() {
  if (ws_bytes_ == 0) return true;
  ws_.download();
  const uint8_t* b = ws_.host();
  for (size_t i = ws_bytes_; i < ws_.size(); ++i)
    if (b[i] != 0xff) return false;
  return true;
}

sinkattn_status Attention::forward(bool want_lse) {
  out.poison(), lse.poison();
  out.blob().upload(), lse.blob().upload();
  sinkattn_fwd_params p = fwd_params();
  if (!want_lse) p.lse = nullptr;
  size_t bytes = 0;
  sinkattn_status st = sinkattn_fwd_workspace_size(&p, &bytes);
  if (st != SINKATTN_OK) return st;
  size_workspace(ws_, bytes, dev);
  ws_bytes_ = bytes;
  p.workspace = bytes ? ws_.data() : nullptr, p.workspace_size = bytes;
  st = sinkattn_fwd(&p);
  if (dev == Device::kCuda) cuda_synchronize();
  out.blob().download(), lse.blob().download();
  fwd_out_snapshot_ = snapshot(out.blob()), fwd_lse_snapshot_ = snapshot(lse.blob());
  return st;
}

sinkattn_status Attention::backward(bool deterministic, bool want_dsink) {
  dq.poison(), dk.poison(), dv.poison(), dsink.poison();
  for (Blob* b : {&dq.blob(), &dk.blob(), &dv.blob(), &dsink.blob()}) b->upload();
  sinkattn_bwd_params p = bwd_params(deterministic);
  if (!want_dsink) p.dsink = nullptr;
  size_t bytes = 0;
  sinkattn_status st = sinkattn_bwd_workspace_size(&p, &bytes);
  if (st != SINKATTN_OK) return st;
  size_workspace(ws_, bytes, dev);
  ws_bytes_ = bytes;
  p.workspace = bytes ? ws_.data() : nullptr, p.workspace_size = bytes;
  st = sinkattn_bwd(&p);
  if (dev == Device::kCuda) cuda_synchronize();
  for (Blob* b : {&dq.blob(), &dk.blob(), &dv.blob(), &dsink.blob()}) b->download();
  return st;
}

std::vector<uint8_t> Attention::snapshot(Blob& b) {
  b.download();
  return b.host_bytes();
}

bool Attention::inputs_intact() {
  Blob* blobs[] = {&q.blob(), &k.blob(), &v.blob(), &dout.blob(), &sinks.blob(), &cu_q_, &cu_k_};
  for (size_t i = 0; i < input_snapshots_.size(); ++i)
    if (snapshot(*blobs[i]) != input_snapshots_[i]) return false;
  if (!fwd_out_snapshot_.empty() && snapshot(out.blob()) != fwd_out_snapshot_) return false;
  if (!fwd_lse_snapshot_.empty() && snapshot(lse.blob()) != fwd_lse_snapshot_) return false;
  return true;
}

bool Attention::output_gaps_intact() const {
  return out.gaps_intact() && dq.gaps_intact() && dk.gaps_intact() && dv.gaps_intact();
}

}  // namespace sinkattn_test
