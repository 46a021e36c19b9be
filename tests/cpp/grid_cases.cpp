#include "grid_cases.h"

#include <set>

namespace sinkattn_test {

namespace {
constexpr sinkattn_dtype F32 = SINKATTN_FLOAT32, BF16 = SINKATTN_BFLOAT16, F16 = SINKATTN_FLOAT16;
constexpr Layout kHeadMajor = Layout::kHeadMajor, kPadded = Layout::kPadded;

// Documents of different lengths, Sq != Sk per document, and empty ones on either side.
const std::vector<std::pair<int, int>> kMixedDocs = {{5, 9},   {0, 7},   {13, 13}, {6, 0},
                                                      {0, 0},   {31, 17}, {1, 1}};
}  // namespace

std::vector<std::pair<int, int>> short_docs_and_a_long_one() {
  std::vector<std::pair<int, int>> docs;
  for (int i = 0; i < 120; ++i) {
    const int n = i * 7 % 23;
    docs.push_back({n, n + (i % 3 == 0 ? 5 : 0)});
  }
  docs[60] = {1500, 1500};
  return docs;
}

std::vector<Case> cpu_grid() {
  std::vector<Case> g = {
      // seqlen 1 (a lone token; decoding against a cache, MQA)
      Case::fixed(F32, 1, 1, 1, 4, 2, 64).with_causal(),
      Case::fixed(BF16, 2, 1, 203, 8, 1, 128).with_causal(),
      Case::fixed(F16, 1, 1, 1, 7, 7, 32).without_sinks(),
      // 113 x 203: queries aligned to the end of a longer key sequence
      Case::fixed(F32, 1, 113, 203, 12, 4, 64).with_causal(),
      Case::fixed(BF16, 1, 113, 203, 12, 4, 64).with_causal().with_window(127, -1),
      Case::fixed(F16, 1, 113, 203, 7, 7, 96).with_window(17, 5),
      Case::fixed(F32, 1, 113, 203, 8, 1, 128).without_sinks().with_layout(kHeadMajor, kPadded),
      // 239 x 1: causal leaves all rows but the last without a key
      Case::fixed(F32, 1, 239, 1, 4, 1, 64).with_causal(),
      Case::fixed(BF16, 1, 239, 1, 4, 4, 64),
      Case::fixed(F16, 1, 239, 1, 12, 4, 32).with_causal().without_sinks(),
      // 203 x 113: bottom-right alignment, the first 90 rows see no key under causal
      Case::fixed(F32, 1, 203, 113, 12, 4, 64).with_causal(),
      Case::fixed(BF16, 1, 203, 113, 7, 7, 128).with_causal().without_sinks(),
      Case::fixed(F16, 2, 203, 113, 8, 1, 64).with_window(30, 0),
      // GQA ratios 8 (64/8), 3 (12/4), 1 (7/7), 8 (8/1)
      Case::fixed(BF16, 1, 37, 53, 64, 8, 64).with_causal().with_window(15, -1),
      Case::fixed(F32, 1, 37, 53, 64, 8, 64).without_sinks(),
      Case::fixed(F16, 1, 70, 70, 8, 1, 128).with_causal(),
      Case::fixed(F32, 1, 70, 70, 12, 4, 32).with_window(3, 9),
      // window 1 (the diagonal only), a one-key band, windows larger than the sequence
      Case::fixed(F32, 1, 65, 65, 4, 2, 64).with_causal().with_window(0, -1),
      Case::fixed(BF16, 1, 65, 80, 4, 2, 64).with_window(1, 1),
      Case::fixed(F32, 1, 113, 203, 4, 2, 64).with_causal().with_window(500, -1),
      Case::fixed(BF16, 1, 113, 203, 4, 2, 64).with_window(1000, 1000),
      Case::fixed(F16, 1, 50, 30, 4, 2, 64).with_window(0, 0),
      Case::fixed(F32, 1, 30, 50, 4, 2, 64).with_window(-1, 3).without_sinks(),
      Case::fixed(F16, 1, 90, 90, 4, 1, 64).with_window(0, -1),  // the query and every later key
      Case::fixed(BF16, 1, 113, 203, 64, 8, 64),                   // full, GQA 8, many heads
      // packed variable-length batches
      Case::varlen(BF16, kMixedDocs, 6, 2, 64).with_causal(),
      Case::varlen(F32, kMixedDocs, 4, 4, 64).with_window(4, 2).without_sinks(),
      Case::varlen(F16, {{40, 60}, {70, 35}, {1, 90}, {0, 3}}, 8, 1, 128)
          .with_causal()
          .with_window(16, -1)
          .with_layout(kPadded, kHeadMajor),
      Case::varlen(F32, {{17, 17}, {0, 0}, {64, 100}}, 12, 4, 96).with_layout(kHeadMajor, kPadded),
      Case::varlen(BF16, {{1, 1}, {2, 3}, {3, 2}, {8, 8}, {13, 21}, {21, 13}, {34, 34}, {0, 55},
                          {55, 1}, {89, 89}},
                   4, 2, 64)
          .with_causal()
          .with_window(10, -1)
          .with_layout(kPadded, kPadded),
      // strides and batches
      Case::fixed(F32, 3, 45, 61, 4, 2, 64).with_causal().with_layout(kPadded, kPadded),
      Case::fixed(BF16, 2, 45, 61, 4, 2, 64).with_layout(kHeadMajor, kHeadMajor).with_window(10, 10),
      Case::fixed(F16, 2, 45, 61, 4, 2, 256).with_causal().with_layout(kPadded, kHeadMajor),
      // q, k, v, dout (and out, dq, dk, dv) each with other strides than its neighbours
      Case::fixed(BF16, 2, 45, 61, 8, 2, 64).with_causal().with_mixed_layouts(),
      Case::fixed(F32, 1, 113, 203, 12, 4, 128)
          .with_window(40, 10)
          .with_layout(kPadded, kHeadMajor)
          .with_mixed_layouts(),
      Case::varlen(F16, kMixedDocs, 6, 2, 64)
          .with_causal()
          .with_window(7, -1)
          .with_layout(kHeadMajor, kPadded)
          .with_mixed_layouts(),
      // softmax scale far from 1/sqrt(D): peaked and flat distributions
      Case::fixed(F32, 1, 40, 40, 2, 1, 64).with_scale(0.5f),
      Case::fixed(BF16, 1, 40, 40, 2, 1, 64).with_scale(0.02f).with_causal(),
      // several tiles per row
      Case::fixed(F32, 1, 511, 512, 2, 1, 64).with_causal().with_window(100, -1),
      Case::fixed(BF16, 1, 300, 300, 2, 2, 128).with_causal(),
      // the long odd shape of DESIGN.md, on few heads so the fp64 reference stays quick
      Case::fixed(F32, 1, 1023, 1024, 4, 1, 64).with_causal(),
      Case::fixed(BF16, 1, 1023, 1024, 2, 2, 128).with_causal().with_window(127, -1),
  };
  // fused zigzag CP (rows: chunks r and 2W-1-r; keys: all 2W chunks). Chunk lengths that are
  // not tile multiples put a tile across the two chunks; windows then leave a gap between them.
  const std::vector<Case> zigzag = {
      Case::fixed(F32, 1, 74, 148, 8, 2, 64).with_causal().with_zigzag(0, 2),
      Case::fixed(F32, 2, 74, 148, 8, 2, 64).with_causal().with_zigzag(1, 2),
      Case::fixed(BF16, 1, 130, 260, 8, 1, 64).with_causal().without_sinks().with_zigzag(1, 2),
      Case::fixed(BF16, 1, 128, 512, 12, 4, 64).with_causal().with_window(40, -1).with_zigzag(2, 4),
      Case::fixed(F16, 1, 100, 400, 4, 1, 128).with_causal().with_window(20, -1).with_zigzag(1, 4),
      Case::fixed(F32, 1, 60, 180, 4, 2, 64).with_window(10, 10).with_zigzag(2, 3),
      Case::fixed(F32, 1, 50, 100, 4, 2, 32).with_zigzag(0, 2),  // bidirectional: all keys
      Case::fixed(F16, 1, 90, 180, 4, 1, 64).with_window(0, -1).with_zigzag(0, 2),
      Case::fixed(F32, 1, 64, 64, 4, 4, 64).with_causal().with_zigzag(0, 1),  // W = 1: plain causal
      Case::fixed(BF16, 1, 74, 148, 8, 2, 64).with_causal().with_zigzag(1, 2).with_mixed_layouts(),
      Case::varlen(F32, {{10, 20}, {0, 0}, {34, 68}, {2, 4}, {70, 140}}, 6, 2, 64)
          .with_causal()
          .with_zigzag(1, 2),
      Case::varlen(BF16, {{8, 32}, {40, 160}, {0, 0}, {26, 104}}, 4, 2, 64)
          .with_causal()
          .with_window(15, -1)
          .with_zigzag(3, 4)
          .with_layout(kPadded, kHeadMajor),
  };
  g.insert(g.end(), zigzag.begin(), zigzag.end());
  // every head dim in fp32 and in a 16-bit dtype
  const int dims[] = {32, 64, 96, 128, 256};
  for (int i = 0; i < 5; ++i) {
    g.push_back(Case::fixed(F32, 1, 67, 67, 4, 2, dims[i]).with_causal());
    g.push_back(Case::fixed(i % 2 ? F16 : BF16, 1, 67, 89, 4, 2, dims[i]).with_window(20, 7));
  }
  return g;
}

std::vector<Case> cuda_grid() {
  std::vector<Case> g;
  std::set<std::string> names;
  auto add = [&](const Case& c) {
    if (names.insert(c.name()).second) g.push_back(c);
  };
  for (const Case& c : cpu_grid()) {
    add(c.dtype == F32 ? c.with_dtype(BF16) : c);
    if (c.dtype == F32) add(c.with_dtype(F16));
  }
  add(Case::fixed(BF16, 1, 1023, 1024, 8, 2, 64).with_causal());
  add(Case::fixed(BF16, 1, 1023, 1024, 64, 8, 64).with_causal().with_window(127, -1));
  add(Case::fixed(F16, 1, 1023, 1024, 8, 2, 128).with_causal().with_window(127, -1));
  add(Case::fixed(BF16, 1, 1023, 1024, 4, 4, 256).with_window(200, 50));
  add(Case::fixed(BF16, 1, 1024, 1023, 8, 1, 96).without_sinks().with_causal());
  add(Case::varlen(BF16, {{1023, 1024}, {0, 5}, {517, 300}}, 8, 1, 64).with_causal());
  add(Case::fixed(BF16, 1, 1024, 4096, 8, 2, 64).with_causal().with_zigzag(1, 4));
  add(Case::fixed(F16, 1, 1000, 2000, 8, 2, 128).with_causal().with_window(127, -1).with_zigzag(0, 2));
  add(Case::varlen(BF16, {{1000, 4000}, {0, 0}, {300, 1200}}, 64, 8, 64)
          .with_causal()
          .with_window(127, -1)
          .with_zigzag(2, 4));
  add(Case::varlen(F16, {{600, 1200}, {258, 516}}, 8, 1, 128).with_causal().with_zigzag(1, 2));
  // Decode-sized queries (the packed-group forward), long enough for key splits.
  add(Case::fixed(BF16, 1, 2, 3000, 8, 1, 64).with_causal());
  add(Case::fixed(F16, 1, 1, 2000, 16, 4, 128).with_causal().with_window(700, -1).with_layout(kHeadMajor, kPadded));
  add(Case::varlen(BF16, {{1, 2500}, {0, 700}, {2, 1}, {1, 0}}, 16, 2, 64).with_causal());
  // Many short sequences beside a long one: the arrays kept per 64 query rows of a sequence
  // (dsink partials, dq handoff counters) hold a slot per row group, not per group of the max,
  // with slots left free between sequences; on the prep, handoff and band dq paths.
  const std::vector<std::pair<int, int>> docs = short_docs_and_a_long_one();
  add(Case::varlen(BF16, docs, 8, 2, 64).with_causal());
  add(Case::varlen(F16, docs, 8, 2, 128).with_causal());
  add(Case::varlen(BF16, docs, 8, 2, 64).with_causal().with_window(127, -1));
  add(Case::varlen(F16, docs, 16, 2, 64).with_causal().with_window(127, -1));
  // Causal documents of up to 129 keys under query groups of 8 at d 64: the band kernels, with
  // the mask's bounds cut to the lengths (dispatch.cu kernel_mask); Sq != Sk both ways, empty
  // documents, 129 keys; and a full mask over 50 x 60 (both bounds cut).
  add(Case::varlen(BF16, {{129, 129}, {0, 7}, {64, 100}, {40, 10}, {1, 1}, {100, 129}}, 16, 2, 64)
          .with_causal());
  add(Case::fixed(F16, 3, 129, 129, 8, 1, 64).with_causal());
  add(Case::fixed(BF16, 2, 50, 60, 8, 1, 64));
  // Mixed layouts (see Case::mixed) on the tiles and paths the large shapes take.
  add(Case::fixed(BF16, 1, 1023, 1024, 64, 8, 64).with_causal().with_mixed_layouts());
  add(Case::fixed(F16, 1, 1000, 1000, 8, 2, 128)
          .with_causal()
          .with_window(127, -1)
          .with_mixed_layouts());
  add(Case::varlen(BF16, {{700, 900}, {1, 1500}, {300, 300}}, 16, 2, 64)
          .with_causal()
          .with_mixed_layouts());
  add(Case::fixed(BF16, 1, 1, 2000, 16, 2, 64).with_causal().with_mixed_layouts());
  return g;
}

}  // namespace sinkattn_test
