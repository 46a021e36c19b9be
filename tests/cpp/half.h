// Test-side conversions between float and the 16-bit dtypes (round to nearest even), written
// independently of the library so a conversion bug there cannot hide in both.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "sinkattn/sinkattn.h"

namespace sinkattn_test {

inline uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}

inline float bits_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

inline uint16_t float_to_half(float f) {
  uint32_t x = float_bits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to inf (>= 65520)
  if (ax < 0x38800000u) {                         // below 2^-14: a subnormal half, unit 2^-24
    float a = bits_float(ax);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);  // round to nearest even on 13 bits
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);  // rebias 127 -> 15
}

inline float half_to_float(uint16_t h) {
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  float f;
  if (e == 0)
    f = std::ldexp(static_cast<float>(m), -24);
  else if (e == 31)
    f = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else
    f = std::ldexp(static_cast<float>(m | 0x400u), static_cast<int>(e) - 25);
  return (h & 0x8000u) ? -f : f;
}

inline size_t dtype_size(sinkattn_dtype t) { return t == SINKATTN_FLOAT32 ? 4 : 2; }

// Value of x after a round trip through dtype t.
inline float round_to(sinkattn_dtype t, float x) {
  switch (t) {
    case SINKATTN_FLOAT16: return half_to_float(float_to_half(x));
    case SINKATTN_BFLOAT16: return bf16_to_float(float_to_bf16(x));
    default: return x;
  }
}

// Unit roundoff of dtype t (half the spacing of numbers in [1, 2)).
inline double unit_roundoff(sinkattn_dtype t) {
  switch (t) {
    case SINKATTN_FLOAT16: return std::ldexp(1.0, -11);
    case SINKATTN_BFLOAT16: return std::ldexp(1.0, -8);
    default: return std::ldexp(1.0, -24);
  }
}

inline const char* dtype_name(sinkattn_dtype t) {
  switch (t) {
    case SINKATTN_FLOAT16: return "fp16";
    case SINKATTN_BFLOAT16: return "bf16";
    default: return "fp32";
  }
}

}  // namespace sinkattn_test
