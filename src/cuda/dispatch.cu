// sinkattn::cuda (src/backend.h) over the portable sm_80+ kernels: support checks, workspace
// layout, Params construction and the single (dtype, head dim) dispatch. api.cpp has already
// validated shapes, strides, alignment and pointers; everything here is CUDA-specific.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <type_traits>

#include "backend.h"
#include "cuda/common/mask_rule.h"
#include "cuda/common/per_device.h"
#include "cuda/common/slots.h"
#include "cuda/offsets_guard.h"
#include "cuda/sm80/bwd_prep.h"
#include "cuda/sm80/launch.h"
#include "cuda/sm80/tile_size.h"
#ifdef SINKATTN_WITH_SM90
#include "cuda/sm90/launch.h"
#include "cuda/sm90/tensor_map.h"
#include "cuda/sm90/tile_size.h"
#endif

namespace sinkattn {
namespace cuda {
namespace {

using sm80::Params;

[[noreturn]] void cuda_fail(const char* what, cudaError_t err) {
  throw Error(SINKATTN_ERROR_CUDA, std::string(what) + ": " + cudaGetErrorString(err));
}

// Runs f(T{}, std::integral_constant<int, D>{}) for the problem's dtype and head dim: the only
// place that maps runtime values onto instantiations.
template <typename F>
void dispatch(const sinkattn_problem& p, F&& f) {
  auto by_dim = [&](auto type) {
    switch (p.head_dim) {
      case 32: return f(type, std::integral_constant<int, 32>{});
      case 64: return f(type, std::integral_constant<int, 64>{});
      case 96: return f(type, std::integral_constant<int, 96>{});
      case 128: return f(type, std::integral_constant<int, 128>{});
      case 256: return f(type, std::integral_constant<int, 256>{});
    }
    throw Error(SINKATTN_ERROR_INTERNAL, "sinkattn CUDA dispatch: unexpected head_dim " +
                                             std::to_string(p.head_dim));
  };
  if (p.dtype == SINKATTN_BFLOAT16) return by_dim(__nv_bfloat16{});
  if (p.dtype == SINKATTN_FLOAT16) return by_dim(__half{});
  throw Error(SINKATTN_ERROR_INTERNAL,
              "sinkattn CUDA dispatch: unexpected dtype " + std::to_string(p.dtype));
}

// Makes the problem's device current for the duration of a call.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaError_t err = cudaGetDevice(&previous_);
    if (err != cudaSuccess) cuda_fail("cudaGetDevice", err);
    if (previous_ != device && (err = cudaSetDevice(device)) != cudaSuccess)
      cuda_fail("cudaSetDevice", err);
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

int64_t q_rows(const sinkattn_problem& p) {
  return is_varlen(p) ? p.total_q : p.batch * p.seqlen_q;
}

int32_t dsink_blocks(const sinkattn_problem& p) {
  const int64_t n = (p.seqlen_q + sm80::kPrepRows - 1) / sm80::kPrepRows;
  return static_cast<int32_t>(n > 0 ? n : 1);
}

// Slots per query head of the arrays kept per row group (Sequence::group0): packed, the slots
// of common/slots.h at kPrepRows rows.
int64_t row_groups(const sinkattn_problem& p) {
  constexpr int n = sm80::kPrepRows;
  return is_varlen(p) ? slot_count(p.batch, p.total_q, n) : p.batch * ((p.seqlen_q + n - 1) / n);
}

bool dq_handoff(const sinkattn_bwd_params& b);
bool band_dq(const sinkattn_bwd_params& b);
std::string sm90_refusal(const sinkattn_problem& p);

// Which pass a Params is made for: each may run its own form of the problem's mask.
enum class Pass { kForward, kBackward };

// The mask bounds a pass's kernels run: the problem's, or the same bounds cut to the lengths
// (common/mask_rule.h cut_window: the same visible keys) where the problem's keep it off a faster
// Hopper kernel and the cut ones let that run:
// - both passes: the GQA-packed band kernels (d 64, query groups of 8k heads), so causal documents
//   of up to 129 keys under gptoss's GQA (H100, 32k tokens: documents of 16..129 forward 2.4x,
//   backward 1.6x, deterministic 2.1x; 256 sequences of 128 1.3x / 1.9x);
// - the backward: its narrow-window kernel, where that pays (sm90/tile_size.h bwd_cut_narrow:
//   causal sequences of up to 512 keys; H100, 32k tokens of llama documents of 16..256 1.56x).
//   Not the forward: its d 64 tiles would shrink to 128 rows, slower past 256 keys (kShortSeq).
MaskBounds kernel_mask(const sinkattn_problem& p, Pass pass) {
  const MaskBounds m = mask_bounds(p);
#ifdef SINKATTN_WITH_SM90
  if (p.zigzag_world != 0) return m;  // zigzag moves the positions: nothing to cut
  const int d = (int)p.head_dim;
  const long long group = p.heads_q / p.heads_kv;
  auto band = [&](long long left, long long right) {
    return pass == Pass::kForward ? sm90::use_band(d, group, left, right, 0, p.seqlen_q)
                                  : sm90::use_band_dq(d, group, left, right, 0, p.seqlen_q);
  };
  const WindowBounds cut = cut_window(m.left, m.right, p.seqlen_q, p.seqlen_k);
  const bool faster =
      (band(cut.left, cut.right) && !band(m.left, m.right)) ||
      (pass == Pass::kBackward && sm90::bwd_cut_narrow(cut.left, cut.right) &&
       !sm90::fwd_short_rows(m.left, m.right));
  if (faster && sm90_refusal(p).empty()) return {cut.left, cut.right};
#else
  (void)pass;
#endif
  return m;
}

// Backward workspace: delta (lse layout), dsink partials, the fp32 dq accumulator of the atomic
// (non-deterministic) mode or the dq handoff, and the handoff's counters; each region starts on
// a 256-byte boundary.
struct BwdWorkspace {
  size_t delta = 0, dsink = 0, dq_accum = 0, dq_flags = 0, total = 0;
  bool band = false, handoff = false;  // dq by the band dq kernel; else handed on (exclusive)
  explicit BwdWorkspace(const sinkattn_bwd_params& b)
      : band(band_dq(b)), handoff(!band && dq_handoff(b)) {
    const sinkattn_problem& p = b.problem;
    auto region = [this](size_t bytes) {
      const size_t at = total;
      total += (bytes + 255) / 256 * 256;
      return at;
    };
    delta = region(sizeof(float) * q_rows(p) * p.heads_q);
    dsink = region(sizeof(float) * p.heads_q * row_groups(p));
    if ((!b.deterministic || handoff) && !band)
      dq_accum = region(sizeof(float) * q_rows(p) * p.heads_q * p.head_dim);
    if (handoff) dq_flags = region(sizeof(int32_t) * p.heads_q * row_groups(p));
  }
};

Params make_params(const sinkattn_problem& p, Pass pass) {
  Params k{};
  k.q = p.q;
  k.k = p.k;
  k.v = p.v;
  k.sinks = p.sinks;
  k.cu_seqlens_q = p.cu_seqlens_q;
  k.cu_seqlens_k = p.cu_seqlens_k;
  k.total_q = p.total_q;
  k.total_k = p.total_k;
  k.batch = p.batch;
  k.seqlen_q = p.seqlen_q;
  k.seqlen_k = p.seqlen_k;
  k.heads_q = p.heads_q;
  k.heads_kv = p.heads_kv;
  k.group = static_cast<int32_t>(p.heads_q / p.heads_kv);
  k.scale = p.scale;
  k.scale_log2 = p.scale * 1.4426950408889634f;
  const MaskBounds m = kernel_mask(p, pass);
  k.window_left = m.left;
  k.window_right = m.right;
  k.zigzag_rank = p.zigzag_rank;
  k.zigzag_world = p.zigzag_world;
  return k;
}

// Compute capability (major * 10 + minor) of a device, queried once per device (per_device.h);
// 0 for a device that does not answer, leaving no error for check_launch.
int device_arch(int device) {
  static std::atomic<int> arch[64] = {};
  return per_device(arch, device, [&] {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return major * 10 + minor;
  });
}

// Empty when the Hopper kernels run this problem, else why the portable ones do.
// SINKATTN_CUDA_PATH=sm80 forces the portable path (for comparisons and tests).
std::string sm90_refusal(const sinkattn_problem& p) {
#ifdef SINKATTN_WITH_SM90
  const char* forced = std::getenv("SINKATTN_CUDA_PATH");
  if (forced != nullptr && std::string(forced) == "sm80") return "SINKATTN_CUDA_PATH=sm80";
  const int arch = device_arch(p.device_index);
  if (arch != 90) return "the device is sm_" + std::to_string(arch) + ", the kernels need sm_90";
  if (!sm90::has_kernels(p.head_dim))
    return "head_dim " + std::to_string(p.head_dim) + " has no Hopper kernels (64, 128)";
  const sm90::TensorShape q = sm90::q_shape(p, p.head_dim), kv = sm90::kv_shape(p, p.head_dim);
  std::string why = sm90::tma_unsupported("problem.q", p.q, q);
  if (why.empty()) why = sm90::tma_unsupported("problem.k", p.k, kv);
  if (why.empty()) why = sm90::tma_unsupported("problem.v", p.v, kv);
  return why;
#else
  (void)p;
  return "the library was built without the sm_90a kernels (SINKATTN_HOPPER=OFF)";
#endif
}

std::string sm90_bwd_refusal(const sinkattn_bwd_params& b) {
  std::string why = sm90_refusal(b.problem);
#ifdef SINKATTN_WITH_SM90
  const sinkattn_problem& p = b.problem;
  if (why.empty()) why = sm90::tma_unsupported("dout", b.dout, sm90::q_shape(p, p.head_dim));
#endif
  return why;
}

// Whether the forward runs the packed-group kernel (decode-sized queries, any sm_80+ device);
// SINKATTN_PACKED_GROUP=0 turns it off, for comparisons.
bool packed_group(const sinkattn_problem& p) {
  static const bool on = [] {
    const char* v = std::getenv("SINKATTN_PACKED_GROUP");
    return v == nullptr || std::string(v) != "0";
  }();
  return on && sm80::packed_fits(p.seqlen_q, p.heads_q / p.heads_kv, (int)p.head_dim);
}

#ifdef SINKATTN_WITH_SM90
// Whether the Hopper forward runs its band kernel (narrow windows; sm90/tile_size.h).
bool sm90_fwd_band(const sinkattn_problem& p) {
  const MaskBounds m = kernel_mask(p, Pass::kForward);
  return sm90::use_band((int)p.head_dim, p.heads_q / p.heads_kv, m.left, m.right, p.zigzag_world,
                        p.seqlen_q);
}

// Whether a Hopper forward that runs takes its tiles from a counter in the workspace
// (sm90/tile_sched.h): the persistent kernels at head dim 64, unless the band kernel runs.
bool sm90_fwd_counted(const sinkattn_problem& p) {
  return sm90::fwd_persistent((int)p.head_dim) && !sm90_fwd_band(p);
}
#endif

// Whether the forward needs the tile counter: it runs a counted Hopper kernel. (Asked on every
// forward by the workspace check: the refusal's environment read and TMA checks come last, only
// for problems a counted kernel could take.)
bool fwd_tile_counter(const sinkattn_problem& p) {
#ifdef SINKATTN_WITH_SM90
  return sm90_fwd_counted(p) && !packed_group(p) && sm90_refusal(p).empty();
#else
  (void)p;
  return false;
#endif
}

// Key splits of the packed-group forward (1: no workspace).
int64_t packed_splits(const sinkattn_problem& p) {
  return sm80::PackedTile::splits(p.batch * p.heads_kv, p.seqlen_k, sm80::sm_count(p.device_index));
}

// Whether the Hopper backward hands dq from key block to key block (sm90/dq_handoff.h): narrow
// windows (its narrow kernel) in one band, in either mode, with its counters' slots in 32 bits
// (DqStep). SINKATTN_SM90_DQ_HANDOFF=0 turns it off, for measurements.
bool dq_handoff(const sinkattn_bwd_params& b) {
#ifdef SINKATTN_WITH_SM90
  static const bool on = [] {
    const char* v = std::getenv("SINKATTN_SM90_DQ_HANDOFF");
    return v == nullptr || std::string(v) != "0";
  }();
  const MaskBounds m = kernel_mask(b.problem, Pass::kBackward);
  return on && b.problem.zigzag_world == 0 && sm90::fwd_short_rows(m.left, m.right) &&
         row_groups(b.problem) <= INT32_MAX && sm90_bwd_refusal(b).empty();
#else
  (void)b;
  return false;
#endif
}

// Whether the Hopper backward's dq comes from the band dq kernel (sm90/bwd_band_dq_kernel.h):
// where the band forward applies, in either mode (its dq has a fixed order).
bool band_dq(const sinkattn_bwd_params& b) {
#ifdef SINKATTN_WITH_SM90
  const sinkattn_problem& p = b.problem;
  const MaskBounds m = kernel_mask(p, Pass::kBackward);
  return sm90::use_band_dq((int)p.head_dim, p.heads_q / p.heads_kv, m.left, m.right,
                           p.zigzag_world, p.seqlen_q) &&
         sm90_bwd_refusal(b).empty();
#else
  (void)b;
  return false;
#endif
}

std::string describe(const std::string& why) {
  return why.empty() ? "cuda sm90 (wgmma, TMA)" : "cuda sm80 (portable; sm90 not used: " + why + ")";
}

}  // namespace

bool compiled() { return true; }

std::string fwd_path(const sinkattn_problem& p) {
  if (packed_group(p)) return "cuda packed group (the query heads of a kv head in one tile)";
  const std::string why = sm90_refusal(p);
#ifdef SINKATTN_WITH_SM90
  if (why.empty() && sm90_fwd_band(p))
    return "cuda sm90 band (wgmma, TMA; a warpgroup holds 16 positions of 4 query heads)";
#endif
  return describe(why);
}
std::string bwd_path(const sinkattn_bwd_params& b) {
  if (band_dq(b))
    return "cuda sm90 (wgmma, TMA; dq by the band kernel: a warpgroup holds 16 positions of 4 "
           "query heads)";
  return describe(sm90_bwd_refusal(b));
}

void check_supported(const sinkattn_problem& p) {
  auto refuse = [](const std::string& msg) { throw Error(SINKATTN_ERROR_NOT_SUPPORTED, msg); };
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) cuda_fail("sinkattn: cudaGetDeviceCount", err);
  if (p.device_index >= count)
    throw Error(SINKATTN_ERROR_INVALID_ARGUMENT,
                "problem.device_index: got " + std::to_string(p.device_index) + ", expected < " +
                    std::to_string(count) + " (the number of CUDA devices)");
  int major = 0, minor = 0, smem = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p.device_index);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, p.device_index);
  err = cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, p.device_index);
  if (err != cudaSuccess) cuda_fail("sinkattn: cudaDeviceGetAttribute", err);
  if (major < 8)
    refuse("problem.device_index: CUDA device " + std::to_string(p.device_index) +
           " has compute capability " + std::to_string(major) + "." + std::to_string(minor) +
           " (sm_" + std::to_string(major * 10 + minor) +
           "); the sinkattn CUDA kernels need 8.0 (sm_80) or newer");
  if (smem < sm80::kMaxSmemBytes)
    refuse("problem.device_index: CUDA device " + std::to_string(p.device_index) + " offers " +
           std::to_string(smem) + " bytes of shared memory per block, the kernels need " +
           std::to_string(sm80::kMaxSmemBytes));
  if (p.dtype != SINKATTN_FLOAT16 && p.dtype != SINKATTN_BFLOAT16)
    refuse("problem.dtype: got " + std::to_string(p.dtype) +
           ", the CUDA backend accepts float16 (1) and bfloat16 (2)");
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 96 && p.head_dim != 128 &&
      p.head_dim != 256)
    refuse("problem.head_dim: got " + std::to_string(p.head_dim) +
           ", the CUDA backend accepts 32, 64, 96, 128 and 256");
  constexpr int64_t kGridMax = 65535;  // gridDim.y (query / kv heads) and gridDim.z (batch)
  if (p.heads_q > kGridMax || p.batch > kGridMax)
    refuse("problem.heads_q / problem.batch: got " + std::to_string(p.heads_q) + " / " +
           std::to_string(p.batch) + ", the CUDA backend accepts at most 65535 of each");
  if (p.seqlen_q > (int64_t{1} << 36) || p.seqlen_k > (int64_t{1} << 36))
    refuse("problem.seqlen_q / seqlen_k: longer than the CUDA grid can cover");
  // The tensors must live on the named device (or be managed memory it can reach).
  const struct {
    const char* name;
    const void* ptr;
  } tensors[] = {{"problem.q.data", p.q.data}, {"problem.k.data", p.k.data},
                 {"problem.v.data", p.v.data}};
  for (const auto& t : tensors) {
    if (t.ptr == nullptr) continue;
    cudaPointerAttributes attr{};
    err = cudaPointerGetAttributes(&attr, t.ptr);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error of a failed query
      attr.type = cudaMemoryTypeUnregistered;
    }
    const bool device_ok = attr.type == cudaMemoryTypeManaged ||
                           (attr.type == cudaMemoryTypeDevice && attr.device == p.device_index);
    if (!device_ok)
      throw Error(SINKATTN_ERROR_INVALID_ARGUMENT,
                  std::string(t.name) + ": expected memory of CUDA device " +
                      std::to_string(p.device_index) +
                      (attr.type == cudaMemoryTypeDevice
                           ? ", got memory of device " + std::to_string(attr.device)
                           : ", got host memory"));
  }
}

size_t fwd_workspace_size(const sinkattn_fwd_params& f) {
  const sinkattn_problem& p = f.problem;
  if (fwd_tile_counter(p)) return 16;  // one uint32_t, the workspace's 16-byte alignment
  const int64_t splits = packed_group(p) ? packed_splits(p) : 1;
  if (splits == 1) return 0;
  return (size_t)splits * sm80::PackedTile::partial_floats(p.batch * p.heads_kv, (int)p.head_dim) *
         sizeof(float);
}

size_t bwd_workspace_size(const sinkattn_bwd_params& p) { return BwdWorkspace(p).total; }

namespace {

void launch_fwd_kernels(const sinkattn_fwd_params& f) {
  const sinkattn_problem& p = f.problem;
  Params k = make_params(p, Pass::kForward);
  k.out = f.out;
  k.lse = f.lse;
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  if (packed_group(p)) {
    k.packed_splits = (int32_t)packed_splits(p);
    k.packed_partial = static_cast<float*>(f.workspace);
    dispatch(p, [&](auto type, auto dim) {
      sm80::launch_fwd_packed<decltype(type), decltype(dim)::value>(k, stream);
    });
    return;
  }
#ifdef SINKATTN_WITH_SM90
  if (sm90_refusal(p).empty()) {
    if (sm90_fwd_counted(p)) k.tile_counter = static_cast<uint32_t*>(f.workspace);
    dispatch(p, [&](auto type, auto dim) {
      if constexpr (sm90::has_kernels(decltype(dim)::value))
        sm90::launch_fwd<decltype(type), decltype(dim)::value>(k, stream);
    });
    return;
  }
#endif
  dispatch(p, [&](auto type, auto dim) {
    sm80::launch_fwd<decltype(type), decltype(dim)::value>(k, stream);
  });
}

void launch_bwd_kernels(const sinkattn_bwd_params& b) {
  const sinkattn_problem& p = b.problem;
  Params k = make_params(p, Pass::kBackward);
  k.out = b.out;
  k.dout = b.dout;
  k.dq = b.dq;
  k.dk = b.dk;
  k.dv = b.dv;
  k.lse = const_cast<float*>(b.lse);  // read only in the backward
  k.dsink = p.sinks ? b.dsink : nullptr;
  const BwdWorkspace ws(b);
  char* base = static_cast<char*>(b.workspace);
  k.delta = reinterpret_cast<float*>(base + ws.delta);
  k.dsink_partial = reinterpret_cast<float*>(base + ws.dsink);
  k.dsink_blocks = dsink_blocks(p);
  k.row_groups = row_groups(p);
  k.dq_atomic = b.deterministic || ws.band ? 0 : 1;
  k.dq_accum = (b.deterministic && !ws.handoff) || ws.band
                   ? nullptr
                   : reinterpret_cast<float*>(base + ws.dq_accum);
  k.band_dq = ws.band ? 1 : 0;
  k.dq_flags = ws.handoff ? reinterpret_cast<int32_t*>(base + ws.dq_flags) : nullptr;
  const cudaStream_t stream = static_cast<cudaStream_t>(p.stream);
  if (k.dsink != nullptr && is_varlen(p)) {  // the slots between sequences, which no block writes
    const cudaError_t err =
        cudaMemsetAsync(k.dsink_partial, 0, sizeof(float) * p.heads_q * k.row_groups, stream);
    if (err != cudaSuccess) cuda_fail("sinkattn backward: clearing the dsink partials", err);
  }
#ifdef SINKATTN_WITH_SM90
  if (sm90_bwd_refusal(b).empty()) {
    dispatch(p, [&](auto type, auto dim) {
      if constexpr (sm90::has_kernels(decltype(dim)::value))
        sm90::launch_bwd<decltype(type), decltype(dim)::value>(k, stream);
    });
    return;
  }
#endif
  dispatch(p, [&](auto type, auto dim) {
    sm80::launch_bwd<decltype(type), decltype(dim)::value>(k, stream);
  });
}

// The packed call's guard (offsets_guard.h), without its outputs.
OffsetsGuard offsets_guard(const sinkattn_problem& p) {
  OffsetsGuard g;
  g.lists = {p.cu_seqlens_q, p.cu_seqlens_k, p.batch,   p.seqlen_q, p.seqlen_k, p.total_q,
             p.total_k,      p.zigzag_world};
  g.head_dim = p.head_dim;
  g.nan = p.dtype == SINKATTN_BFLOAT16 ? 0x7fc0 : 0x7e00;
  g.heads_q = p.heads_q;
  g.fault = fault_record();
  g.device = p.device_index;
  return g;
}

}  // namespace

void fwd(const sinkattn_fwd_params& f) {
  const sinkattn_problem& p = f.problem;
  if (p.seqlen_q == 0 && !is_varlen(p)) return;  // no query rows, nothing to write
  DeviceGuard guard(p.device_index);
  if (p.seqlen_q > 0) launch_fwd_kernels(f);
  if (!is_varlen(p)) return;
  OffsetsGuard g = offsets_guard(p);
  g.rows[0] = {f.out, p.heads_q, false};
  g.lse = f.lse;
  launch_offsets_guard(g, static_cast<cudaStream_t>(p.stream));
}

void bwd(const sinkattn_bwd_params& b) {
  const sinkattn_problem& p = b.problem;
  DeviceGuard guard(p.device_index);
  launch_bwd_kernels(b);
  if (!is_varlen(p)) return;
  OffsetsGuard g = offsets_guard(p);
  g.rows[0] = {b.dq, p.heads_q, false};
  g.rows[1] = {b.dk, p.heads_kv, true};
  g.rows[2] = {b.dv, p.heads_kv, true};
  g.dsink = p.sinks ? b.dsink : nullptr;
  launch_offsets_guard(g, static_cast<cudaStream_t>(p.stream));
}

}  // namespace cuda

namespace cuda::sm80 {
void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) cuda_fail(what, err);
}

namespace {
// What the launchers size grids and tiles by, queried once per device (-1: the current one).
struct DeviceLimits {
  int sms = 0, smem_block = 0, smem_sm = 0;  // SMs; opt-in shared memory per block and per SM
};

const DeviceLimits& device_limits(int device) {
  static DeviceLimits limits[64];
  static std::once_flag queried[64];  // no thread reads a device's limits half written
  static const DeviceLimits none{1, 0, 0};
  if (device < 0) cudaGetDevice(&device);
  if (device < 0 || device >= 64) return none;
  DeviceLimits& l = limits[device];
  std::call_once(queried[device], [&] {
    cudaDeviceGetAttribute(&l.smem_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    cudaDeviceGetAttribute(&l.smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    l.sms = sms > 0 ? sms : 1;
  });
  return l;
}
}  // namespace

int sm_count(int device) { return device_limits(device).sms; }

namespace {
bool forced_small_tiles() {
  static const bool forced = [] {
    const char* v = std::getenv("SINKATTN_SM80_TILES");
    return v != nullptr && std::string(v) == "small";
  }();
  return forced;
}
}  // namespace

bool large_tiles(Kernel k, int d) {
  if (forced_small_tiles()) return false;
  const DeviceLimits& l = device_limits(-1);
  return large_tiles_fit(k, d, l.smem_block, l.smem_sm);
}

bool packed_deep(int d, int64_t blocks) {
  if (forced_small_tiles()) return false;
  const DeviceLimits& l = device_limits(-1);
  return PackedTile::deep(d, blocks, l.sms, l.smem_block, l.smem_sm);
}
}  // namespace cuda::sm80

}  // namespace sinkattn
