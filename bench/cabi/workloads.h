// Workloads of the C ABI benchmark: a mirror of python/sinkattn/bench/suites.py (keep the two in
// step), with the visible-pair FLOP count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace cabi {

struct Workload {
  std::string name;
  int64_t hq, hkv, d;
  int64_t sq, sk;     // per sequence (fixed); ignored for varlen
  int64_t batch = 1;  // sequences (fixed); documents (varlen, from docs)
  bool sinks = true;
  int64_t window = 0;         // W keys including the query (left = W - 1); 0 = none
  std::vector<int64_t> docs;  // varlen: packed document lengths (q and k equal); empty = fixed
  bool fwd_only = false;      // decode: forward only

  bool varlen() const { return !docs.empty(); }
  int64_t rows_q() const { return varlen() ? total() : batch * sq; }
  int64_t rows_k() const { return varlen() ? total() : batch * sk; }
  int64_t total() const {
    int64_t t = 0;
    for (int64_t n : docs) t += n;
    return t;
  }
  int64_t max_doc() const { return docs.empty() ? 0 : *std::max_element(docs.begin(), docs.end()); }
};

// Document lengths in [lo, hi] summing to total; each draw leaves at least lo tokens, so the last
// document is in range too (needs total >= lo and hi >= 2 lo). Not the Python generator's
// sequence: the C++ varlen rows have the same totals and ranges, not the same documents.
inline std::vector<int64_t> packed_docs(int64_t total, int64_t lo, int64_t hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int64_t> docs;
  int64_t left = total;
  while (left > hi) {
    std::uniform_int_distribution<int64_t> len(lo, std::min(hi, left - lo));
    docs.push_back(len(rng));
    left -= docs.back();
  }
  docs.push_back(left);
  return docs;
}

inline std::string kname(int64_t n) {
  return n % 1024 == 0 ? std::to_string(n / 1024) + "k" : std::to_string(n);
}

inline Workload gptoss(int64_t s, int64_t window = 0, int64_t hq = 64, int64_t hkv = 8) {
  std::string fam = window ? "gptoss-w" + std::to_string(window) : "gptoss";
  return {fam + "-" + kname(s), hq, hkv, 64, s, s, 1, true, window, {}, false};
}
inline Workload llama(int64_t s, int64_t hq = 32, int64_t hkv = 8) {
  return {"llama-" + kname(s), hq, hkv, 128, s, s, 1, false, 0, {}, false};
}
inline Workload varlen(int64_t total, int64_t lo, int64_t hi, int64_t hq = 64, int64_t hkv = 8) {
  Workload w{"varlen-" + kname(total),
             hq,
             hkv,
             64,
             0,
             0,
             0,
             true,
             0,
             packed_docs(total, lo, hi, static_cast<uint32_t>(total)),
             false};
  w.batch = static_cast<int64_t>(w.docs.size());
  w.sq = w.sk = w.max_doc();
  return w;
}
inline Workload decode(int64_t sk, int64_t batch = 64, int64_t hq = 64, int64_t hkv = 8) {
  return {"decode-" + kname(sk), hq, hkv, 64, 1, sk, batch, true, 0, {}, true};
}

// The Python suites' workloads (key workloads first, as the Python harness runs them).
inline std::vector<Workload> suite(const std::string& name, bool cuda) {
  if (cuda && name == "quick")
    return {gptoss(4096), gptoss(16384, 128), llama(8192), varlen(16384, 512, 4096), decode(8192)};
  if (cuda)
    return {gptoss(16384),       gptoss(4096),         gptoss(16384, 128),
            llama(8192),         varlen(32768, 256, 8192), gptoss(32768),
            decode(8192),        llama(32768),         gptoss(65536),
            gptoss(65536, 128),  decode(32768),        decode(131072)};
  if (name == "quick")
    return {gptoss(512, 0, 8, 1), gptoss(1024, 128, 8, 1), llama(256, 4, 1),
            varlen(1024, 64, 384, 8, 1), decode(2048, 4, 8, 1)};
  return {gptoss(1024, 0, 8, 1),       gptoss(256, 0, 8, 1),   gptoss(1024, 128, 8, 1),
          llama(512, 4, 1),            varlen(2048, 64, 512, 8, 1), gptoss(2048, 0, 8, 1),
          decode(2048, 4, 8, 1),       llama(2048, 4, 1),      gptoss(4096, 0, 8, 1),
          gptoss(4096, 128, 8, 1),     decode(8192, 4, 8, 1)};
}

// The same structure at a size the fp64 reference affords (python: Workload.check_slice).
inline Workload check_slice(const Workload& w) {
  Workload s = w;
  if (w.varlen()) {
    s.docs = {37, 1, 190, 0, 64 + w.window, 129};
    s.batch = static_cast<int64_t>(s.docs.size());
    s.sq = s.sk = s.max_doc();
    return s;
  }
  s.batch = std::min<int64_t>(w.batch, 2);
  s.sk = std::max<int64_t>(w.fwd_only ? 320 : 192, 2 * w.window + 64);
  s.sq = w.fwd_only ? 1 : s.sk;
  return s;
}

// Visible pairs per head: row i sits at key position i + Sk - Sq; causal; window W keys.
inline double pairs_of(int64_t sq, int64_t sk, int64_t window) {
  double n = 0;
  for (int64_t i = 0; i < sq; ++i) {
    int64_t pos = i + sk - sq;
    int64_t lo = window ? std::max<int64_t>(0, pos - (window - 1)) : 0;
    int64_t hi = std::min(sk - 1, pos);
    if (hi >= lo) n += static_cast<double>(hi - lo + 1);
  }
  return n;
}
inline double fwd_flops(const Workload& w) {
  double pairs = 0;
  if (w.varlen())
    for (int64_t n : w.docs) pairs += pairs_of(n, n, w.window);
  else
    pairs = w.batch * pairs_of(w.sq, w.sk, w.window);
  return 4.0 * w.hq * pairs * w.d;
}

}  // namespace cabi
