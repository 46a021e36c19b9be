// The C++ API on a GPT-OSS-shaped attention: B 1, S 4096, Hq 64, Hkv 8, D 64, bf16, learned
// sinks, causal, with a 128-token sliding window and without one. Prints the time per forward and
// backward call and the max error against the fp64 reference on a random sample of query rows
// (out, lse, dq: each depends on its own row only, so a sample is exact where the whole reference
// would take hours). Run with --help for the flags.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "half.h"       // tests/cpp: float <-> bf16 / fp16
#include "reference.h"  // tests/cpp: the plain fp64 reference
#include "sinkattn/sinkattn.hpp"

#ifdef SINKATTN_EXAMPLE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

using sinkattn_test::dtype_size;

struct Options {
  int64_t seqlen = 4096, heads_q = 64, heads_kv = 8, head_dim = 64;
  std::vector<int64_t> windows = {128, 0};  // keys per query including itself; 0 = full causal
  sinkattn_dtype dtype = SINKATTN_BFLOAT16;
  std::string device;  // "cpu" or "cuda"; empty: cuda when available
  int iters = 3, rows = 64;
  uint64_t seed = 0;
};

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "cpp_example: %s\n", why);
  std::fprintf(stderr,
               "usage: cpp_example [--seqlen N] [--heads-q N] [--heads-kv N] [--head-dim D]\n"
               "                   [--windows W1,W2,...] (0 = full causal) [--dtype bf16|fp16|fp32]\n"
               "                   [--device cpu|cuda] [--iters N] [--rows N] [--seed N]\n");
  std::exit(why ? 2 : 0);
}

Options parse(int argc, char** argv) {
  Options o;
  o.seed = std::random_device()();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(nullptr);
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    std::string v = argv[++i];
    if (a == "--seqlen") o.seqlen = std::stoll(v);
    else if (a == "--heads-q") o.heads_q = std::stoll(v);
    else if (a == "--heads-kv") o.heads_kv = std::stoll(v);
    else if (a == "--head-dim") o.head_dim = std::stoll(v);
    else if (a == "--iters") o.iters = std::max(1, std::stoi(v));
    else if (a == "--rows") o.rows = std::max(1, std::stoi(v));
    else if (a == "--seed") o.seed = std::stoull(v);
    else if (a == "--device") o.device = v;
    else if (a == "--dtype") {
      if (v == "bf16") o.dtype = SINKATTN_BFLOAT16;
      else if (v == "fp16") o.dtype = SINKATTN_FLOAT16;
      else if (v == "fp32") o.dtype = SINKATTN_FLOAT32;
      else usage("--dtype is bf16, fp16 or fp32");
    } else if (a == "--windows") {
      o.windows.clear();
      for (size_t p = 0; p < v.size();) {
        size_t q = v.find(',', p);
        o.windows.push_back(std::stoll(v.substr(p, q - p)));
        p = q == std::string::npos ? v.size() : q + 1;
      }
    } else {
      usage(("unknown flag " + a).c_str());
    }
  }
  if (o.device.empty()) {
    o.device = "cpu";
#ifdef SINKATTN_EXAMPLE_CUDA
    int n = 0;
    if (sinkattn_has_cuda() && cudaGetDeviceCount(&n) == cudaSuccess && n > 0) o.device = "cuda";
#endif
  }
  if (o.device != "cpu" && o.device != "cuda") usage("--device is cpu or cuda");
  return o;
}

// Host bytes plus, on the GPU, a device copy; data() is what the library sees.
class Buffer {
 public:
  Buffer(size_t bytes, bool cuda) : host_(bytes), cuda_(cuda) {
#ifdef SINKATTN_EXAMPLE_CUDA
    if (cuda_ && cudaMalloc(&dev_, std::max<size_t>(bytes, 256)) != cudaSuccess) {
      std::fprintf(stderr, "cpp_example: cudaMalloc of %zu bytes failed\n", bytes);
      std::exit(1);
    }
#endif
  }
  ~Buffer() {
#ifdef SINKATTN_EXAMPLE_CUDA
    if (dev_) cudaFree(dev_);
#endif
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  uint8_t* host() { return host_.data(); }
  void* data() { return cuda_ ? dev_ : static_cast<void*>(host_.data()); }
  void upload() {
#ifdef SINKATTN_EXAMPLE_CUDA
    if (cuda_) cudaMemcpy(dev_, host_.data(), host_.size(), cudaMemcpyHostToDevice);
#endif
  }
  void download() {
#ifdef SINKATTN_EXAMPLE_CUDA
    if (cuda_) cudaMemcpy(host_.data(), dev_, host_.size(), cudaMemcpyDeviceToHost);
#endif
  }

 private:
  std::vector<uint8_t> host_;
  void* dev_ = nullptr;
  bool cuda_;
};

float load(const Buffer& b, sinkattn_dtype t, size_t i) {
  const uint8_t* p = const_cast<Buffer&>(b).host() + i * dtype_size(t);
  if (t == SINKATTN_FLOAT32) {
    float x;
    std::memcpy(&x, p, 4);
    return x;
  }
  uint16_t x;
  std::memcpy(&x, p, 2);
  return t == SINKATTN_BFLOAT16 ? sinkattn_test::bf16_to_float(x) : sinkattn_test::half_to_float(x);
}

void store(Buffer& b, sinkattn_dtype t, size_t i, float x) {
  uint8_t* p = b.host() + i * dtype_size(t);
  if (t == SINKATTN_FLOAT32) return std::memcpy(p, &x, 4), void();
  uint16_t y = t == SINKATTN_BFLOAT16 ? sinkattn_test::float_to_bf16(x) : sinkattn_test::float_to_half(x);
  std::memcpy(p, &y, 2);
}

void synchronize(bool cuda) {
#ifdef SINKATTN_EXAMPLE_CUDA
  if (cuda) cudaDeviceSynchronize();
#endif
  (void)cuda;
}

// Median wall time of `iters` calls after one warm-up, in milliseconds.
template <class F>
double time_ms(int iters, bool cuda, F call) {
  call();
  synchronize(cuda);
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    call();
    synchronize(cuda);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Errors {
  double out = 0, lse = 0, dq = 0, out_scale = 0, dq_scale = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const bool cuda = o.device == "cuda";
  const int64_t S = o.seqlen, HQ = o.heads_q, HKV = o.heads_kv, D = o.head_dim;
  const sinkattn_dtype t = o.dtype;
  std::printf("sinkattn %d cpp_example: B 1, S %lld, Hq %lld, Hkv %lld, D %lld, %s, sinks, causal, "
              "device %s, seed %llu\n",
              sinkattn_version(), (long long)S, (long long)HQ, (long long)HKV, (long long)D,
              sinkattn_test::dtype_name(t), o.device.c_str(), (unsigned long long)o.seed);

  const size_t nq = S * HQ * D, nk = S * HKV * D, es = dtype_size(t);
  Buffer q(nq * es, cuda), k(nk * es, cuda), v(nk * es, cuda), dout(nq * es, cuda);
  Buffer out(nq * es, cuda), dq(nq * es, cuda), dk(nk * es, cuda), dv(nk * es, cuda);
  Buffer sinks(HQ * 4, cuda), lse(HQ * S * 4, cuda), dsink(HQ * 4, cuda);
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < nq; ++i) store(q, t, i, normal(rng)), store(dout, t, i, normal(rng));
  for (size_t i = 0; i < nk; ++i) store(k, t, i, normal(rng)), store(v, t, i, normal(rng));
  std::uniform_real_distribution<float> sink_logit(-2.0f, 6.0f);
  for (int64_t h = 0; h < HQ; ++h) reinterpret_cast<float*>(sinks.host())[h] = sink_logit(rng);
  for (Buffer* b : {&q, &k, &v, &dout, &sinks}) b->upload();

  bool ok = true;
  for (int64_t window : o.windows) {
    sinkattn_problem p = sinkattn::make_problem(t, 1, S, S, HQ, HKV, static_cast<int32_t>(D),
                                                q.data(), k.data(), v.data());
    p.device_type = cuda ? SINKATTN_DEVICE_CUDA : SINKATTN_DEVICE_CPU;
    p.sinks = static_cast<const float*>(sinks.data());
    p.window_left = window > 0 ? window - 1 : -1;  // W keys including the query itself

    sinkattn_fwd_params f{};
    f.problem = p;
    f.out = sinkattn::contiguous(out.data(), S, HQ, D);
    f.lse = static_cast<float*>(lse.data());
    sinkattn_bwd_params b{};
    b.problem = p;
    b.out = f.out;
    b.dout = sinkattn::contiguous(dout.data(), S, HQ, D);
    b.lse = f.lse;
    b.dq = sinkattn::contiguous(dq.data(), S, HQ, D);
    b.dk = sinkattn::contiguous(dk.data(), S, HKV, D);
    b.dv = sinkattn::contiguous(dv.data(), S, HKV, D);
    b.dsink = static_cast<float*>(dsink.data());
    double fwd_ms = 0, bwd_ms = 0;
    try {
      Buffer ws(std::max(sinkattn::workspace_size(f), sinkattn::workspace_size(b)) + 256, cuda);
      void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(ws.data()) + 255) / 256 * 256);
      f.workspace = b.workspace = aligned;
      f.workspace_size = sinkattn::workspace_size(f);
      b.workspace_size = sinkattn::workspace_size(b);
      fwd_ms = time_ms(o.iters, cuda, [&] { sinkattn::forward(f); });
      bwd_ms = time_ms(o.iters, cuda, [&] { sinkattn::backward(b); });
    } catch (const sinkattn::Exception& e) {
      std::printf("window %lld: refused: %s\n", (long long)window, e.what());
      ok = false;
      continue;
    }
    for (Buffer* x : {&out, &lse, &dq}) x->download();

    // Visible (query, key) pairs per head, for the FLOP rate: 4 D flops each forward, 10 D backward.
    double pairs = 0;
    for (int64_t i = 0; i < S; ++i) pairs += window > 0 ? std::min<int64_t>(i + 1, window) : i + 1;
    const double fwd_flops = 4.0 * D * pairs * HQ;

    // fp64 reference of sampled (row, head) pairs: query i sees keys [i - left, i], so a head of
    // one query over the first i + 1 keys (bottom-right aligned) reproduces it exactly.
    Errors e;
    std::uniform_int_distribution<int64_t> pick_row(0, S - 1), pick_head(0, HQ - 1);
    for (int r = 0; r < o.rows; ++r) {
      const int64_t i = pick_row(rng), h = pick_head(rng), hk = h / (HQ / HKV);
      sinkattn_ref::Head hd;
      hd.sq = 1, hd.sk = i + 1, hd.d = D, hd.scale = p.scale, hd.causal = true;
      hd.left = p.window_left, hd.has_sink = true;
      hd.sink = reinterpret_cast<const float*>(sinks.host())[h];
      std::vector<double> qi(D), doi(D), kk((i + 1) * D), vv((i + 1) * D);
      for (int64_t c = 0; c < D; ++c)
        qi[c] = load(q, t, (i * HQ + h) * D + c), doi[c] = load(dout, t, (i * HQ + h) * D + c);
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t c = 0; c < D; ++c)
          kk[j * D + c] = load(k, t, (j * HKV + hk) * D + c),
                   vv[j * D + c] = load(v, t, (j * HKV + hk) * D + c);
      auto fr = sinkattn_ref::forward(hd, qi, kk, vv);
      auto br = sinkattn_ref::backward(hd, qi, kk, vv, fr, doi);
      for (int64_t c = 0; c < D; ++c) {
        e.out = std::max(e.out, std::fabs(load(out, t, (i * HQ + h) * D + c) - fr.out[c]));
        e.dq = std::max(e.dq, std::fabs(load(dq, t, (i * HQ + h) * D + c) - br.dq[c]));
        e.out_scale = std::max(e.out_scale, std::fabs(fr.out[c]));
        e.dq_scale = std::max(e.dq_scale, std::fabs(br.dq[c]));
      }
      e.lse = std::max(e.lse, std::fabs(reinterpret_cast<const float*>(lse.host())[h * S + i] - fr.lse[0]));
    }
    // A sanity bound only (the tests hold the real tolerances): a few units of the dtype's
    // rounding at the values' scale.
    const double u = sinkattn_test::unit_roundoff(t) + 1e-6;
    const bool row_ok = e.out <= 8 * u * e.out_scale + 1e-4 && e.dq <= 8 * u * e.dq_scale + 1e-4 &&
                        e.lse <= 1e-4 * (1 + std::log(double(S)));
    ok &= row_ok;
    const double unit = cuda ? 1e9 : 1e6;  // ms -> TFLOP/s on a GPU, GFLOP/s on a CPU
    const char* rate = cuda ? "TFLOP/s" : "GFLOP/s";
    std::printf("window %-5s fwd %9.3f ms (%7.2f %s)  bwd %9.3f ms (%7.2f %s)  |  "
                "max error vs fp64 on %d rows: out %.2e lse %.2e dq %.2e  %s\n",
                window > 0 ? std::to_string(window).c_str() : "full", fwd_ms,
                fwd_flops / (fwd_ms * unit), rate, bwd_ms, 2.5 * fwd_flops / (bwd_ms * unit), rate,
                o.rows, e.out, e.lse, e.dq, row_ok ? "ok" : "TOO LARGE");
  }
  return ok ? 0 : 1;
}
