// One refusal per validation rule of src/api.cpp: the status, a message that names the argument,
// the same answer from can_implement (and from the workspace-size query for problem rules), and
// outputs left untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <climits>
#include <cstring>
#include <functional>
#include <limits>

#include "attention_case.h"

namespace sinkattn_test {
namespace {

constexpr sinkattn_status kInvalid = SINKATTN_ERROR_INVALID_ARGUMENT;
constexpr sinkattn_status kNotSupported = SINKATTN_ERROR_NOT_SUPPORTED;

// A valid fixed-length problem (and its packed variant) whose params each rule breaks once.
Case fixed_case() {
  return Case::fixed(SINKATTN_FLOAT32, 2, 5, 7, 4, 2, 32).with_causal().with_layout(
      Layout::kContiguous, Layout::kContiguous);
}
Case varlen_case() {
  return Case::varlen(SINKATTN_FLOAT32, {{3, 4}, {0, 2}, {5, 5}}, 4, 2, 32).with_causal();
}

struct Rule {
  const char* name;
  sinkattn_status status;
  const char* arg;  // the argument the message must name
  std::function<void(sinkattn_problem&)> problem = nullptr;  // breaks both directions, or
  std::function<void(sinkattn_fwd_params&)> fwd = nullptr;   // breaks only the forward, and/or
  std::function<void(sinkattn_bwd_params&)> bwd = nullptr;   // only the backward
  bool varlen = false;
  bool cuda_build_only = false, cpu_build_only = false;
  bool offsets = false;  // a rule on cu_seqlens contents, which the size queries do not read
};

std::ostream& operator<<(std::ostream& os, const Rule& r) { return os << r.name; }

using Bytes = std::vector<uint8_t>;
Bytes bytes_of(Blob& b) { return b.host_bytes(); }

class Refusal : public ::testing::TestWithParam<Rule> {
 protected:
  // Checks status and message of one call; `entry` prefixes every message of that entry point.
  void expect_refused(sinkattn_status got, const std::string& entry) {
    const Rule& r = GetParam();
    EXPECT_EQ(got, r.status) << entry << " said: " << sinkattn_last_error();
    std::string msg = sinkattn_last_error();
    EXPECT_NE(msg.find(entry + ": " + r.arg), std::string::npos)
        << "message of " << entry << " does not name " << r.arg << ": \"" << msg << "\"";
  }
};

TEST_P(Refusal, RefusesNamingTheArgument) {
  const Rule& r = GetParam();
  if (r.cuda_build_only && !sinkattn_has_cuda()) GTEST_SKIP() << "rule applies to CUDA builds";
  if (r.cpu_build_only && sinkattn_has_cuda()) GTEST_SKIP() << "rule applies to CPU-only builds";
  Attention a(r.varlen ? varlen_case() : fixed_case(), Device::kCpu, test_seed());
  Bytes out = bytes_of(a.out.blob()), lse = bytes_of(a.lse.blob());
  Bytes dq = bytes_of(a.dq.blob()), dk = bytes_of(a.dk.blob()), dv = bytes_of(a.dv.blob()),
        dsink = bytes_of(a.dsink.blob());

  // A workspace as large as the valid problem needs, so only the rule under test can fail.
  sinkattn_fwd_params fp = a.fwd_params();
  sinkattn_bwd_params bp = a.bwd_params(false);
  size_t fwd_ws = 0, bwd_ws = 0;
  ASSERT_EQ(sinkattn_fwd_workspace_size(&fp, &fwd_ws), SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(sinkattn_bwd_workspace_size(&bp, &bwd_ws), SINKATTN_OK) << sinkattn_last_error();
  Blob ws(std::max(fwd_ws, bwd_ws), Device::kCpu);
  fp.workspace = fwd_ws ? ws.host() : nullptr, fp.workspace_size = fwd_ws;
  bp.workspace = bwd_ws ? ws.host() : nullptr, bp.workspace_size = bwd_ws;
  ASSERT_EQ(sinkattn_fwd_can_implement(&fp), SINKATTN_OK) << sinkattn_last_error();
  ASSERT_EQ(sinkattn_bwd_can_implement(&bp), SINKATTN_OK) << sinkattn_last_error();

  if (r.problem) r.problem(fp.problem), r.problem(bp.problem);
  if (r.fwd) r.fwd(fp);
  if (r.bwd) r.bwd(bp);
  if (r.problem || r.fwd) {
    expect_refused(sinkattn_fwd_can_implement(&fp), "sinkattn_fwd_can_implement");
    expect_refused(sinkattn_fwd(&fp), "sinkattn_fwd");
  }
  if (r.problem || r.bwd) {
    expect_refused(sinkattn_bwd_can_implement(&bp), "sinkattn_bwd_can_implement");
    expect_refused(sinkattn_bwd(&bp), "sinkattn_bwd");
  }
  if (r.problem && r.offsets) {  // the size queries do not read cu_seqlens contents
    size_t bytes = 0;
    EXPECT_EQ(sinkattn_fwd_workspace_size(&fp, &bytes), SINKATTN_OK) << sinkattn_last_error();
    EXPECT_EQ(sinkattn_bwd_workspace_size(&bp, &bytes), SINKATTN_OK) << sinkattn_last_error();
  } else if (r.problem) {  // the size queries check the problem too, and leave *bytes alone
    size_t bytes = 12345;
    expect_refused(sinkattn_fwd_workspace_size(&fp, &bytes), "sinkattn_fwd_workspace_size");
    expect_refused(sinkattn_bwd_workspace_size(&bp, &bytes), "sinkattn_bwd_workspace_size");
    EXPECT_EQ(bytes, 12345u);
  }
  EXPECT_TRUE(bytes_of(a.out.blob()) == out) << "out written by a refused call";
  EXPECT_TRUE(bytes_of(a.lse.blob()) == lse) << "lse written by a refused call";
  EXPECT_TRUE(bytes_of(a.dq.blob()) == dq) << "dq written by a refused call";
  EXPECT_TRUE(bytes_of(a.dk.blob()) == dk) << "dk written by a refused call";
  EXPECT_TRUE(bytes_of(a.dv.blob()) == dv) << "dv written by a refused call";
  EXPECT_TRUE(bytes_of(a.dsink.blob()) == dsink) << "dsink written by a refused call";
}

using P = sinkattn_problem;
using F = sinkattn_fwd_params;
using B = sinkattn_bwd_params;
const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// A misaligned copy of a pointer (by `bytes`), never dereferenced: validation refuses first.
template <class T>
T* shifted(T* p, int bytes) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) + bytes);
}
// Pretends the problem's pointers live on GPU 0; checks that precede the device ones still apply.
void on_cuda(P& p) {
  p.device_type = SINKATTN_DEVICE_CUDA;
  p.dtype = SINKATTN_BFLOAT16;
}

std::vector<Rule> rules() {
  std::vector<Rule> r = {
      // problem: enums and sizes
      {"DeviceTypeUnknown", kInvalid, "problem.device_type", [](P& p) { p.device_type = 7; }},
      {"DtypeUnknown", kInvalid, "problem.dtype", [](P& p) { p.dtype = 9; }},
      {"HeadDim48", kInvalid, "problem.head_dim", [](P& p) { p.head_dim = 48; }},
      {"HeadDim512", kInvalid, "problem.head_dim", [](P& p) { p.head_dim = 512; }},
      {"BatchZero", kInvalid, "problem.batch", [](P& p) { p.batch = 0; }},
      {"SeqlenQNegative", kInvalid, "problem.seqlen_q", [](P& p) { p.seqlen_q = -1; }},
      {"SeqlenKNegative", kInvalid, "problem.seqlen_k", [](P& p) { p.seqlen_k = -3; }},
      {"HeadsQZero", kInvalid, "problem.heads_q", [](P& p) { p.heads_q = 0; }},
      {"HeadsKvZero", kInvalid, "problem.heads_kv", [](P& p) { p.heads_kv = 0; }},
      {"HeadsNotMultiple", kInvalid, "problem.heads_q", [](P& p) { p.heads_kv = 3; }},
      // problem: bounds that keep positions in int32 and byte counts in int64
      {"SeqlenQAboveInt32", kInvalid, "problem.seqlen_q",
       [](P& p) { p.seqlen_q = int64_t(INT32_MAX) + 1; }},
      {"SeqlenKAboveInt32", kInvalid, "problem.seqlen_k",
       [](P& p) { p.seqlen_k = int64_t(INT32_MAX) + 1; }},
      {"HeadsQAboveInt32", kInvalid, "problem.heads_q", [](P& p) { p.heads_q = int64_t(1) << 31; }},
      {"BatchAboveInt32", kInvalid, "problem.batch", [](P& p) { p.batch = int64_t(1) << 31; }},
      {"QElementsAbove2e48", kInvalid, "problem.seqlen_q",  // 2^12 x 2^30 x 4 x 32 = 2^49
       [](P& p) { p.batch = int64_t(1) << 12, p.seqlen_q = int64_t(1) << 30; }},
      {"QElementsAt2e48", kInvalid, "problem.seqlen_q",  // 2^11 x 2^30 x 4 x 32: the bound itself
       [](P& p) { p.batch = int64_t(1) << 11, p.seqlen_q = int64_t(1) << 30; }},
      {"KElementsAbove2e48", kInvalid, "problem.seqlen_k",
       [](P& p) { p.batch = int64_t(1) << 12, p.seqlen_k = int64_t(1) << 30; }},
      {"TotalQAboveInt32", kInvalid, "problem.total_q",
       [](P& p) { p.total_q = int64_t(INT32_MAX) + 1; }, nullptr, nullptr, true},
      {"TotalKAboveInt32", kInvalid, "problem.total_k",
       [](P& p) { p.total_k = int64_t(INT32_MAX) + 1; }, nullptr, nullptr, true},
      {"PackedQElementsAbove2e48", kInvalid, "problem.total_q",  // 2^30 x 2^20 x 32 = 2^55
       [](P& p) { p.total_q = int64_t(1) << 30, p.heads_q = int64_t(1) << 20; }, nullptr, nullptr,
       true},
      {"PackedKElementsAbove2e48", kInvalid, "problem.total_k",
       [](P& p) {
         p.total_k = int64_t(1) << 30, p.heads_q = p.heads_kv = int64_t(1) << 20;
       },
       nullptr, nullptr, true},
      // problem: scale and mask
      {"ScaleNan", kInvalid, "problem.scale", [](P& p) { p.scale = kNan; }},
      {"ScaleInf", kInvalid, "problem.scale", [](P& p) { p.scale = kInf; }},
      {"ScaleMinusInf", kInvalid, "problem.scale", [](P& p) { p.scale = -kInf; }},
      {"ScaleZero", kInvalid, "problem.scale", [](P& p) { p.scale = 0.0f; }},
      {"ScaleNegative", kInvalid, "problem.scale", [](P& p) { p.scale = -0.5f; }},
      {"WindowLeftBelowMinusOne", kInvalid, "problem.window_left", [](P& p) { p.window_left = -2; }},
      {"WindowRightBelowMinusOne", kInvalid, "problem.window_right",
       [](P& p) { p.causal = 0, p.window_right = -5; }},
      {"WindowLeftTooLarge", kInvalid, "problem.window_left",
       [](P& p) { p.window_left = int64_t(1) << 31; }},
      {"WindowRightTooLarge", kInvalid, "problem.window_right",
       [](P& p) { p.causal = 0, p.window_right = INT64_MAX; }},
      {"CausalWithRightWindow", kInvalid, "problem.window_right", [](P& p) { p.window_right = 3; }},
      {"CausalWithRightWindowOne", kInvalid, "problem.window_right",
       [](P& p) { p.window_right = 1; }},
      // problem: tensors
      {"QNull", kInvalid, "problem.q.data", [](P& p) { p.q.data = nullptr; }},
      {"KNull", kInvalid, "problem.k.data", [](P& p) { p.k.data = nullptr; }},
      {"VNull", kInvalid, "problem.v.data", [](P& p) { p.v.data = nullptr; }},
      {"QMisaligned", kInvalid, "problem.q.data", [](P& p) { p.q.data = shifted(p.q.data, 2); }},
      {"KRowStrideNegative", kInvalid, "problem.k.row_stride", [](P& p) { p.k.row_stride = -64; }},
      {"VHeadStrideNegative", kInvalid, "problem.v.head_stride", [](P& p) { p.v.head_stride = -32; }},
      {"QBatchStrideNegative", kInvalid, "problem.q.batch_stride", [](P& p) { p.q.batch_stride = -1; }},
      {"QSpansTooMuch", kInvalid, "problem.q", [](P& p) { p.q.batch_stride = int64_t(1) << 62; }},
      {"SinksMisaligned", kInvalid, "problem.sinks", [](P& p) { p.sinks = shifted(p.sinks, 2); }},
      // CUDA-only alignment: 16-byte bases and strides (checked before the device itself)
      {"CudaQMisaligned16", kInvalid, "problem.q.data",
       [](P& p) { on_cuda(p), p.q.data = shifted(p.q.data, 8); }},
      {"CudaRowStrideMisaligned16", kInvalid, "problem.k.row_stride",
       [](P& p) { on_cuda(p), p.k.row_stride = p.k.row_stride + 4; }},
      {"CudaDeviceIndexNegative", kInvalid, "problem.device_index",
       [](P& p) { on_cuda(p), p.device_index = -1; }},
      {"CudaNotCompiled", kNotSupported, "problem.device_type", [](P& p) { on_cuda(p); },
       nullptr, nullptr, false, false, true},
      {"CudaFloat32", kNotSupported, "problem.dtype",
       [](P& p) { on_cuda(p), p.dtype = SINKATTN_FLOAT32; }, nullptr, nullptr, false, true, false},
      // problem: packed variable-length batches
      {"CuSeqlensKMissing", kInvalid, "problem.cu_seqlens_k",
       [](P& p) { p.cu_seqlens_k = nullptr; }, nullptr, nullptr, true},
      {"CuSeqlensQMissing", kInvalid, "problem.cu_seqlens_q",
       [](P& p) { p.cu_seqlens_q = nullptr; }, nullptr, nullptr, true},
      {"TotalQNegative", kInvalid, "problem.total_q", [](P& p) { p.total_q = -1; }, nullptr,
       nullptr, true},
      {"TotalKNegative", kInvalid, "problem.total_k", [](P& p) { p.total_k = -1; }, nullptr,
       nullptr, true},
      {"CuSeqlensMisaligned", kInvalid, "problem.cu_seqlens_q",
       [](P& p) { p.cu_seqlens_q = shifted(p.cu_seqlens_q, 1); }, nullptr, nullptr, true},
      {"CuSeqlensFirstNegative", kInvalid, "problem.cu_seqlens_q[0]",
       [](P& p) {
         static const int32_t cu[] = {-1, 3, 3, 8};
         p.cu_seqlens_q = cu;
       },
       nullptr, nullptr, true, false, false, true},
      {"CuSeqlensDecreasing", kInvalid, "problem.cu_seqlens_k[2]",
       [](P& p) {
         static const int32_t cu[] = {0, 4, 3, 11};  // down by one: the boundary
         p.cu_seqlens_k = cu;
       },
       nullptr, nullptr, true, false, false, true},
      {"CuSeqlensLongerThanMax", kInvalid, "problem.cu_seqlens_q[3]",
       [](P& p) { p.seqlen_q = 4; }, nullptr, nullptr, true, false, false, true},  // the last document has 5 rows
      {"CuSeqlensPastTotal", kInvalid, "problem.cu_seqlens_k[3]",
       [](P& p) { p.total_k = 10; }, nullptr, nullptr, true, false, false, true},  // cu_seqlens_k ends at 11
      // problem: fused zigzag CP (fixed case: 5 x 7 rows; varlen case: documents 3x4, 0x2, 5x5)
      {"ZigzagWorldNegative", kInvalid, "problem.zigzag_world", [](P& p) { p.zigzag_world = -1; }},
      {"ZigzagRankNegative", kInvalid, "problem.zigzag_rank",
       [](P& p) { p.zigzag_world = 2, p.zigzag_rank = -1; }},
      {"ZigzagRankNotBelowWorld", kInvalid, "problem.zigzag_rank",
       [](P& p) { p.zigzag_world = 2, p.zigzag_rank = 2; }},
      {"ZigzagSeqlenQOdd", kInvalid, "problem.seqlen_q", [](P& p) { p.zigzag_world = 1; }},
      {"ZigzagSeqlenKNotWorldTimesQ", kInvalid, "problem.seqlen_k",
       [](P& p) { p.zigzag_world = 2, p.seqlen_q = 4; }},  // 7 keys, expected 2 x 4
      {"ZigzagDocumentQOdd", kInvalid, "problem.cu_seqlens_q[1]",
       [](P& p) { p.zigzag_world = 1; }, nullptr, nullptr, true, false, false, true},
      {"ZigzagDocumentKNotWorldTimesQ", kInvalid, "problem.cu_seqlens_k[3]",
       [](P& p) {
         static const int32_t cu_q[] = {0, 2, 2, 6}, cu_k[] = {0, 4, 4, 11};  // 7 keys, not 8
         p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k;
         p.seqlen_k = 7, p.zigzag_world = 2, p.zigzag_rank = 1;
       },
       nullptr, nullptr, true, false, false, true},
      // forward outputs
      {"OutNull", kInvalid, "out.data", nullptr, [](F& f) { f.out.data = nullptr; }},
      {"OutMisaligned", kInvalid, "out.data", nullptr, [](F& f) { f.out.data = shifted(f.out.data, 1); }},
      {"OutOverlapsItself", kInvalid, "out.head_stride", nullptr, [](F& f) { f.out.head_stride = 0; }},
      {"OutRowStrideOverlaps", kInvalid, "out.row_stride", nullptr,
       [](F& f) { f.out.row_stride = 16; }},  // rows of 4 heads x 32 need 128
      {"LseMisaligned", kInvalid, "lse", nullptr, [](F& f) { f.lse = shifted(f.lse, 2); }},
      // backward inputs and outputs
      {"BwdOutNull", kInvalid, "out.data", nullptr, nullptr, [](B& b) { b.out.data = nullptr; }},
      {"DoutNull", kInvalid, "dout.data", nullptr, nullptr, [](B& b) { b.dout.data = nullptr; }},
      {"BwdLseNull", kInvalid, "lse", nullptr, nullptr, [](B& b) { b.lse = nullptr; }},
      {"DqNull", kInvalid, "dq.data", nullptr, nullptr, [](B& b) { b.dq.data = nullptr; }},
      {"DkNull", kInvalid, "dk.data", nullptr, nullptr, [](B& b) { b.dk.data = nullptr; }},
      {"DvNull", kInvalid, "dv.data", nullptr, nullptr, [](B& b) { b.dv.data = nullptr; }},
      {"DkOverlapsItself", kInvalid, "dk.row_stride", nullptr, nullptr,
       [](B& b) { b.dk.row_stride = 0; }},
      {"DvBatchStrideOverlaps", kInvalid, "dv.batch_stride", nullptr, nullptr,
       [](B& b) { b.dv.batch_stride = 3 * b.dv.row_stride; }},  // 7 rows need 7 row strides
      {"DsinkWithoutSinks", kInvalid, "dsink", nullptr, nullptr,
       [](B& b) { b.problem.sinks = nullptr; }},
      {"DsinkMisaligned", kInvalid, "dsink", nullptr, nullptr,
       [](B& b) { b.dsink = shifted(b.dsink, 2); }},
      // workspace (the CPU backward needs one; the forward may not)
      {"WorkspaceTooSmall", kInvalid, "workspace_size", nullptr, nullptr,
       [](B& b) { b.workspace_size -= 1; }},
      {"WorkspaceNull", kInvalid, "workspace", nullptr, nullptr, [](B& b) { b.workspace = nullptr; }},
      {"WorkspaceMisaligned", kInvalid, "workspace", nullptr, nullptr,
       [](B& b) { b.workspace = shifted(b.workspace, 4); }},
  };
  return r;
}

std::string rule_name(const ::testing::TestParamInfo<Rule>& info) { return info.param.name; }
INSTANTIATE_TEST_SUITE_P(Validation, Refusal, ::testing::ValuesIn(rules()), rule_name);

// Rules about the call itself rather than a field.
TEST(RefusalEntry, NullParams) {
  size_t bytes = 0;
  const std::pair<const char*, std::function<sinkattn_status()>> calls[] = {
      {"sinkattn_fwd: params", [] { return sinkattn_fwd(nullptr); }},
      {"sinkattn_bwd: params", [] { return sinkattn_bwd(nullptr); }},
      {"sinkattn_fwd_can_implement: params", [] { return sinkattn_fwd_can_implement(nullptr); }},
      {"sinkattn_bwd_can_implement: params", [] { return sinkattn_bwd_can_implement(nullptr); }},
      {"sinkattn_fwd_workspace_size: params",
       [&] { return sinkattn_fwd_workspace_size(nullptr, &bytes); }},
      {"sinkattn_bwd_workspace_size: params",
       [&] { return sinkattn_bwd_workspace_size(nullptr, &bytes); }},
  };
  for (const auto& [expected, call] : calls) {
    EXPECT_EQ(call(), kInvalid) << expected;
    EXPECT_NE(std::string(sinkattn_last_error()).find(expected), std::string::npos)
        << sinkattn_last_error();
  }
}

TEST(RefusalEntry, NullBytes) {
  Attention a(fixed_case(), Device::kCpu, test_seed());
  sinkattn_fwd_params fp = a.fwd_params();
  sinkattn_bwd_params bp = a.bwd_params(false);
  EXPECT_EQ(sinkattn_fwd_workspace_size(&fp, nullptr), kInvalid);
  EXPECT_NE(std::string(sinkattn_last_error()).find("sinkattn_fwd_workspace_size: bytes"),
            std::string::npos);
  EXPECT_EQ(sinkattn_bwd_workspace_size(&bp, nullptr), kInvalid);
  EXPECT_NE(std::string(sinkattn_last_error()).find("sinkattn_bwd_workspace_size: bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace sinkattn_test
