// The benchmark workloads through the C ABI alone (include/sinkattn/sinkattn.h, no Python): what
// a C++ user can run to measure sinkattn on their machine.
//
//   cabi_bench [--suite quick|full] [--device cuda|cpu] [--filter TEXT] [--csv]
//
// Workloads mirror python/sinkattn/bench/suites.py (keep the two in step): GPT-OSS (Hq 64, Hkv 8,
// D 64, sinks), its window-128 layers, Llama (Hq 32, Hkv 8, D 128, no sinks), packed varlen
// documents and batch-64 decode. CUDA: bf16 at full size, timed with CUDA events. CPU: fp32 at
// the suite's CPU sizes (8x fewer heads, short sequences), timed with a wall clock.
// Timing: warm-up, then the median of separately timed calls, rotating among input sets whose
// total exceeds the last-level cache. FLOPs count visible (unmasked) query-key pairs only:
// 4 * Hq * pairs * D forward, 2.5x that backward (sinkattn_bwd is timed on its own here).
// Before timing, each workload's structure is run on a small slice and compared with the fp64
// reference of tests/cpp/reference.h (out, lse, dq, dk, dv, dsink); a wrong one is not timed.
// Workloads: cabi/workloads.h; device memory and clocks: cabi/device.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cabi/device.h"
#include "cabi/workloads.h"
#include "half.h"       // tests/cpp: float <-> bf16/fp16, written apart from the library
#include "reference.h"  // tests/cpp: plain fp64 attention forward and backward
#include "sinkattn/sinkattn.h"

namespace {

using namespace cabi;
using sinkattn_test::bf16_to_float;
using sinkattn_test::dtype_size;
using sinkattn_test::float_to_bf16;

// ---- one problem's buffers and params ---------------------------------------------------------

void check_status(sinkattn_status s, const char* what) {
  if (s == SINKATTN_OK) return;
  std::string msg = sinkattn_last_error();  // names the entry point itself
  throw Failure(msg.empty() ? std::string(what) + ": status " + std::to_string(s) : msg);
}

struct Problem {
  const Workload& w;
  const Device& dev;
  sinkattn_dtype dtype;
  size_t esz;
  // host copies (values already rounded to dtype), used by the check
  std::vector<float> hq, hk, hv, hdout, hsinks;
  Buffer q, k, v, out, dout, dq, dk, dv, lse, sinks, dsink, cu, wsf, wsb;
  sinkattn_fwd_params fwd{};
  sinkattn_bwd_params bwd{};

  Problem(const Workload& w_, const Device& d, sinkattn_dtype t, uint32_t seed, bool keep_host)
      : w(w_),
        dev(d),
        dtype(t),
        esz(dtype_size(t)),
        q(d, w.rows_q() * w.hq * w.d * esz),
        k(d, w.rows_k() * w.hkv * w.d * esz),
        v(d, k.bytes),
        out(d, q.bytes),
        dout(d, w.fwd_only ? 0 : q.bytes),  // backward buffers only where it is timed
        dq(d, dout.bytes),
        dk(d, w.fwd_only ? 0 : k.bytes),
        dv(d, dk.bytes),
        lse(d, w.rows_q() * w.hq * 4),
        sinks(d, w.sinks ? w.hq * 4 : 0),
        dsink(d, w.sinks ? w.hq * 4 : 0),
        cu(d, w.varlen() ? (w.docs.size() + 1) * 4 : 0),
        wsf(d, 0),
        wsb(d, 0) {
    std::mt19937 rng(seed);
    fill(q, rng, keep_host ? &hq : nullptr);
    fill(k, rng, keep_host ? &hk : nullptr);
    fill(v, rng, keep_host ? &hv : nullptr);
    if (!w.fwd_only) fill(dout, rng, keep_host ? &hdout : nullptr);
    if (w.sinks) {  // around 4: large enough that a missing sink term shows in the check
      std::normal_distribution<float> n(4.f, 1.f);
      hsinks.resize(w.hq);
      for (float& s : hsinks) s = n(rng);
      dev.upload(sinks.ptr, hsinks.data(), sinks.bytes);
    }
    if (w.varlen()) {
      std::vector<int32_t> c{0};
      for (int64_t n : w.docs) c.push_back(c.back() + static_cast<int32_t>(n));
      dev.upload(cu.ptr, c.data(), cu.bytes);
    }
    set_params();
  }

  // N(0,1) values. Large tensors repeat one random 16 MiB block: generating tens of GB on the host
  // would dominate the run, and timing only needs non-trivial data (never zeros).
  void fill(Buffer& b, std::mt19937& rng, std::vector<float>* host) {
    size_t n = b.bytes / esz, block = std::min<size_t>(n, (size_t(16) << 20) / esz);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> vals(block);
    std::vector<unsigned char> bytes(block * esz);
    for (size_t i = 0; i < block; ++i) {
      float x = nd(rng);
      if (esz == 2) {
        uint16_t h = float_to_bf16(x);
        std::memcpy(&bytes[i * 2], &h, 2);
        x = bf16_to_float(h);
      } else {
        std::memcpy(&bytes[i * 4], &x, 4);
      }
      vals[i] = x;
    }
    for (size_t off = 0; off < n; off += block) {
      size_t m = std::min(block, n - off);
      dev.upload(static_cast<unsigned char*>(b.ptr) + off * esz, bytes.data(), m * esz);
    }
    if (host) {
      host->resize(n);
      for (size_t i = 0; i < n; ++i) (*host)[i] = vals[i % block];
    }
  }

  sinkattn_tensor tensor(const Buffer& b, int64_t heads, int64_t rows) const {
    sinkattn_tensor t{};
    t.data = b.ptr;
    t.head_stride = w.d;
    t.row_stride = heads * w.d;
    t.batch_stride = w.varlen() ? 0 : rows * heads * w.d;
    return t;
  }

  void set_params() {
    sinkattn_problem& p = fwd.problem;
    p.device_type = dev.cuda ? SINKATTN_DEVICE_CUDA : SINKATTN_DEVICE_CPU;
    p.dtype = dtype;
    p.head_dim = static_cast<int32_t>(w.d);
    p.batch = w.batch;
    p.seqlen_q = w.sq;
    p.seqlen_k = w.sk;
    p.heads_q = w.hq;
    p.heads_kv = w.hkv;
    p.q = tensor(q, w.hq, w.sq);
    p.k = tensor(k, w.hkv, w.sk);
    p.v = tensor(v, w.hkv, w.sk);
    p.sinks = w.sinks ? static_cast<const float*>(sinks.ptr) : nullptr;
    if (w.varlen()) {
      p.cu_seqlens_q = p.cu_seqlens_k = static_cast<const int32_t*>(cu.ptr);
      p.total_q = p.total_k = w.total();
    }
    p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(w.d)));
    p.causal = 1;
    p.window_left = w.window ? w.window - 1 : -1;
    p.window_right = 0;
    fwd.out = tensor(out, w.hq, w.sq);
    fwd.lse = static_cast<float*>(lse.ptr);
    size_t bytes = 0;
    check_status(sinkattn_fwd_workspace_size(&fwd, &bytes), "sinkattn_fwd_workspace_size");
    wsf = Buffer(dev, bytes);
    fwd.workspace = wsf.ptr;
    fwd.workspace_size = bytes;
    if (w.fwd_only) return;

    bwd.problem = p;
    bwd.out = fwd.out;
    bwd.dout = tensor(dout, w.hq, w.sq);
    bwd.lse = fwd.lse;
    bwd.dq = tensor(dq, w.hq, w.sq);
    bwd.dk = tensor(dk, w.hkv, w.sk);
    bwd.dv = tensor(dv, w.hkv, w.sk);
    bwd.dsink = w.sinks ? static_cast<float*>(dsink.ptr) : nullptr;
    check_status(sinkattn_bwd_workspace_size(&bwd, &bytes), "sinkattn_bwd_workspace_size");
    wsb = Buffer(dev, bytes);
    bwd.workspace = wsb.ptr;
    bwd.workspace_size = bytes;
  }

  void run_fwd() { check_status(sinkattn_fwd(&fwd), "sinkattn_fwd"); }
  void run_bwd() { check_status(sinkattn_bwd(&bwd), "sinkattn_bwd"); }

  std::vector<double> fetch(const Buffer& b, bool fp32 = false) const {
    size_t e = fp32 ? 4 : esz, n = b.bytes / e;
    std::vector<unsigned char> raw(b.bytes);
    dev.download(raw.data(), b.ptr, b.bytes);
    std::vector<double> x(n);
    for (size_t i = 0; i < n; ++i) {
      if (e == 2) {
        uint16_t h;
        std::memcpy(&h, &raw[i * 2], 2);
        x[i] = bf16_to_float(h);
      } else {
        float f;
        std::memcpy(&f, &raw[i * 4], 4);
        x[i] = f;
      }
    }
    return x;
  }
};

// ---- the check against tests/cpp/reference.h --------------------------------------------------

// Squared error and squared reference norm, accumulated per tensor.
struct Err {
  double diff = 0, ref = 0;
  void add(double got, double want) {
    diff += (got - want) * (got - want);
    ref += want * want;
  }
  double rel() const {
    return std::isfinite(diff) ? std::sqrt(diff / std::max(ref, 1e-300)) : INFINITY;
  }
};

// Worst relative error over out, lse, dq, dk, dv, dsink; "what" names the tensor.
double check(const Workload& full, const Device& dev, sinkattn_dtype dtype, std::string* what) {
  Workload w = check_slice(full);
  Problem p(w, dev, dtype, std::random_device{}(), true);
  p.run_fwd();
  if (!w.fwd_only) p.run_bwd();
  dev.sync();
  auto out = p.fetch(p.out), lse = p.fetch(p.lse, true);
  std::vector<double> dq, dk, dv, dsink;
  if (!w.fwd_only) dq = p.fetch(p.dq), dk = p.fetch(p.dk), dv = p.fetch(p.dv);
  if (!w.fwd_only && w.sinks) dsink = p.fetch(p.dsink, true);
  Err e_out, e_lse, e_dq, e_dk, e_dv, e_ds;
  std::vector<double> dsink_ref(w.hq, 0.0);  // dsink_h sums over every sequence
  int64_t nseq = w.varlen() ? static_cast<int64_t>(w.docs.size()) : w.batch;
  int64_t r0q = 0;
  for (int64_t b = 0; b < nseq; ++b) {
    int64_t sq = w.varlen() ? w.docs[b] : w.sq, sk = w.varlen() ? w.docs[b] : w.sk;
    int64_t r0k = w.varlen() ? r0q : b * w.sk;
    // One head's rows [r0, r0 + n) of a token-major host tensor, as the reference wants them.
    auto rows = [&](const std::vector<float>& src, int64_t r0, int64_t n, int64_t heads,
                    int64_t hh) {
      std::vector<double> m(n * w.d);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < w.d; ++c) m[i * w.d + c] = src[((r0 + i) * heads + hh) * w.d + c];
      return m;
    };
    std::vector<double> dk_ref(w.hkv * sk * w.d, 0.0), dv_ref(dk_ref.size(), 0.0);
    for (int64_t h = 0; h < w.hq; ++h) {
      int64_t g = h / (w.hq / w.hkv);  // GQA: the kv head this query head reads
      sinkattn_ref::Head hd;
      hd.sq = sq, hd.sk = sk, hd.d = w.d, hd.scale = p.fwd.problem.scale, hd.causal = true;
      hd.has_sink = w.sinks, hd.sink = w.sinks ? p.hsinks[h] : 0.0;
      hd.left = w.window ? w.window - 1 : -1;
      auto qh = rows(p.hq, r0q, sq, w.hq, h), kh = rows(p.hk, r0k, sk, w.hkv, g);
      auto vh = rows(p.hv, r0k, sk, w.hkv, g);
      auto f = sinkattn_ref::forward(hd, qh, kh, vh);
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t c = 0; c < w.d; ++c)
          e_out.add(out[((r0q + i) * w.hq + h) * w.d + c], f.out[i * w.d + c]);
        // lse is (B, Hq, Sq) for fixed batches and (Hq, Tq) for varlen
        size_t li = w.varlen() ? h * w.total() + r0q + i : (b * w.hq + h) * w.sq + i;
        e_lse.add(lse[li], f.lse[i]);
      }
      if (w.fwd_only) continue;
      auto bk = sinkattn_ref::backward(hd, qh, kh, vh, f, rows(p.hdout, r0q, sq, w.hq, h));
      for (int64_t i = 0; i < sq; ++i)
        for (int64_t c = 0; c < w.d; ++c)
          e_dq.add(dq[((r0q + i) * w.hq + h) * w.d + c], bk.dq[i * w.d + c]);
      for (int64_t j = 0; j < sk * w.d; ++j) {  // a kv head's gradient sums over its group
        dk_ref[g * sk * w.d + j] += bk.dk[j];
        dv_ref[g * sk * w.d + j] += bk.dv[j];
      }
      dsink_ref[h] += bk.dsink;
    }
    for (int64_t g = 0; g < w.hkv && !w.fwd_only; ++g)
      for (int64_t j = 0; j < sk; ++j)
        for (int64_t c = 0; c < w.d; ++c) {
          size_t at = ((r0k + j) * w.hkv + g) * w.d + c;
          e_dk.add(dk[at], dk_ref[(g * sk + j) * w.d + c]);
          e_dv.add(dv[at], dv_ref[(g * sk + j) * w.d + c]);
        }
    r0q += sq;
  }
  for (size_t h = 0; h < dsink.size(); ++h) e_ds.add(dsink[h], dsink_ref[h]);
  double worst = 0;
  std::pair<const char*, const Err*> all[] = {{"out", &e_out}, {"lse", &e_lse}, {"dq", &e_dq},
                                              {"dk", &e_dk},   {"dv", &e_dv},   {"dsink", &e_ds}};
  for (auto& [name, e] : all)
    if (e->ref > 0 && e->rel() >= worst) worst = e->rel(), *what = name;
  return worst;
}

// ---- timing -----------------------------------------------------------------------------------

double median_ms(const Device& dev, const std::function<void(int)>& call) {
  int warmup = dev.cuda ? 2 : 1, lo = dev.cuda ? 5 : 3, hi = dev.cuda ? 50 : 10;
  double target = dev.cuda ? 400.0 : 100.0;
  for (int i = 0; i < warmup; ++i) call(i);
  dev.sync();
  double probe = dev.time_calls(call, warmup, 1)[0];
  int reps = static_cast<int>(std::clamp(target / std::max(probe, 1e-3), double(lo), double(hi)));
  auto t = dev.time_calls(call, warmup + 1, reps);
  std::sort(t.begin(), t.end());
  return reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
}

struct Result {
  std::string status = "ok", worst;
  double err = NAN, fwd_ms = NAN, bwd_ms = NAN;
};

Result run(const Workload& w, const Device& dev, sinkattn_dtype dtype) {
  Result r;
  try {
    r.err = check(w, dev, dtype, &r.worst);
    double tol = dtype == SINKATTN_FLOAT32 ? 1e-4 : 3e-2;  // python bench: reference.TOLERANCE
    if (!(r.err <= tol)) {
      r.status = "wrong";
      return r;
    }
    // Input sets to rotate so that their total is >= 3x the last-level cache.
    size_t set = (w.rows_q() * w.hq * 2 + w.rows_k() * w.hkv * 2) * w.d * dtype_size(dtype);
    size_t n = std::clamp<size_t>((3 * dev.cache_bytes() + set - 1) / set, 1, 16);
    n = std::max<size_t>(1, std::min(n, static_cast<size_t>(0.3 * dev.free_bytes() / set)));
    std::vector<Problem> sets;
    sets.reserve(n);
    for (size_t i = 0; i < n; ++i) sets.emplace_back(w, dev, dtype, 1000 + i, false);
    r.fwd_ms = median_ms(dev, [&](int i) { sets[i % n].run_fwd(); });
    if (!w.fwd_only) r.bwd_ms = median_ms(dev, [&](int i) { sets[i % n].run_bwd(); });
    dev.sync();
  } catch (const OutOfMemory& e) {
    r.status = std::string("skipped: memory (") + e.what() + ")";
  } catch (const std::exception& e) {
    r.status = std::string("error: ") + e.what();
  }
  return r;
}

void usage() {
  std::puts("usage: cabi_bench [--suite quick|full] [--device cuda|cpu] [--filter TEXT] [--csv]");
}

}  // namespace

int main(int argc, char** argv) {
  std::string suite_name = "quick", device, filter;
  bool csv = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--suite")
      suite_name = next();
    else if (a == "--device")
      device = next();
    else if (a == "--filter")
      filter = next();
    else if (a == "--csv")
      csv = true;
    else {
      usage();
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (suite_name != "quick" && suite_name != "full") {
    usage();
    return 2;
  }
  Device dev;
#ifdef SINKATTN_BENCH_CUDA
  int count = 0;
  bool have_gpu = sinkattn_has_cuda() && cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  bool have_gpu = false;
#endif
  if (device.empty()) device = have_gpu ? "cuda" : "cpu";
  if (device == "cuda" && !have_gpu) {
    std::fprintf(stderr, "cabi_bench: --device cuda needs a CUDA build of the library and a GPU\n");
    return 2;
  }
  if (device != "cuda" && device != "cpu") {
    usage();
    return 2;
  }
  dev.cuda = device == "cuda";
  sinkattn_dtype dtype = dev.cuda ? SINKATTN_BFLOAT16 : SINKATTN_FLOAT32;

  std::printf(csv ? "workload,check_err,worst,fwd_ms,fwd_tflops,bwd_ms,bwd_tflops,status\n"
                  : "%-16s %-9s %-6s %10s %9s %10s %9s  %s\n",
              "workload", "check", "worst", "fwd ms", "fwd TF/s", "bwd ms", "bwd TF/s", "status");
  int bad = 0;
  for (const Workload& w : suite(suite_name, dev.cuda)) {
    if (!filter.empty() && w.name.find(filter) == std::string::npos) continue;
    Result r = run(w, dev, dtype);
    double f = fwd_flops(w);
    double ftf = f / r.fwd_ms / 1e9, btf = 2.5 * f / r.bwd_ms / 1e9;
    if (csv)
      std::printf("%s,%.3g,%s,%.4g,%.4g,%.4g,%.4g,%s\n", w.name.c_str(), r.err, r.worst.c_str(),
                  r.fwd_ms, ftf, r.bwd_ms, btf, r.status.c_str());
    else
      std::printf("%-16s %-9.2e %-6s %10.4g %9.4g %10.4g %9.4g  %s\n", w.name.c_str(), r.err,
                  r.worst.c_str(), r.fwd_ms, ftf, r.bwd_ms, btf, r.status.c_str());
    std::fflush(stdout);
    bad += r.status == "wrong" || r.status.rfind("error", 0) == 0;
  }
  return bad ? 1 : 0;
}
