// CPU backend (through the public C ABI) against a plain fp32 attention that materialises the
// Sq x Sk score matrix: matmul, masked softmax with the sink, matmul, and its plain backward.
// Shape: B 1, S 2048, Hq 8, Hkv 2, D 64, causal, with sinks, window none or 128 (left = 127).
// FLOP counters count visible (unmasked) pairs only: 4 * Hq * pairs * D forward, 2.5x that
// backward, for every implementation, so the rates compare useful work.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sinkattn/sinkattn.h"

namespace {

constexpr int64_t kSeq = 2048, kHq = 8, kHkv = 2, kDim = 64;

struct Shape {
  int64_t window_left;  // -1: plain causal
  bool visible(int64_t i, int64_t j) const {
    return j <= i && (window_left < 0 || j >= i - window_left);
  }
  double pairs() const {
    double n = 0;
    for (int64_t i = 0; i < kSeq; ++i) n += window_left < 0 ? i + 1 : std::min(i, window_left) + 1;
    return n;
  }
};

// Token-major (S, H, D) fp32 inputs shared by every implementation.
struct Inputs {
  std::vector<float> q, k, v, dout, sinks;
  Inputs() : q(kSeq * kHq * kDim), k(kSeq * kHkv * kDim), v(k.size()), dout(q.size()), sinks(kHq) {
    std::mt19937 rng(0);
    std::normal_distribution<float> n(0.f, 1.f);
    for (auto* x : {&q, &k, &v, &dout, &sinks})
      for (float& f : *x) f = n(rng);
  }
};
const Inputs& inputs() {
  static Inputs in;
  return in;
}

// ---- the plain implementation ---------------------------------------------------------------

// One kv head and its query-head group per thread (Hkv = 2 threads): each query head forms the
// full S x S scores, masks, softmaxes with the sink, and multiplies by V, with i-k-j loops whose
// inner loop runs over contiguous memory and vectorises. The hot functions are cloned for the
// same ISA levels the library dispatches to (AVX-512 / AVX2+FMA / baseline), so the comparison
// is of algorithms, not of instruction sets.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PLAIN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PLAIN_CLONES
#endif
struct Plain {
  const Inputs& in;
  const Shape shape;
  const float scale = 1.f / std::sqrt(float(kDim));
  std::vector<float> out, dq, dk, dv, dsink, lse;  // lse: (Hq, S)
  std::vector<std::vector<float>> p;  // probabilities per query head, kept for the backward

  Plain(const Inputs& i, Shape s)
      : in(i),
        shape(s),
        out(i.q.size()),
        dq(i.q.size()),
        dk(i.k.size()),
        dv(i.k.size()),
        dsink(kHq),
        lse(kHq * kSeq),
        p(kHq, std::vector<float>(kSeq * kSeq)) {}

  // Row-major (S, D) copy of head h of a token-major tensor.
  static std::vector<float> head(const std::vector<float>& x, int64_t heads, int64_t h) {
    std::vector<float> r(kSeq * kDim);
    for (int64_t i = 0; i < kSeq; ++i)
      std::memcpy(&r[i * kDim], &x[(i * heads + h) * kDim], kDim * sizeof(float));
    return r;
  }
  static std::vector<float> transposed(const std::vector<float>& x) {  // (S, D) -> (D, S)
    std::vector<float> t(kSeq * kDim);
    for (int64_t i = 0; i < kSeq; ++i)
      for (int64_t d = 0; d < kDim; ++d) t[d * kSeq + i] = x[i * kDim + d];
    return t;
  }

  PLAIN_CLONES void forward_group(int64_t hk) {
    const std::vector<float> K = head(in.k, kHkv, hk), V = head(in.v, kHkv, hk), Kt = transposed(K);
    for (int64_t h = hk * (kHq / kHkv); h < (hk + 1) * (kHq / kHkv); ++h) {
      const std::vector<float> Q = head(in.q, kHq, h);
      float* S = p[h].data();
      for (int64_t i = 0; i < kSeq; ++i) {
        float* s = S + i * kSeq;
        std::fill(s, s + kSeq, 0.f);
        for (int64_t d = 0; d < kDim; ++d) {
          const float a = scale * Q[i * kDim + d];
          const float* kt = &Kt[d * kSeq];
          for (int64_t j = 0; j < kSeq; ++j) s[j] += a * kt[j];
        }
        float m = in.sinks[h];
        for (int64_t j = 0; j < kSeq; ++j) {
          if (!shape.visible(i, j)) s[j] = -INFINITY;
          m = std::max(m, s[j]);
        }
        float sum = std::exp(in.sinks[h] - m);
        for (int64_t j = 0; j < kSeq; ++j) sum += s[j] = std::exp(s[j] - m);
        lse[h * kSeq + i] = m + std::log(sum);
        float* o = &out[(i * kHq + h) * kDim];
        std::fill(o, o + kDim, 0.f);
        for (int64_t j = 0; j < kSeq; ++j) {
          s[j] /= sum;
          for (int64_t d = 0; d < kDim; ++d) o[d] += s[j] * V[j * kDim + d];
        }
      }
    }
  }

  PLAIN_CLONES void backward_group(int64_t hk) {
    const std::vector<float> K = head(in.k, kHkv, hk), V = head(in.v, kHkv, hk), Vt = transposed(V);
    std::vector<float> dK(kSeq * kDim, 0.f), dV(kSeq * kDim, 0.f), ds(kSeq);
    for (int64_t h = hk * (kHq / kHkv); h < (hk + 1) * (kHq / kHkv); ++h) {
      const std::vector<float> Q = head(in.q, kHq, h), dO = head(in.dout, kHq, h);
      const float* P = p[h].data();
      double dsink_h = 0;
      for (int64_t i = 0; i < kSeq; ++i) {
        const float* pr = P + i * kSeq;
        const float* go = &dO[i * kDim];
        float delta = 0.f;
        for (int64_t d = 0; d < kDim; ++d) delta += go[d] * out[(i * kHq + h) * kDim + d];
        std::fill(ds.begin(), ds.end(), 0.f);
        for (int64_t d = 0; d < kDim; ++d) {  // dP = dO V^T
          const float a = go[d];
          const float* vt = &Vt[d * kSeq];
          for (int64_t j = 0; j < kSeq; ++j) ds[j] += a * vt[j];
        }
        for (int64_t j = 0; j < kSeq; ++j) ds[j] = pr[j] * (ds[j] - delta);
        dsink_h -= std::exp(in.sinks[h] - lse[h * kSeq + i]) * delta;
        float* gq = &dq[(i * kHq + h) * kDim];
        std::fill(gq, gq + kDim, 0.f);
        for (int64_t j = 0; j < kSeq; ++j) {
          const float g = ds[j], pij = pr[j];
          for (int64_t d = 0; d < kDim; ++d) {
            gq[d] += scale * g * K[j * kDim + d];
            dK[j * kDim + d] += scale * g * Q[i * kDim + d];
            dV[j * kDim + d] += pij * go[d];
          }
        }
      }
      dsink[h] = static_cast<float>(dsink_h);
    }
    for (int64_t j = 0; j < kSeq; ++j) {
      std::memcpy(&dk[(j * kHkv + hk) * kDim], &dK[j * kDim], kDim * sizeof(float));
      std::memcpy(&dv[(j * kHkv + hk) * kDim], &dV[j * kDim], kDim * sizeof(float));
    }
  }

  template <class F>
  static void per_group(F f) {
    std::vector<std::thread> t;
    for (int64_t hk = 0; hk < kHkv; ++hk) t.emplace_back(f, hk);
    for (auto& x : t) x.join();
  }
  void forward() {
    per_group([this](int64_t hk) { forward_group(hk); });
  }
  void backward() {
    per_group([this](int64_t hk) { backward_group(hk); });
  }
};

// ---- sinkattn through the C ABI -------------------------------------------------------------

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

struct Ours {
  int32_t dtype;
  std::vector<unsigned char> q, k, v, dout, out, dq, dk, dv, fws, bws;
  std::vector<float> lse, dsink;
  sinkattn_fwd_params fp{};
  sinkattn_bwd_params bp{};

  std::vector<unsigned char> convert(const std::vector<float>& x) const {
    std::vector<unsigned char> r(x.size() * (dtype == SINKATTN_FLOAT32 ? 4 : 2));
    if (dtype == SINKATTN_FLOAT32)
      std::memcpy(r.data(), x.data(), r.size());
    else
      for (size_t i = 0; i < x.size(); ++i)
        reinterpret_cast<uint16_t*>(r.data())[i] = to_bf16(x[i]);
    return r;
  }
  static sinkattn_tensor view(std::vector<unsigned char>& x, int64_t heads) {
    return {x.data(), kSeq * heads * kDim, heads * kDim, kDim};
  }
  static void check(sinkattn_status s) {
    if (s != SINKATTN_OK) throw std::runtime_error(sinkattn_last_error());
  }

  Ours(const Inputs& in, Shape shape, int32_t dt) : dtype(dt) {
    q = convert(in.q), k = convert(in.k), v = convert(in.v), dout = convert(in.dout);
    out = dq = q, dk = dv = k;
    lse.resize(kHq * kSeq), dsink.resize(kHq);
    sinkattn_problem& p = fp.problem;
    p.device_type = SINKATTN_DEVICE_CPU, p.dtype = dtype, p.head_dim = kDim, p.batch = 1;
    p.seqlen_q = p.seqlen_k = kSeq, p.heads_q = kHq, p.heads_kv = kHkv;
    p.q = view(q, kHq), p.k = view(k, kHkv), p.v = view(v, kHkv), p.sinks = in.sinks.data();
    p.scale = 1.f / std::sqrt(float(kDim)), p.causal = 1;
    p.window_left = shape.window_left, p.window_right = 0;
    fp.out = view(out, kHq), fp.lse = lse.data();
    bp.problem = p, bp.out = fp.out, bp.dout = view(dout, kHq), bp.lse = lse.data();
    bp.dq = view(dq, kHq), bp.dk = view(dk, kHkv), bp.dv = view(dv, kHkv), bp.dsink = dsink.data();
    bp.deterministic = 1;
    size_t bytes = 0;
    check(sinkattn_fwd_workspace_size(&fp, &bytes));
    fws.resize(bytes + 256), fp.workspace = bytes ? aligned(fws) : nullptr,
                             fp.workspace_size = bytes;
    check(sinkattn_bwd_workspace_size(&bp, &bytes));
    bws.resize(bytes + 256), bp.workspace = bytes ? aligned(bws) : nullptr,
                             bp.workspace_size = bytes;
  }
  static void* aligned(std::vector<unsigned char>& x) {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(x.data()) + 255) & ~uintptr_t(255));
  }
  void forward() { check(sinkattn_fwd(&fp)); }
  void backward() { check(sinkattn_bwd(&bp)); }
};

// ---- benchmarks -----------------------------------------------------------------------------

template <class Impl, class... Extra>
void run(benchmark::State& state, Shape shape, bool backward, Extra... extra) {
  Impl impl(inputs(), shape, extra...);
  for (auto _ : state) {
    impl.forward();
    if (backward) impl.backward();
    benchmark::ClobberMemory();
  }
  const double fwd_flops = 4.0 * kHq * shape.pairs() * kDim;
  state.counters["FLOP/s"] = benchmark::Counter(fwd_flops * (backward ? 3.5 : 1.0),
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  for (int64_t window : {int64_t(-1), int64_t(127)}) {
    const Shape shape{window};
    const std::string mask = window < 0 ? "causal" : "causal_w128";
    for (bool bwd : {false, true}) {
      const std::string pass = bwd ? "fwd_bwd" : "fwd";
      auto reg = [&](const std::string& name, auto fn) {
        benchmark::RegisterBenchmark((name + "/" + pass + "/" + mask).c_str(), fn)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MeasureProcessCPUTime()  // the CPU column sums every thread of the process
            ->MinWarmUpTime(0.2)
            // On a shared machine other load only slows runs down: best-of-N is the cleaner
            // figure (min of times, max of rates), the median is kept beside it.
            ->ComputeStatistics(
                "min",
                [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
            ->ComputeStatistics("max", [](const std::vector<double>& v) {
              return *std::max_element(v.begin(), v.end());
            });
      };
      reg("sinkattn_fp32",
          [=](benchmark::State& s) { run<Ours>(s, shape, bwd, SINKATTN_FLOAT32); });
      reg("sinkattn_bf16",
          [=](benchmark::State& s) { run<Ours>(s, shape, bwd, SINKATTN_BFLOAT16); });
      reg("plain_fp32", [=](benchmark::State& s) { run<Plain>(s, shape, bwd); });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
