// The CUDA offsets guard's rules (src/cuda/common/offsets_rule.h, the code the guard runs, here
// compiled for the host) against the CPU backend's own checks of the same offsets (api.cpp): over
// random broken and sound lists, the lowest rank of all entries is the error the CPU reports
// (the same list, entry and rule, the same values in its message), and no rank where the CPU
// accepts. So the deferred error of a CUDA call names what the CPU would have refused.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attention_case.h"
#include "cuda/common/offsets_rule.h"
#include "sinkattn/sinkattn.h"

namespace sinkattn_test {
namespace {

using sinkattn::cuda::OffsetsFault;
using sinkattn::cuda::OffsetsRule;

// The CPU's refusal of these offsets ("" when it accepts them), with tensors of their row counts.
std::string cpu_refusal(const sinkattn::cuda::OffsetsLists& l) {
  constexpr int kD = 32;
  std::vector<float> q(l.total_q * kD + 1), kv(l.total_k * kD + 1), out(q.size());
  sinkattn_fwd_params f{};
  sinkattn_problem& p = f.problem;
  p.device_type = SINKATTN_DEVICE_CPU;
  p.dtype = SINKATTN_FLOAT32;
  p.head_dim = kD;
  p.batch = l.batch, p.seqlen_q = l.max_q, p.seqlen_k = l.max_k, p.heads_q = 1, p.heads_kv = 1;
  p.q = {q.data(), 0, kD, kD}, p.k = p.v = {kv.data(), 0, kD, kD};
  p.cu_seqlens_q = l.cu_q, p.cu_seqlens_k = l.cu_k;
  p.total_q = l.total_q, p.total_k = l.total_k;
  p.scale = 1.0f, p.causal = 1, p.window_left = p.window_right = -1;
  p.zigzag_world = l.zigzag_world;
  f.out = {out.data(), 0, kD, kD};
  const sinkattn_status st = sinkattn_fwd_can_implement(&f);
  if (st == SINKATTN_OK) return "";
  EXPECT_EQ(st, SINKATTN_ERROR_INVALID_ARGUMENT) << sinkattn_last_error();
  return sinkattn_last_error();
}

// The words of the CPU's message for each rule.
const char* rule_words(OffsetsRule r) {
  switch (r) {
    case OffsetsRule::kNegativeStart: return ", expected >= 0";
    case OffsetsRule::kDecreasing: return ", expected non-decreasing offsets";
    case OffsetsRule::kTooLong: return ", expected at most the max length ";
    case OffsetsRule::kPastRows: return ", expected at most the row count ";
    case OffsetsRule::kOddQueryLength: return ", expected an even length";
    case OffsetsRule::kZigzagKeys: return ", expected zigzag_world x query length";
    case OffsetsRule::kNone: break;
  }
  return "(none)";
}

TEST(OffsetsRule, LowestRankIsTheCpuRefusal) {
  std::mt19937_64 rng(test_seed());
  auto draw = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int refused = 0, rules_seen[7] = {};
  for (int trial = 0; trial < 4000; ++trial) {
    const int batch = draw(1, 5), world = draw(0, 1) ? draw(1, 3) : 0;
    std::vector<int32_t> cu_q = {0}, cu_k = {0};
    for (int b = 0; b < batch; ++b) {
      const int len_q = world ? 2 * draw(0, 3) : draw(0, 6);
      cu_q.push_back(cu_q.back() + len_q);
      cu_k.push_back(cu_k.back() + (world ? world * len_q : draw(0, 6)));
    }
    sinkattn::cuda::OffsetsLists l;
    l.batch = batch, l.zigzag_world = world;
    l.max_q = l.max_k = 0;
    for (int b = 0; b < batch; ++b) {
      l.max_q = std::max<int64_t>(l.max_q, cu_q[b + 1] - cu_q[b]);
      l.max_k = std::max<int64_t>(l.max_k, cu_k[b + 1] - cu_k[b]);
    }
    l.total_q = cu_q[batch], l.total_k = cu_k[batch];
    for (int breaks = draw(0, 2); breaks > 0; --breaks) {  // none, one or two rules broken
      std::vector<int32_t>& cu = draw(0, 1) ? cu_k : cu_q;
      switch (draw(0, 6)) {
        case 0: cu[0] = -draw(1, 3); break;                              // negative start
        case 1: cu[draw(1, batch)] -= draw(1, 4); break;                 // decreasing (or shorter)
        case 2: (&cu == &cu_q ? l.max_q : l.max_k) -= draw(1, 2); break;  // a length too long
        case 3: (&cu == &cu_q ? l.total_q : l.total_k) -= draw(1, 2); break;  // past the rows
        case 4: cu[draw(1, batch)] += draw(1, 3); break;                 // zigzag lengths, longer
        case 5: cu_q[draw(1, batch)] += 1, l.max_q += 1; break;           // odd query lengths
        default: break;
      }
    }
    l.max_q = std::max<int64_t>(l.max_q, 0), l.max_k = std::max<int64_t>(l.max_k, 0);
    l.total_q = std::max<int64_t>(l.total_q, 0), l.total_k = std::max<int64_t>(l.total_k, 0);
    l.cu_q = cu_q.data(), l.cu_k = cu_k.data();

    unsigned long long lowest = sinkattn::cuda::kNoOffsetsFault;
    for (int64_t b = 0; b <= batch; ++b)
      lowest = std::min(lowest, sinkattn::cuda::offsets_fault_rank(l, b));
    const std::string cpu = cpu_refusal(l);
    SCOPED_TRACE("trial " + std::to_string(trial) + "; " + replay_hint());
    if (lowest == sinkattn::cuda::kNoOffsetsFault) {
      EXPECT_EQ(cpu, "");
      continue;
    }
    ++refused;
    const OffsetsFault f = sinkattn::cuda::offsets_fault(l, lowest);
    ++rules_seen[static_cast<int>(f.rule)];
    const std::string entry = std::string("problem.cu_seqlens_") + (f.keys ? "k" : "q") + "[" +
                              std::to_string(f.entry) + "]: got ";
    EXPECT_EQ(cpu.rfind("sinkattn_fwd_can_implement: " + entry, 0), 0u) << cpu;
    EXPECT_NE(cpu.find(rule_words(f.rule)), std::string::npos) << cpu;
    const bool zigzag = f.rule == OffsetsRule::kOddQueryLength || f.rule == OffsetsRule::kZigzagKeys;
    const char* got = f.rule == OffsetsRule::kTooLong ? " length " : zigzag ? " length of " : "got ";
    EXPECT_NE(cpu.find(got + std::to_string(f.got)), std::string::npos) << cpu;
    if (f.rule == OffsetsRule::kDecreasing) {
      EXPECT_NE(cpu.find(" after " + std::to_string(f.bound)), std::string::npos) << cpu;
    } else if (f.rule == OffsetsRule::kTooLong || f.rule == OffsetsRule::kPastRows) {
      EXPECT_NE(cpu.find(std::to_string(f.bound) + " (problem."), std::string::npos) << cpu;
    } else if (f.rule == OffsetsRule::kZigzagKeys) {
      EXPECT_NE(cpu.find("= " + std::to_string(world) + " x " + std::to_string(f.bound)),
                std::string::npos) << cpu;
    }
  }
  // The draws reach every rule and a fair share of sound lists.
  EXPECT_GT(refused, 1000);
  EXPECT_LT(refused, 3800);
  for (int r = 1; r < 7; ++r) EXPECT_GT(rules_seen[r], 20) << rule_words(static_cast<OffsetsRule>(r));
}

}  // namespace
}  // namespace sinkattn_test
