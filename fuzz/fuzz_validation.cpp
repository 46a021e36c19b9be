// libFuzzer target for the C ABI: decodes the input into forward or backward params (sizes,
// strides, windows, dtype, flags, scale including NaN/inf, cu_seqlens contents, workspace) over
// real host buffers sized exactly as the params claim, or deliberately too small / NULL. Calls
// can_implement, the kernel query and the workspace query always, and sinkattn_fwd / sinkattn_bwd
// on the CPU when the buffers are real and the problem small. Checks: no crash, no out-of-bounds
// access (ASan), no undefined behaviour (UBSan), every refusal leaves a message and the outputs
// untouched.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "sinkattn/sinkattn.h"

namespace {

constexpr int64_t kMaxElements = int64_t(1) << 18;  // per buffer; keeps each input quick
constexpr double kMaxWork = 2e6;                     // rows * keys * heads * D that may run

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_validation: %s (last error: \"%s\")\n", what, sinkattn_last_error());
  std::abort();
}

// One heap block per buffer, exactly as large as asked, so ASan flags any access past it.
struct Arena {
  std::vector<std::unique_ptr<uint8_t[]>> blocks;
  std::vector<std::pair<uint8_t*, size_t>> outputs;  // checked untouched after refusals
  std::vector<std::vector<uint8_t>> snapshots;

  uint8_t* alloc(size_t bytes, FuzzedDataProvider& in) {
    blocks.emplace_back(new uint8_t[std::max<size_t>(bytes, 1)]);
    uint8_t* p = blocks.back().get();
    for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(i * 37 + 11);
    // Some inputs steer the values too (NaN, inf, denormals); the rest stay ordinary.
    if (in.ConsumeBool()) {
      auto raw = in.ConsumeBytes<uint8_t>(std::min<size_t>(bytes, 64));
      if (!raw.empty()) std::memcpy(p, raw.data(), raw.size());
    }
    return p;
  }
  void output(void* p, size_t bytes) {
    if (p) outputs.emplace_back(static_cast<uint8_t*>(p), bytes);
  }
  void snapshot() {
    snapshots.clear();
    for (auto& [p, n] : outputs) snapshots.emplace_back(p, p + n);
  }
  bool untouched() const {
    for (size_t i = 0; i < outputs.size(); ++i)
      if (outputs[i].second &&
          std::memcmp(outputs[i].first, snapshots[i].data(), outputs[i].second) != 0)
        return false;
    return true;
  }
};

// Wrapping arithmetic: fuzzed sizes may be anything, and the harness itself must stay defined.
int64_t wrap_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
int64_t wrap_mul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}

int64_t pick_size(FuzzedDataProvider& in, int64_t typical_max) {
  switch (in.ConsumeIntegralInRange<int>(0, 9)) {
    case 8: return in.ConsumeIntegral<int64_t>();  // anything, negative and huge included
    case 9: return in.ConsumeIntegralInRange<int64_t>(-2, 2);
    default: return in.ConsumeIntegralInRange<int64_t>(0, typical_max);
  }
}

// A view of a (batch, rows, heads, D) tensor in one of several layouts; returns the number of
// elements the view spans, or -1 when the strides make that meaningless (negative, overflow).
int64_t pick_layout(FuzzedDataProvider& in, sinkattn_tensor& t, int64_t batch, int64_t rows,
                    int64_t heads, int64_t d) {
  const int64_t r1 = std::max<int64_t>(rows, 1), pad = 8 * in.ConsumeIntegralInRange<int>(0, 2);
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 1:  // (B, H, S, D)
      t.row_stride = d, t.head_stride = r1 * d, t.batch_stride = heads * r1 * d;
      break;
    case 2:  // padded
      t.head_stride = d + pad, t.row_stride = heads * (d + pad) + pad;
      t.batch_stride = r1 * t.row_stride + pad;
      break;
    case 3:  // arbitrary strides
      t.batch_stride = in.ConsumeIntegral<int64_t>();
      t.row_stride = in.ConsumeIntegralInRange<int64_t>(-8, 4096);
      t.head_stride = in.ConsumeIntegralInRange<int64_t>(-8, 512);
      break;
    default:  // (B, S, H, D)
      t.head_stride = d, t.row_stride = heads * d, t.batch_stride = r1 * heads * d;
  }
  if (batch <= 0 || rows < 0 || heads <= 0 || d <= 0) return -1;
  if (batch * rows * heads == 0) return 0;
  __int128 last = d - 1;
  const int64_t ext[3] = {batch, rows, heads}, str[3] = {t.batch_stride, t.row_stride, t.head_stride};
  for (int i = 0; i < 3; ++i) {
    if (ext[i] <= 1) continue;
    if (str[i] < 0) return -1;
    last += static_cast<__int128>(ext[i] - 1) * str[i];
  }
  return last + 1 > kMaxElements ? -1 : static_cast<int64_t>(last + 1);
}

struct Decoded {
  sinkattn_problem p{};
  bool real = true;     // every buffer is real and exactly sized: the call itself may run
  bool sized = false;   // the problem's sizes are small enough to back with buffers
  int64_t batch = 1, rows_q = 0, rows_k = 0;  // extents of the tensors (batch 1 when packed)
  double work = 0;
};

// Gives tensor t a buffer: exactly its span, or (sometimes) too small, misaligned or NULL.
void place(FuzzedDataProvider& in, Arena& a, Decoded& d, sinkattn_tensor& t, int64_t span,
           size_t elem, bool is_output) {
  int mode = in.ConsumeIntegralInRange<int>(0, 15);
  if (span < 0) {  // no sensible size: a small block; only the checks may see it
    t.data = a.alloc(64, in);
    d.real = false;
    return;
  }
  size_t bytes = static_cast<size_t>(span) * elem;
  if (mode == 13 && span > 0) {  // too small by one element
    bytes -= elem;
    d.real = false;
  }
  uint8_t* p = a.alloc(bytes + (mode == 14 ? 2 : 0), in);
  t.data = mode == 14 ? p + 1 : p;  // misaligned
  if (mode == 15) t.data = nullptr;
  if (is_output) a.output(p, bytes);
}

// A (batch, rows, heads, D) tensor of the decoded problem: a layout and a buffer for it.
void give_tensor(FuzzedDataProvider& in, Arena& a, Decoded& d, sinkattn_tensor& t, int64_t rows,
                 int64_t heads, bool is_output) {
  const bool ok = d.sized && heads > 0 && heads <= 64;
  int64_t span = ok ? pick_layout(in, t, d.batch, rows, heads, d.p.head_dim)
                    : (pick_layout(in, t, 1, 1, 1, 1), -1);
  place(in, a, d, t, span, d.p.dtype == SINKATTN_FLOAT32 ? 4 : 2, is_output);
}

// cu_seqlens of `batch` sequences: consistent prefix sums, or raw values.
int32_t* pick_cu_seqlens(FuzzedDataProvider& in, Arena& a, int64_t batch, int64_t max_len,
                         int64_t* total) {
  auto* cu = reinterpret_cast<int32_t*>(a.alloc(static_cast<size_t>(batch + 1) * 4, in));
  bool raw = in.ConsumeIntegralInRange<int>(0, 7) == 0;
  cu[0] = raw ? in.ConsumeIntegral<int32_t>() : 0;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t len = in.ConsumeIntegralInRange<int64_t>(0, std::max<int64_t>(max_len, 0));
    cu[b + 1] = raw ? in.ConsumeIntegral<int32_t>() : static_cast<int32_t>(cu[b] + len);
  }
  *total = raw ? pick_size(in, 64) : cu[batch] + in.ConsumeIntegralInRange<int>(0, 2);
  return cu;
}

float pick_scale(FuzzedDataProvider& in, int64_t d) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 1: return std::numeric_limits<float>::quiet_NaN();
    case 2: return in.ConsumeBool() ? INFINITY : -INFINITY;
    case 3: return in.ConsumeFloatingPoint<float>();
    case 4: return in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f);
    default: return d > 0 ? 1.0f / std::sqrt(static_cast<float>(d)) : 0.125f;
  }
}

Decoded decode_problem(FuzzedDataProvider& in, Arena& a) {
  Decoded d;
  sinkattn_problem& p = d.p;
  static const int kDims[] = {64, 32, 96, 128, 256};
  p.device_type = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? in.ConsumeIntegral<int32_t>()
                                                              : SINKATTN_DEVICE_CPU;
  int dt = in.ConsumeIntegralInRange<int>(0, 8);
  p.dtype = dt < 3 ? dt : dt == 8 ? in.ConsumeIntegral<int32_t>() : SINKATTN_FLOAT32;
  int hd = in.ConsumeIntegralInRange<int>(0, 5);
  p.head_dim = hd < 5 ? kDims[hd] : in.ConsumeIntegral<int32_t>();
  p.batch = wrap_add(pick_size(in, 3), 1);
  p.seqlen_q = pick_size(in, 24);
  p.seqlen_k = pick_size(in, 24);
  p.heads_kv = wrap_add(pick_size(in, 3), 1);
  p.heads_q = wrap_mul(p.heads_kv, in.ConsumeIntegralInRange<int>(0, 7) == 0
                                        ? pick_size(in, 8)
                                        : in.ConsumeIntegralInRange<int>(1, 4));
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) p.heads_q = pick_size(in, 9);
  p.scale = pick_scale(in, p.head_dim);
  p.causal = in.ConsumeBool();
  p.window_left = in.ConsumeIntegralInRange<int>(0, 3) == 0 ? pick_size(in, 30) : -1;
  p.window_right = in.ConsumeIntegralInRange<int>(0, 3) == 0 ? pick_size(in, 30) : p.causal ? 0 : -1;
  if (in.ConsumeIntegralInRange<int>(0, 31) == 0) p.window_left = in.ConsumeIntegral<int64_t>();
  p.stream = nullptr;
  // Fused zigzag positions, mostly off: a consistent layout (even Sq, Sk = W * Sq) to run, or
  // raw values for the refusals.
  switch (in.ConsumeIntegralInRange<int>(0, 15)) {
    case 0:
      p.zigzag_world = in.ConsumeIntegralInRange<int32_t>(1, 4);
      p.zigzag_rank = in.ConsumeIntegralInRange<int32_t>(0, p.zigzag_world - 1);
      if (p.seqlen_q >= 0 && p.seqlen_q <= 128) {
        p.seqlen_q &= ~int64_t{1};
        p.seqlen_k = p.seqlen_q * p.zigzag_world;
      }
      break;
    case 1:
      p.zigzag_world = in.ConsumeIntegral<int32_t>();
      p.zigzag_rank = in.ConsumeIntegral<int32_t>();
      break;
    default:
      break;
  }

  const bool plausible = p.batch > 0 && p.batch <= 64 && p.heads_q > 0 && p.heads_kv > 0 &&
                         p.heads_q <= 64 && p.head_dim > 0 && p.head_dim <= 256 &&
                         p.seqlen_q >= 0 && p.seqlen_k >= 0 && p.seqlen_q <= 512 && p.seqlen_k <= 512;
  int64_t rows_q = p.seqlen_q, rows_k = p.seqlen_k, batch = p.batch;
  if (plausible && in.ConsumeBool()) {  // packed variable-length batch
    p.cu_seqlens_q = pick_cu_seqlens(in, a, p.batch, p.seqlen_q, &p.total_q);
    p.cu_seqlens_k = pick_cu_seqlens(in, a, p.batch, p.seqlen_k, &p.total_k);
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0) p.cu_seqlens_k = nullptr;
    rows_q = p.total_q, rows_k = p.total_k, batch = 1;
  }
  d.sized = plausible && rows_q >= 0 && rows_k >= 0 && rows_q <= 4096 && rows_k <= 4096;
  d.batch = batch, d.rows_q = rows_q, d.rows_k = rows_k;
  if (!d.sized) d.real = false;
  give_tensor(in, a, d, p.q, rows_q, p.heads_q, false);
  give_tensor(in, a, d, p.k, rows_k, p.heads_kv, false);
  give_tensor(in, a, d, p.v, rows_k, p.heads_kv, false);
  if (in.ConsumeBool() && p.heads_q > 0 && p.heads_q <= 64) {
    p.sinks = reinterpret_cast<const float*>(a.alloc(static_cast<size_t>(p.heads_q) * 4, in));
  }
  d.work = plausible ? double(batch) * std::max<int64_t>(rows_q, 0) * std::max<int64_t>(rows_k, 0) *
                           p.heads_q * p.head_dim
                     : 0;
  return d;
}

// lse / dsink style fp32 array of n elements (or a deliberately broken pointer).
float* pick_floats(FuzzedDataProvider& in, Arena& a, Decoded& d, int64_t n, bool is_output) {
  int mode = in.ConsumeIntegralInRange<int>(0, 15);
  if (n < 0 || n > kMaxElements) {
    d.real = false;
    return reinterpret_cast<float*>(a.alloc(16, in));
  }
  if (mode == 15) return nullptr;
  size_t bytes = static_cast<size_t>(n) * 4 - (mode == 14 && n > 0 ? 4 : 0);
  if (mode == 14 && n > 0) d.real = false;
  auto* p = reinterpret_cast<float*>(a.alloc(bytes, in));
  if (is_output) a.output(p, bytes);
  return p;
}

int64_t lse_count(const Decoded& d) {
  if (!d.sized || d.p.heads_q <= 0 || d.p.heads_q > 64) return -1;
  return d.p.heads_q * (d.p.cu_seqlens_q ? d.p.total_q : d.p.batch * d.p.seqlen_q);
}

// Workspace as asked, or too small, NULL or misaligned.
void pick_workspace(FuzzedDataProvider& in, Arena& a, Decoded& d, size_t need, void** ws,
                    size_t* size) {
  int mode = in.ConsumeIntegralInRange<int>(0, 15);
  *size = need;
  if (need > (size_t(1) << 26)) {
    d.real = false;
    *ws = nullptr;
    return;
  }
  uint8_t* p = a.alloc(need + 32, in);
  *ws = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(p) + 15) / 16 * 16);
  if (mode == 13 && need) *size = need - 1;
  if (mode == 14) *ws = static_cast<uint8_t*>(*ws) + 4;
  if (mode == 15) *ws = nullptr;
}

void check_status(sinkattn_status st) {
  if (st < SINKATTN_OK || st > SINKATTN_ERROR_INTERNAL) die("status outside the enum");
  if (st == SINKATTN_ERROR_INTERNAL) die("internal error");
  if (st != SINKATTN_OK && sinkattn_last_error()[0] == '\0') die("refusal without a message");
}

template <class Params, class SizeFn, class CanFn, class KernelFn, class RunFn>
void exercise(FuzzedDataProvider& in, Arena& a, Decoded& d, Params& params, SizeFn size_fn,
              CanFn can_fn, KernelFn kernel_fn, RunFn run_fn) {
  size_t need = 0;
  sinkattn_status st = size_fn(&params, &need);
  check_status(st);
  if (st == SINKATTN_OK) pick_workspace(in, a, d, need, &params.workspace, &params.workspace_size);
  a.snapshot();
  sinkattn_status can = can_fn(&params);
  check_status(can);
  if (!a.untouched()) die("can_implement wrote to an output");
  // The kernel query refuses what can_implement refuses, the workspace aside (it checks none).
  const bool workspace_refused = can != SINKATTN_OK && std::strstr(sinkattn_last_error(), "workspace");
  const char* kernel = kernel_fn(&params);
  if ((kernel == nullptr) != (can != SINKATTN_OK && !workspace_refused))
    die("the kernel query and can_implement disagree");
  if (kernel == nullptr && sinkattn_last_error()[0] == '\0') die("kernel query refused without a message");
  if (kernel != nullptr && kernel[0] == '\0') die("empty kernel name");
  if (!a.untouched()) die("the kernel query wrote to an output");
  // Run only on real, exactly sized host buffers and small problems (CUDA params never run).
  if (!d.real || d.work > kMaxWork || params.problem.device_type != SINKATTN_DEVICE_CPU) return;
  sinkattn_status ran = run_fn(&params);
  check_status(ran);
  if (ran != can) die("the call and can_implement disagree");
  if (ran != SINKATTN_OK && !a.untouched()) die("a refused call wrote to an output");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Arena a;
  const bool backward = in.ConsumeBool();
  Decoded d = decode_problem(in, a);
  const sinkattn_problem& p = d.p;
  auto tensor = [&](sinkattn_tensor& t, int64_t rows, int64_t heads, bool is_output) {
    give_tensor(in, a, d, t, rows, heads, is_output);
  };
  const int64_t rows_q = d.rows_q, rows_k = d.rows_k;
  if (!backward) {
    sinkattn_fwd_params f{};
    f.problem = p;
    tensor(f.out, rows_q, p.heads_q, true);
    f.lse = in.ConsumeBool() ? pick_floats(in, a, d, lse_count(d), true) : nullptr;
    exercise(in, a, d, f, sinkattn_fwd_workspace_size, sinkattn_fwd_can_implement, sinkattn_fwd_kernel,
             sinkattn_fwd);
  } else {
    sinkattn_bwd_params b{};
    b.problem = p;
    tensor(b.out, rows_q, p.heads_q, false);
    tensor(b.dout, rows_q, p.heads_q, false);
    b.lse = pick_floats(in, a, d, lse_count(d), false);
    tensor(b.dq, rows_q, p.heads_q, true);
    tensor(b.dk, rows_k, p.heads_kv, true);
    tensor(b.dv, rows_k, p.heads_kv, true);
    if (p.sinks ? in.ConsumeIntegralInRange<int>(0, 3) != 0 : in.ConsumeIntegralInRange<int>(0, 15) == 0)
      b.dsink = pick_floats(in, a, d, p.heads_q > 0 && p.heads_q <= 64 ? p.heads_q : -1, true);
    b.deterministic = in.ConsumeBool();
    exercise(in, a, d, b, sinkattn_bwd_workspace_size, sinkattn_bwd_can_implement, sinkattn_bwd_kernel,
             sinkattn_bwd);
  }
  return 0;
}
