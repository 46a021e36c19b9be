// The C ABI: argument validation with reasons, then dispatch to a backend by device.
// Every rule below has a refusal test in tests/cpp/test_validation.cpp; keep them in step.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <utility>

#include "backend.h"
#include "sinkattn/sinkattn.h"

namespace sinkattn {
namespace {

thread_local std::string g_last_error;

template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

// Every refusal reads "<entry>: <argument>: got <value>, <what is accepted>". The argument's name
// is taken as given (a literal stays a pointer): a passing check builds no string.
struct Checker {
  const char* entry;
  template <class Arg, class... Args>
  [[noreturn]] void fail(sinkattn_status status, const Arg& arg, Args&&... why) const {
    throw Error(status, cat(entry, ": ", arg, ": ", std::forward<Args>(why)...));
  }
  template <class Arg, class... Args>
  void require(bool ok, const Arg& arg, Args&&... why) const {
    if (!ok) fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, std::forward<Args>(why)...);
  }
};

// No tensor of the problem may hold this many elements (a bound far beyond any real input that
// keeps every byte count and offset inside int64).
constexpr __int128 kMaxElements = static_cast<__int128>(1) << 48;

int64_t dtype_bytes(int32_t dtype) { return dtype == SINKATTN_FLOAT32 ? 4 : 2; }

const char* dtype_name(int32_t dtype) {
  switch (dtype) {
    case SINKATTN_FLOAT32: return "float32";
    case SINKATTN_FLOAT16: return "float16";
    case SINKATTN_BFLOAT16: return "bfloat16";
    default: return "unknown";
  }
}

bool aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// One dimension of a strided view: its extent and its stride in elements.
struct Dim {
  int64_t extent;
  int64_t stride;
  const char* name;
};

// Names that a passing check never prints, so they are kept as parts and joined only by a
// refusal's message (the per-sequence checks run once per packed sequence).
// A tensor's field: "problem.q" and "row_stride".
struct Field {
  const char* tensor;
  const char* field;
};
std::ostream& operator<<(std::ostream& os, const Field& f) {
  return os << f.tensor << "." << f.field;
}
// An array's entry: "problem.cu_seqlens_q" and 3.
struct Entry {
  const char* array;
  int64_t index;
};
std::ostream& operator<<(std::ostream& os, const Entry& e) {
  return os << e.array << "[" << e.index << "]";
}
// A sequence's query or key length (side "q" / "k"): seqlen_q / seqlen_k of a fixed-length
// problem (seq < 0), or the cu_seqlens entry that ends packed sequence seq.
struct Length {
  const char* side;
  int64_t seq;
};
std::ostream& operator<<(std::ostream& os, const Length& l) {
  if (l.seq < 0) return os << "problem.seqlen_" << l.side;
  return os << "problem.cu_seqlens_" << l.side << "[" << l.seq + 1 << "]";
}
// " (sequence seq)" after a packed sequence's length; nothing for a fixed-length problem.
struct InSequence {
  int64_t seq;
};
std::ostream& operator<<(std::ostream& os, const InSequence& s) {
  return s.seq < 0 ? os : os << " (sequence " << s.seq << ")";
}

// Layout of a (batch, row, head, head_dim) tensor of the problem, checked the same way for
// inputs and outputs; outputs must in addition not overlap themselves.
struct TensorCheck {
  const Checker& c;
  const sinkattn_problem& p;

  void operator()(const char* name, const sinkattn_tensor& t, int64_t rows, int64_t heads,
                  bool is_output) const {
    const bool varlen = is_varlen(p);
    Dim dims[3] = {{varlen ? 1 : p.batch, t.batch_stride, "batch_stride"},
                   {rows, t.row_stride, "row_stride"},
                   {heads, t.head_stride, "head_stride"}};
    const int64_t numel = dims[0].extent * rows * heads * p.head_dim;
    if (numel == 0) return;  // nothing is read or written
    c.require(t.data != nullptr, Field{name, "data"}, "got NULL, expected a pointer to ", numel,
              " elements");
    const int64_t elem = dtype_bytes(p.dtype);
    // CUDA kernels move 16-byte vectors: the base and every stride that is used must keep them
    // aligned. Strides of extent-1 dimensions are never used, so they are not checked.
    const int64_t align = p.device_type == SINKATTN_DEVICE_CUDA ? 16 : elem;
    c.require(aligned(t.data, align), Field{name, "data"}, "got address ", t.data, ", expected ",
              align, "-byte alignment");
    __int128 last = p.head_dim - 1;  // offset of the last element
    for (const Dim& d : dims) {
      if (d.extent <= 1) continue;
      c.require(d.stride >= 0, Field{name, d.name}, "got ", d.stride,
                ", expected a non-negative stride");
      c.require(static_cast<__int128>(d.stride) * elem % align == 0, Field{name, d.name}, "got ", d.stride,
                ", expected a multiple of ", align / elem, " elements (", align,
                "-byte alignment) for ", dtype_name(p.dtype), " on this device");
      last += static_cast<__int128>(d.extent - 1) * d.stride;
    }
    c.require(last < (static_cast<__int128>(1) << 62), name, "spans more than 2^62 elements");
    if (is_output) check_no_self_overlap(name, dims);
  }

  // Sufficient test: with the used dimensions sorted by stride, each stride must step past
  // everything the smaller dimensions (head_dim included) span.
  void check_no_self_overlap(const char* name, Dim (&dims)[3]) const {
    Dim sorted[4] = {{p.head_dim, 1, "head_dim"}, dims[0], dims[1], dims[2]};
    int n = 0;
    for (const Dim& d : sorted)
      if (d.extent > 1) sorted[n++] = d;
    for (int i = 1; i < n; ++i)
      for (int j = i; j > 0 && sorted[j].stride < sorted[j - 1].stride; --j)
        std::swap(sorted[j], sorted[j - 1]);
    __int128 span = 0;
    for (int i = 0; i < n; ++i) {
      c.require(sorted[i].stride > span, Field{name, sorted[i].name}, "got ", sorted[i].stride,
                ", which makes the output overlap itself (expected more than ",
                static_cast<int64_t>(span), ")");
      span += static_cast<__int128>(sorted[i].extent - 1) * sorted[i].stride;
    }
  }
};

// fp32 arrays (lse, sinks, dsink) and int32 cu_seqlens: non-null, 4-byte aligned.
void check_array(const Checker& c, const char* name, const void* ptr, int64_t count) {
  if (count == 0) return;
  c.require(ptr != nullptr, name, "got NULL, expected ", count, " 4-byte elements");
  c.require(aligned(ptr, 4), name, "got address ", ptr, ", expected 4-byte alignment");
}

// The refusal of a broken rule of sequence offsets or lengths (backend.h's OffsetsRule), worded
// once for the CPU's checks below and for the report of a CUDA call's fault. arg names the offset
// (or seqlen_q / seqlen_k); got and bound as OffsetsRule says; seq: the packed sequence of a
// zigzag rule, or -1 (InSequence); world: zigzag_world.
template <class Arg>
[[noreturn]] void fail_offsets(const Checker& c, const Arg& arg, cuda::OffsetsRule rule,
                               int64_t got, int64_t bound = 0, int64_t seq = -1,
                               int64_t world = 0) {
  using R = cuda::OffsetsRule;
  switch (rule) {
    case R::kNegativeStart:
      c.fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, "got ", got, ", expected >= 0");
    case R::kDecreasing:
      c.fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, "got ", got, " after ", bound,
             ", expected non-decreasing offsets");
    case R::kTooLong:
      c.fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, "got a sequence of length ", got,
             ", expected at most the max length ", bound, " (problem.seqlen_q / seqlen_k)");
    case R::kPastRows:
      c.fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, "got ", got,
             ", expected at most the row count ", bound, " (problem.total_q / total_k)");
    case R::kOddQueryLength:
      c.fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, "got a query length of ", got,
             InSequence{seq}, " with zigzag_world ", world,
             ", expected an even length (two zigzag chunks)");
    case R::kZigzagKeys:
      c.fail(SINKATTN_ERROR_INVALID_ARGUMENT, arg, "got a key length of ", got, InSequence{seq},
             ", expected zigzag_world x query length = ", world, " x ", bound, " = ",
             world * bound, " (the gathered sequence)");
    case R::kNone: break;
  }
  c.fail(SINKATTN_ERROR_INTERNAL, arg, "an offsets fault of unknown rule ", int(rule));
}

// Fused zigzag CP: the query rows of a sequence are two equal chunks and its keys are all 2W
// chunks (see sinkattn_problem). seq: the packed sequence whose lengths these are, or -1 for
// seqlen_q / seqlen_k (Length).
void check_zigzag_lengths(const Checker& c, const sinkattn_problem& p, int64_t len_q,
                          int64_t len_k, int64_t seq) {
  using R = cuda::OffsetsRule;
  if (len_q % 2 != 0)
    fail_offsets(c, Length{"q", seq}, R::kOddQueryLength, len_q, 0, seq, p.zigzag_world);
  if (len_k != int64_t{p.zigzag_world} * len_q)
    fail_offsets(c, Length{"k", seq}, R::kZigzagKeys, len_k, len_q, seq, p.zigzag_world);
}

void check_zigzag(const Checker& c, const sinkattn_problem& p) {
  c.require(p.zigzag_world >= 0, "problem.zigzag_world", "got ", p.zigzag_world,
            ", expected 0 (off) or a context-parallel world size >= 1");
  if (p.zigzag_world == 0) return;
  c.require(p.zigzag_rank >= 0 && p.zigzag_rank < p.zigzag_world, "problem.zigzag_rank", "got ",
            p.zigzag_rank, ", expected 0..", p.zigzag_world - 1, " (zigzag_world is ",
            p.zigzag_world, ")");
  if (p.cu_seqlens_q == nullptr)
    check_zigzag_lengths(c, p, p.seqlen_q, p.seqlen_k, -1);
}

// read_offsets: also check the contents of CPU cu_seqlens (the size queries do not read them).
void check_problem(const Checker& c, const sinkattn_problem& p, bool read_offsets = true) {
  c.require(p.device_type == SINKATTN_DEVICE_CPU || p.device_type == SINKATTN_DEVICE_CUDA,
            "problem.device_type", "got ", p.device_type, ", expected 0 (CPU) or 1 (CUDA)");
  c.require(p.dtype == SINKATTN_FLOAT32 || p.dtype == SINKATTN_FLOAT16 ||
                p.dtype == SINKATTN_BFLOAT16,
            "problem.dtype", "got ", p.dtype, ", expected 0 (float32), 1 (float16) or 2 (bfloat16)");
  c.require(p.head_dim == 32 || p.head_dim == 64 || p.head_dim == 96 || p.head_dim == 128 ||
                p.head_dim == 256,
            "problem.head_dim", "got ", p.head_dim, ", expected 32, 64, 96, 128 or 256");
  c.require(p.batch >= 1, "problem.batch", "got ", p.batch, ", expected >= 1");
  c.require(p.seqlen_q >= 0, "problem.seqlen_q", "got ", p.seqlen_q, ", expected >= 0");
  c.require(p.seqlen_k >= 0, "problem.seqlen_k", "got ", p.seqlen_k, ", expected >= 0");
  c.require(p.heads_q >= 1, "problem.heads_q", "got ", p.heads_q, ", expected >= 1");
  c.require(p.heads_kv >= 1, "problem.heads_kv", "got ", p.heads_kv, ", expected >= 1");
  c.require(p.heads_q % p.heads_kv == 0, "problem.heads_q", "got ", p.heads_q,
            " with heads_kv ", p.heads_kv, ", expected a multiple of heads_kv (GQA)");
  // Positions are int32 in cu_seqlens and in the kernels; element counts must fit a byte count.
  constexpr int64_t kMaxRows = INT32_MAX;
  c.require(p.seqlen_q <= kMaxRows, "problem.seqlen_q", "got ", p.seqlen_q, ", expected <= ", kMaxRows);
  c.require(p.seqlen_k <= kMaxRows, "problem.seqlen_k", "got ", p.seqlen_k, ", expected <= ", kMaxRows);
  c.require(p.heads_q <= kMaxRows, "problem.heads_q", "got ", p.heads_q, ", expected <= ", kMaxRows);
  c.require(p.batch <= kMaxRows, "problem.batch", "got ", p.batch, ", expected <= ", kMaxRows);
  c.require(std::isfinite(p.scale) && p.scale > 0, "problem.scale", "got ", p.scale,
            ", expected a finite value > 0");
  // Bounded like positions, so that position +- window never overflows in a kernel.
  c.require(p.window_left >= -1 && p.window_left <= kMaxRows, "problem.window_left", "got ",
            p.window_left, ", expected -1 (unbounded) or 0..", kMaxRows);
  c.require(p.window_right >= -1 && p.window_right <= kMaxRows, "problem.window_right", "got ",
            p.window_right, ", expected -1 (unbounded) or 0..", kMaxRows);
  c.require(!p.causal || p.window_right <= 0, "problem.window_right", "got ", p.window_right,
            " with causal set, expected -1 or 0");

  check_zigzag(c, p);

  const bool varlen = p.cu_seqlens_q != nullptr;
  c.require(varlen == (p.cu_seqlens_k != nullptr), varlen ? "problem.cu_seqlens_k" : "problem.cu_seqlens_q",
            "got NULL while the other cu_seqlens is set, expected both or neither");
  int64_t rows_q = p.seqlen_q, rows_k = p.seqlen_k;
  if (!varlen) {
    c.require(static_cast<__int128>(p.batch) * p.seqlen_q * p.heads_q * p.head_dim < kMaxElements,
              "problem.seqlen_q", "got batch ", p.batch, " x seqlen_q ", p.seqlen_q, " x heads_q ",
              p.heads_q, " x head_dim ", p.head_dim, " elements, expected fewer than 2^48");
    c.require(static_cast<__int128>(p.batch) * p.seqlen_k * p.heads_kv * p.head_dim < kMaxElements,
              "problem.seqlen_k", "got batch ", p.batch, " x seqlen_k ", p.seqlen_k, " x heads_kv ",
              p.heads_kv, " x head_dim ", p.head_dim, " elements, expected fewer than 2^48");
  } else {
    c.require(p.total_q >= 0, "problem.total_q", "got ", p.total_q, ", expected >= 0");
    c.require(p.total_k >= 0, "problem.total_k", "got ", p.total_k, ", expected >= 0");
    check_array(c, "problem.cu_seqlens_q", p.cu_seqlens_q, p.batch + 1);
    check_array(c, "problem.cu_seqlens_k", p.cu_seqlens_k, p.batch + 1);
    c.require(p.total_q <= kMaxRows, "problem.total_q", "got ", p.total_q, ", expected <= ", kMaxRows);
    c.require(p.total_k <= kMaxRows, "problem.total_k", "got ", p.total_k, ", expected <= ", kMaxRows);
    c.require(static_cast<__int128>(p.total_q) * p.heads_q * p.head_dim < kMaxElements,
              "problem.total_q", "got ", p.total_q, " rows x ", p.heads_q, " heads x ", p.head_dim,
              " elements, expected fewer than 2^48");
    c.require(static_cast<__int128>(p.total_k) * p.heads_kv * p.head_dim < kMaxElements,
              "problem.total_k", "got ", p.total_k, " rows x ", p.heads_kv, " heads x ",
              p.head_dim, " elements, expected fewer than 2^48");
    rows_q = p.total_q;
    rows_k = p.total_k;
    if (p.device_type == SINKATTN_DEVICE_CPU && read_offsets) {
      // Host memory: check the offsets themselves (the CUDA kernels clamp them instead).
      struct {
        const char* name;
        const int32_t* cu;
        int64_t total, max_len;
      } lists[2] = {{"problem.cu_seqlens_q", p.cu_seqlens_q, p.total_q, p.seqlen_q},
                    {"problem.cu_seqlens_k", p.cu_seqlens_k, p.total_k, p.seqlen_k}};
      using R = cuda::OffsetsRule;
      for (const auto& l : lists) {
        if (l.cu[0] < 0) fail_offsets(c, Entry{l.name, 0}, R::kNegativeStart, l.cu[0]);
        for (int64_t b = 0; b < p.batch; ++b) {
          const int64_t len = int64_t(l.cu[b + 1]) - l.cu[b];
          if (len < 0) fail_offsets(c, Entry{l.name, b + 1}, R::kDecreasing, l.cu[b + 1], l.cu[b]);
          if (len > l.max_len) fail_offsets(c, Entry{l.name, b + 1}, R::kTooLong, len, l.max_len);
        }
        if (l.cu[p.batch] > l.total)
          fail_offsets(c, Entry{l.name, p.batch}, R::kPastRows, l.cu[p.batch], l.total);
      }
      if (p.zigzag_world > 0)
        for (int64_t b = 0; b < p.batch; ++b)
          check_zigzag_lengths(c, p, int64_t(p.cu_seqlens_q[b + 1]) - p.cu_seqlens_q[b],
                               int64_t(p.cu_seqlens_k[b + 1]) - p.cu_seqlens_k[b], b);
    }
  }
  const TensorCheck tensor{c, p};
  tensor("problem.q", p.q, rows_q, p.heads_q, false);
  tensor("problem.k", p.k, rows_k, p.heads_kv, false);
  tensor("problem.v", p.v, rows_k, p.heads_kv, false);
  check_array(c, "problem.sinks", p.sinks, p.sinks ? p.heads_q : 0);
  if (p.device_type == SINKATTN_DEVICE_CUDA) {
    c.require(p.device_index >= 0, "problem.device_index", "got ", p.device_index,
              ", expected a CUDA device ordinal >= 0");
    if (!cuda::compiled())
      c.fail(SINKATTN_ERROR_NOT_SUPPORTED, "problem.device_type",
             "got CUDA, but this build of libsinkattn has no CUDA backend (nvcc was not found "
             "when it was built)");
    if (p.dtype == SINKATTN_FLOAT32)
      c.fail(SINKATTN_ERROR_NOT_SUPPORTED, "problem.dtype",
             "got float32, the CUDA backend accepts float16 and bfloat16");
    cuda::check_supported(p);
  }
}

// Rows of q (and out, lse) and of k and v the tensors hold.
int64_t q_rows(const sinkattn_problem& p) { return is_varlen(p) ? p.total_q : p.seqlen_q; }
int64_t lse_count(const sinkattn_problem& p) {
  return p.heads_q * (is_varlen(p) ? p.total_q : p.batch * p.seqlen_q);
}

void check_workspace(const Checker& c, const void* ws, size_t have, size_t need) {
  if (need == 0) return;
  c.require(have >= need, "workspace_size", "got ", have, " bytes, expected at least ", need);
  c.require(ws != nullptr, "workspace", "got NULL, expected ", need, " bytes");
  c.require(aligned(ws, 16), "workspace", "got address ", ws, ", expected 16-byte alignment");
}

size_t fwd_workspace(const sinkattn_fwd_params& p) {
  return p.problem.device_type == SINKATTN_DEVICE_CUDA ? cuda::fwd_workspace_size(p)
                                                        : cpu::fwd_workspace_size(p);
}
size_t bwd_workspace(const sinkattn_bwd_params& p) {
  return p.problem.device_type == SINKATTN_DEVICE_CUDA ? cuda::bwd_workspace_size(p)
                                                        : cpu::bwd_workspace_size(p);
}

// Everything but the workspace, which the size query skips.
void check_fwd(const Checker& c, const sinkattn_fwd_params* params) {
  c.require(params != nullptr, "params", "got NULL, expected a sinkattn_fwd_params");
  const sinkattn_problem& p = params->problem;
  check_problem(c, p);
  TensorCheck{c, p}("out", params->out, q_rows(p), p.heads_q, true);
  if (params->lse) check_array(c, "lse", params->lse, lse_count(p));
}

void check_bwd(const Checker& c, const sinkattn_bwd_params* params) {
  c.require(params != nullptr, "params", "got NULL, expected a sinkattn_bwd_params");
  const sinkattn_problem& p = params->problem;
  check_problem(c, p);
  const TensorCheck tensor{c, p};
  const int64_t rows_k = is_varlen(p) ? p.total_k : p.seqlen_k;
  tensor("out", params->out, q_rows(p), p.heads_q, false);
  tensor("dout", params->dout, q_rows(p), p.heads_q, false);
  check_array(c, "lse", params->lse, lse_count(p));
  tensor("dq", params->dq, q_rows(p), p.heads_q, true);
  tensor("dk", params->dk, rows_k, p.heads_kv, true);
  tensor("dv", params->dv, rows_k, p.heads_kv, true);
  if (params->dsink) {
    c.require(p.sinks != nullptr, "dsink", "got a pointer while problem.sinks is NULL, expected "
              "NULL (there is no sink to differentiate)");
    check_array(c, "dsink", params->dsink, p.heads_q);
  }
}

// A packed CUDA call's broken offsets, found by its offsets guard on the device after the call
// had returned (backend.h): the next CUDA call on any thread, or sinkattn_deferred_error, fails
// with it, worded as the CPU's check of the same rule (fail_offsets).
void report_offsets_fault(const Checker& c) {
  cuda::OffsetsFault f;
  if (!cuda::take_offsets_fault(&f)) return;
  const char* list = f.keys ? "problem.cu_seqlens_k" : "problem.cu_seqlens_q";
  fail_offsets(c,
               cat(Entry{list, f.entry}, " of a packed call enqueued earlier on CUDA device ",
                   f.device, " (checked on the device after that call, whose outputs are NaN)"),
               f.rule, f.got, f.bound, f.entry - 1, f.world);
}

template <class F>
sinkattn_status guarded(F&& f) {
  try {
    f();
    return SINKATTN_OK;
  } catch (const Error& e) {
    g_last_error = e.what();
    return e.status;
  } catch (const std::exception& e) {
    g_last_error = cat("sinkattn: internal error: ", e.what());
    return SINKATTN_ERROR_INTERNAL;
  } catch (...) {
    g_last_error = "sinkattn: internal error: unknown exception";
    return SINKATTN_ERROR_INTERNAL;
  }
}

}  // namespace
}  // namespace sinkattn

using namespace sinkattn;

extern "C" {

int sinkattn_version(void) {
  return SINKATTN_VERSION_MAJOR * 10000 + SINKATTN_VERSION_MINOR * 100 + SINKATTN_VERSION_PATCH;
}
int sinkattn_abi_version(void) { return SINKATTN_ABI_VERSION; }
const char* sinkattn_last_error(void) { return g_last_error.c_str(); }
int sinkattn_has_cuda(void) { return cuda::compiled() ? 1 : 0; }

sinkattn_status sinkattn_deferred_error(void) {
  return guarded([] { report_offsets_fault(Checker{"sinkattn_deferred_error"}); });
}

sinkattn_status sinkattn_fwd_can_implement(const sinkattn_fwd_params* params) {
  return guarded([&] {
    const Checker c{"sinkattn_fwd_can_implement"};
    check_fwd(c, params);
    check_workspace(c, params->workspace, params->workspace_size, fwd_workspace(*params));
  });
}

sinkattn_status sinkattn_bwd_can_implement(const sinkattn_bwd_params* params) {
  return guarded([&] {
    const Checker c{"sinkattn_bwd_can_implement"};
    check_bwd(c, params);
    check_workspace(c, params->workspace, params->workspace_size, bwd_workspace(*params));
  });
}

const char* sinkattn_fwd_kernel(const sinkattn_fwd_params* params) {
  thread_local std::string text;
  const sinkattn_status st = guarded([&] {
    const Checker c{"sinkattn_fwd_kernel"};
    check_fwd(c, params);
    const sinkattn_problem& p = params->problem;
    text = p.device_type == SINKATTN_DEVICE_CUDA ? cuda::fwd_path(p) : "cpu";
  });
  return st == SINKATTN_OK ? text.c_str() : nullptr;
}

const char* sinkattn_bwd_kernel(const sinkattn_bwd_params* params) {
  thread_local std::string text;
  const sinkattn_status st = guarded([&] {
    const Checker c{"sinkattn_bwd_kernel"};
    check_bwd(c, params);
    text = params->problem.device_type == SINKATTN_DEVICE_CUDA ? cuda::bwd_path(*params) : "cpu";
  });
  return st == SINKATTN_OK ? text.c_str() : nullptr;
}

sinkattn_status sinkattn_fwd_workspace_size(const sinkattn_fwd_params* params, size_t* bytes) {
  return guarded([&] {
    const Checker c{"sinkattn_fwd_workspace_size"};
    c.require(bytes != nullptr, "bytes", "got NULL, expected a size_t to write to");
    c.require(params != nullptr, "params", "got NULL, expected a sinkattn_fwd_params");
    check_problem(c, params->problem, /*read_offsets=*/false);
    *bytes = fwd_workspace(*params);
  });
}

sinkattn_status sinkattn_bwd_workspace_size(const sinkattn_bwd_params* params, size_t* bytes) {
  return guarded([&] {
    const Checker c{"sinkattn_bwd_workspace_size"};
    c.require(bytes != nullptr, "bytes", "got NULL, expected a size_t to write to");
    c.require(params != nullptr, "params", "got NULL, expected a sinkattn_bwd_params");
    check_problem(c, params->problem, /*read_offsets=*/false);
    *bytes = bwd_workspace(*params);
  });
}

sinkattn_status sinkattn_fwd(const sinkattn_fwd_params* params) {
  return guarded([&] {
    const Checker c{"sinkattn_fwd"};
    check_fwd(c, params);
    check_workspace(c, params->workspace, params->workspace_size, fwd_workspace(*params));
    if (params->problem.device_type == SINKATTN_DEVICE_CUDA) {
      report_offsets_fault(c);
      cuda::fwd(*params);
    } else {
      cpu::fwd(*params);
    }
  });
}

sinkattn_status sinkattn_bwd(const sinkattn_bwd_params* params) {
  return guarded([&] {
    const Checker c{"sinkattn_bwd"};
    check_bwd(c, params);
    check_workspace(c, params->workspace, params->workspace_size, bwd_workspace(*params));
    if (params->problem.device_type == SINKATTN_DEVICE_CUDA) {
      report_offsets_fault(c);
      cuda::bwd(*params);
    } else {
      cpu::bwd(*params);
    }
  });
}

}  // extern "C"
