// Micro-kernels on fp32 tiles; see kernels.h. Written once with GCC vector extensions and built
// three times: x86-64-v4 (AVX-512: 16-float vectors, 8 x 32 GEMM register block), x86-64-v3 (AVX2
// + FMA: 8-float vectors, 4 x 16 block) and baseline x86-64 (the same code as pairs of SSE ops).
// The best build the CPU supports is picked once; SINKATTN_CPU_ISA=v4|v3|baseline asks for a
// lower one (tests use it to cover every build on one machine).
#include "cpu/kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "sinkattn/sinkattn.h"

// Vectors never cross a real call (every helper is always_inline), so GCC's note about the
// vector ABI without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#define SINKATTN_INLINE inline __attribute__((always_inline))

// The x86-64-v3 / v4 builds need GCC's target attributes and __builtin_cpu_supports levels;
// other compilers and CPUs get the baseline build only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SINKATTN_X86_ISAS 1
#endif

namespace sinkattn {
namespace cpu {
namespace {

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

template <class V>
struct Lanes;
template <>
struct Lanes<v8> {
  using I = v8i;
  static constexpr int n = 8;
};
#ifdef SINKATTN_X86_ISAS
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
template <>
struct Lanes<v16> {
  using I = v16i;
  static constexpr int n = 16;
};
#endif

template <class V>
SINKATTN_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
SINKATTN_INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
template <class V>
SINKATTN_INLINE V splat(float x) {
  return V{} + x;
}
template <class V>
SINKATTN_INLINE float hsum(V v) {
  float s = 0.f;
  for (int i = 0; i < Lanes<V>::n; ++i) s += v[i];
  return s;
}

// exp on every lane, ~1 ulp: e^x = 2^n e^r with n = round(x / ln2), |r| <= ln2 / 2, e^r from a
// degree-7 minimax polynomial. Results below 2^-126 flush to 0 (so exp(-inf) = 0), NaN stays NaN.
template <class V>
SINKATTN_INLINE V exp_v(V x) {
  using I = typename Lanes<V>::I;
  const V lo = splat<V>(-87.0f), hi = splat<V>(88.0f);
  const V in = x;
  x = x > hi ? hi : x;              // comparisons are false for NaN, so NaN stays NaN
  x = x < lo ? lo : x;              // keeps the integer conversion below in range
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  V n = (x * 1.44269504088896341f + magic) - magic;
  V r = x - n * 0.693359375f;  // ln2 split in two so n * ln2 is exact
  r = r + n * 2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  I e = (__builtin_convertvector(n, I) + 127) << 23;
  V y = p * (V)e;
  return in < lo ? splat<V>(0.f) : y;
}

// ---- dtype conversions (branch-free so the row loops vectorize) ----------------------------

SINKATTN_INLINE float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
SINKATTN_INLINE uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

SINKATTN_INLINE float bf16_to_float(uint16_t h) {
  return bits_to_float(static_cast<uint32_t>(h) << 16);
}

SINKATTN_INLINE uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays quiet NaN
  uint32_t u = float_to_bits(f);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

SINKATTN_INLINE float fp16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = h & 0x7fffu;
  // Normal: rebias the exponent (15 -> 127). Subnormal: m * 2^-24 exactly. Inf/NaN: max exponent.
  uint32_t normal = (em << 13) + (112u << 23);
  uint32_t sub = float_to_bits(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  uint32_t special = (em << 13) | 0x7f800000u;
  uint32_t bits = em < 0x0400u ? sub : (em >= 0x7c00u ? special : normal);
  return bits_to_float(bits | sign);
}

SINKATTN_INLINE uint16_t float_to_fp16(float x) {  // round to nearest even
  uint32_t f = float_to_bits(x);
  uint32_t sign = (f >> 16) & 0x8000u;
  f &= 0x7fffffffu;
  // Subnormal results: adding 0.5 (whose ulp is 2^-24, the fp16 subnormal step) rounds for us.
  uint32_t sub = float_to_bits(bits_to_float(f) + 0.5f) - 0x3f000000u;
  // Normal results: rebias (127 -> 15) and round to nearest even on the 13 dropped bits; a carry
  // past 65504 lands on inf, as it should.
  uint32_t normal = (f + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + ((f >> 13) & 1u)) >> 13;
  uint32_t special = f > 0x7f800000u ? 0x7e00u : 0x7c00u;
  uint32_t o = f >= 0x47800000u ? special : (f < 0x38800000u ? sub : normal);
  return static_cast<uint16_t>(o | sign);
}

template <typename T, typename Cvt>
SINKATTN_INLINE void load_typed(const T* src, int64_t row_stride, int rows, int d, float mul,
                                float* dst, int ldd, int rows_pad, Cvt cvt) {
  for (int r = 0; r < rows; ++r) {
    const T* s = src + r * row_stride;
    float* o = dst + static_cast<int64_t>(r) * ldd;
    for (int c = 0; c < d; ++c) o[c] = cvt(s[c]) * mul;
    for (int c = d; c < ldd; ++c) o[c] = 0.f;
  }
  for (int r = rows; r < rows_pad; ++r)
    std::memset(dst + static_cast<int64_t>(r) * ldd, 0, sizeof(float) * ldd);
}

template <typename T, typename Cvt>
SINKATTN_INLINE void store_typed(const float* src, int lds, int rows, int d, const float* row_mul,
                                 T* dst, int64_t row_stride, Cvt cvt) {
  for (int r = 0; r < rows; ++r) {
    const float* s = src + static_cast<int64_t>(r) * lds;
    T* o = dst + r * row_stride;
    float mul = row_mul ? row_mul[r] : 1.f;
    for (int c = 0; c < d; ++c) o[c] = cvt(s[c] * mul);
  }
}

// ---- kernel bodies, instantiated per ISA below -----------------------------------------------

// R x (2 vectors) register block: 2 loads of B and R broadcasts of A per k step. A is only
// broadcast, so reading it transposed (a_rs = 1) costs the same as row-major.
template <class V, int R>
SINKATTN_INLINE void gemm_t(int m, int n, int k, const float* a, int a_rs, int a_cs, const float* b,
                            int ldb, float* c, int ldc, bool accumulate) {
  constexpr int W = Lanes<V>::n;
  for (int i = 0; i < m; i += R) {
    for (int j = 0; j < n; j += 2 * W) {
      float* cp = c + static_cast<int64_t>(i) * ldc + j;
      V x[R][2];
      for (int r = 0; r < R; ++r) {
        x[r][0] = accumulate ? load<V>(cp + r * ldc) : V{};
        x[r][1] = accumulate ? load<V>(cp + r * ldc + W) : V{};
      }
      const float* ap = a + static_cast<int64_t>(i) * a_rs;
      const float* bp = b + j;
      for (int p = 0; p < k; ++p, bp += ldb, ap += a_cs) {
        const V b0 = load<V>(bp), b1 = load<V>(bp + W);
        for (int r = 0; r < R; ++r) {
          const float y = ap[r * a_rs];
          x[r][0] += y * b0;
          x[r][1] += y * b1;
        }
      }
      for (int r = 0; r < R; ++r) {
        store(cp + r * ldc, x[r][0]);
        store(cp + r * ldc + W, x[r][1]);
      }
    }
  }
}

SINKATTN_INLINE void transpose_t(const float* src, int lds, int rows, int cols, float* dst,
                                 int ldd) {
  // 8 x 8 blocks through registers (unpack, shuffle, lane swap); a scalar loop for the edges.
  const int r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int r0 = 0; r0 < r8; r0 += 8)
    for (int c0 = 0; c0 < c8; c0 += 8) {
      const float* s = src + static_cast<int64_t>(r0) * lds + c0;
      v8 r[8], t[8], u[8];
      for (int i = 0; i < 8; ++i) r[i] = load<v8>(s + static_cast<int64_t>(i) * lds);
      for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
      }
      for (int i = 0; i < 8; i += 4)
        for (int h = 0; h < 2; ++h) {
          u[i + 2 * h] = __builtin_shufflevector(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
          u[i + 2 * h + 1] =
              __builtin_shufflevector(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
      // u[0..3]: columns 0..3 (low half) and 4..7 (high half) of rows 0..3; u[4..7]: rows 4..7.
      float* d = dst + static_cast<int64_t>(c0) * ldd + r0;
      for (int i = 0; i < 4; ++i) {
        store(d + static_cast<int64_t>(i) * ldd,
              __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11));
        store(d + static_cast<int64_t>(i + 4) * ldd,
              __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15));
      }
    }
  for (int r = 0; r < rows; ++r)
    for (int c = (r < r8 ? c8 : 0); c < cols; ++c)
      dst[static_cast<int64_t>(c) * ldd + r] = src[static_cast<int64_t>(r) * lds + c];
}

template <class V>
SINKATTN_INLINE void softmax_step_t(float* s, int lds, int rows, int cols, float* m, float* l,
                                    float* o, int ldo, int ocols) {
  constexpr int W = Lanes<V>::n;
  for (int r = 0; r < rows; ++r) {
    float* row = s + static_cast<int64_t>(r) * lds;
    V mx = splat<V>(-INFINITY);
    for (int c = 0; c < cols; c += W) {
      V x = load<V>(row + c);
      mx = x > mx ? x : mx;
    }
    float m_new = m[r];
    for (int i = 0; i < W; ++i) m_new = mx[i] > m_new ? mx[i] : m_new;
    if (m_new == -INFINITY) {  // nothing visible yet in this row and no sink
      std::memset(row, 0, sizeof(float) * cols);
      continue;
    }
    const float alpha = m[r] == m_new ? 1.f : std::exp(m[r] - m_new);
    V sum{};
    for (int c = 0; c < cols; c += W) {
      V p = exp_v<V>(load<V>(row + c) - m_new);
      store(row + c, p);
      sum += p;
    }
    l[r] = l[r] * alpha + hsum(sum);
    m[r] = m_new;
    if (alpha != 1.f) {
      float* orow = o + static_cast<int64_t>(r) * ldo;
      for (int c = 0; c < ocols; c += W) store(orow + c, load<V>(orow + c) * alpha);
    }
  }
}

template <class V>
SINKATTN_INLINE void softmax_grad_t(float* s, float* dp, int ld, int rows, int cols,
                                    const float* lse, const float* delta) {
  constexpr int W = Lanes<V>::n;
  for (int r = 0; r < rows; ++r) {
    float* srow = s + static_cast<int64_t>(r) * ld;
    float* drow = dp + static_cast<int64_t>(r) * ld;
    const float lr = lse[r], dr = delta[r];
    for (int c = 0; c < cols; c += W) {
      V p = exp_v<V>(load<V>(srow + c) - lr);
      store(srow + c, p);
      store(drow + c, p * (load<V>(drow + c) - dr));
    }
  }
}

SINKATTN_INLINE void load_rows_t(int dtype, const void* src, int64_t row_stride, int rows, int d,
                                 float mul, float* dst, int ldd, int rows_pad) {
  switch (dtype) {
    case SINKATTN_FLOAT32:
      load_typed(static_cast<const float*>(src), row_stride, rows, d, mul, dst, ldd, rows_pad,
                 [](float x) { return x; });
      break;
    case SINKATTN_BFLOAT16:
      load_typed(static_cast<const uint16_t*>(src), row_stride, rows, d, mul, dst, ldd, rows_pad,
                 [](uint16_t x) { return bf16_to_float(x); });
      break;
    default:
      load_typed(static_cast<const uint16_t*>(src), row_stride, rows, d, mul, dst, ldd, rows_pad,
                 [](uint16_t x) { return fp16_to_float(x); });
      break;
  }
}

SINKATTN_INLINE void store_rows_t(int dtype, const float* src, int lds, int rows, int d,
                                  const float* row_mul, void* dst, int64_t row_stride) {
  switch (dtype) {
    case SINKATTN_FLOAT32:
      store_typed(src, lds, rows, d, row_mul, static_cast<float*>(dst), row_stride,
                  [](float x) { return x; });
      break;
    case SINKATTN_BFLOAT16:
      store_typed(src, lds, rows, d, row_mul, static_cast<uint16_t*>(dst), row_stride,
                  [](float x) { return float_to_bf16(x); });
      break;
    default:
      store_typed(src, lds, rows, d, row_mul, static_cast<uint16_t*>(dst), row_stride,
                  [](float x) { return float_to_fp16(x); });
      break;
  }
}

template <class V>
SINKATTN_INLINE void dot_rows_t(const float* a, const float* b, int ld, int rows, int d,
                                float* out) {
  constexpr int W = Lanes<V>::n;
  for (int r = 0; r < rows; ++r) {
    const float* x = a + static_cast<int64_t>(r) * ld;
    const float* y = b + static_cast<int64_t>(r) * ld;
    V acc{};
    int c = 0;
    for (; c + W <= d; c += W) acc += load<V>(x + c) * load<V>(y + c);
    float sum = hsum(acc);
    for (; c < d; ++c) sum += x[c] * y[c];
    out[r] = sum;
  }
}

// ---- one build per ISA, and the pick ---------------------------------------------------------

struct Kernels {
  decltype(&cpu::gemm) gemm;
  decltype(&cpu::transpose) transpose;
  decltype(&cpu::softmax_step) softmax_step;
  decltype(&cpu::softmax_grad) softmax_grad;
  decltype(&cpu::load_rows) load_rows;
  decltype(&cpu::store_rows) store_rows;
  decltype(&cpu::dot_rows) dot_rows;
};

// Wrappers compiled for one ISA (ATTR) around the bodies above, with vector type V and GEMM
// block rows R, collected in a Kernels table named ns::table.
#define SINKATTN_ISA_KERNELS(ns, ATTR, V, R)                                                       \
  namespace ns {                                                                                   \
  ATTR void gemm(int m, int n, int k, const float* a, int a_rs, int a_cs, const float* b, int ldb, \
                 float* c, int ldc, bool accumulate) {                                             \
    gemm_t<V, R>(m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);                              \
  }                                                                                                \
  ATTR void transpose(const float* src, int lds, int rows, int cols, float* dst, int ldd) {        \
    transpose_t(src, lds, rows, cols, dst, ldd);                                                   \
  }                                                                                                \
  ATTR void softmax_step(float* s, int lds, int rows, int cols, float* m, float* l, float* o,      \
                         int ldo, int ocols) {                                                     \
    softmax_step_t<V>(s, lds, rows, cols, m, l, o, ldo, ocols);                                    \
  }                                                                                                \
  ATTR void softmax_grad(float* s, float* dp, int ld, int rows, int cols, const float* lse,        \
                         const float* delta) {                                                     \
    softmax_grad_t<V>(s, dp, ld, rows, cols, lse, delta);                                          \
  }                                                                                                \
  ATTR void load_rows(int dtype, const void* src, int64_t row_stride, int rows, int d, float mul,  \
                      float* dst, int ldd, int rows_pad) {                                         \
    load_rows_t(dtype, src, row_stride, rows, d, mul, dst, ldd, rows_pad);                         \
  }                                                                                                \
  ATTR void store_rows(int dtype, const float* src, int lds, int rows, int d,                      \
                       const float* row_mul, void* dst, int64_t row_stride) {                      \
    store_rows_t(dtype, src, lds, rows, d, row_mul, dst, row_stride);                              \
  }                                                                                                \
  ATTR void dot_rows(const float* a, const float* b, int ld, int rows, int d, float* out) {        \
    dot_rows_t<V>(a, b, ld, rows, d, out);                                                         \
  }                                                                                                \
  const Kernels table{                                                                             \
      gemm, transpose, softmax_step, softmax_grad, load_rows, store_rows, dot_rows};               \
  }

SINKATTN_ISA_KERNELS(baseline, , v8, 4)
#ifdef SINKATTN_X86_ISAS
SINKATTN_ISA_KERNELS(x86_64_v3, __attribute__((target("arch=x86-64-v3"))), v8, 4)
SINKATTN_ISA_KERNELS(x86_64_v4, __attribute__((target("arch=x86-64-v4"))), v16, 8)
#endif

const Kernels& pick() {
  int level = 1;  // 1 baseline, 3 x86-64-v3, 4 x86-64-v4
#ifdef SINKATTN_X86_ISAS
  level = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 1;
#endif
  if (const char* want = std::getenv("SINKATTN_CPU_ISA")) {
    int cap = std::strcmp(want, "v3") == 0 ? 3 : std::strcmp(want, "baseline") == 0 ? 1 : 4;
    level = level < cap ? level : cap;
  }
#ifdef SINKATTN_X86_ISAS
  if (level == 4) return x86_64_v4::table;
  if (level == 3) return x86_64_v3::table;
#endif
  return baseline::table;
}

const Kernels& kernels() {
  static const Kernels& k = pick();
  return k;
}

}  // namespace

void gemm(int m, int n, int k, const float* a, int a_rs, int a_cs, const float* b, int ldb,
          float* c, int ldc, bool accumulate) {
  kernels().gemm(m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
}
void transpose(const float* src, int lds, int rows, int cols, float* dst, int ldd) {
  kernels().transpose(src, lds, rows, cols, dst, ldd);
}
void softmax_step(float* s, int lds, int rows, int cols, float* m, float* l, float* o, int ldo,
                  int ocols) {
  kernels().softmax_step(s, lds, rows, cols, m, l, o, ldo, ocols);
}
void softmax_grad(float* s, float* dp, int ld, int rows, int cols, const float* lse,
                  const float* delta) {
  kernels().softmax_grad(s, dp, ld, rows, cols, lse, delta);
}
void load_rows(int dtype, const void* src, int64_t row_stride, int rows, int d, float mul,
               float* dst, int ldd, int rows_pad) {
  kernels().load_rows(dtype, src, row_stride, rows, d, mul, dst, ldd, rows_pad);
}
void store_rows(int dtype, const float* src, int lds, int rows, int d, const float* row_mul,
                void* dst, int64_t row_stride) {
  kernels().store_rows(dtype, src, lds, rows, d, row_mul, dst, row_stride);
}
void dot_rows(const float* a, const float* b, int ld, int rows, int d, float* out) {
  kernels().dot_rows(a, b, ld, rows, d, out);
}

}  // namespace cpu
}  // namespace sinkattn
