// 2^x on the FMA pipe instead of the SFU. At head dim 64 an exp costs the SFU about what its score
// costs the tensor cores, so kernels may move part of their exps here: about 8 issue slots on the
// FMA / ALU pipes against one SFU op that holds its pipe for 8 cycles per warp. Host and device,
// so the CPU tests check the same code the kernels run.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cuda/common/host_device.h"

namespace sinkattn::cuda::ptx {

// 2^x for x <= 127: 2^round(x) from the exponent bits times a degree-3 minimax polynomial of 2^f
// on f in [-0.5, 0.5] (relative error 7.5e-5, 30x under a bf16 half-ulp). x = -inf and
// x < -126.5 give 0, as ex2.approx.ftz does below -126.
SINKATTN_HOST_DEVICE float exp2f_fma(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  x = fmaxf(x, -127.f);
#if defined(__CUDA_ARCH__)
  const float t = __fadd_rn(x, kRound);  // round(x) in the low mantissa bits; never contracted
  const float f = __fsub_rn(x, __fsub_rn(t, kRound));
  const uint32_t t_bits = __float_as_uint(t);
#else
  const float t = x + kRound;
  const float f = x - (t - kRound);
  uint32_t t_bits;
  std::memcpy(&t_bits, &t, sizeof t_bits);
#endif
  const float poly = fmaf(fmaf(fmaf(0.05517132f, f, 0.24261054f), f, 0.69326099f), f, 0.99992811f);
  // (round(x) + 127) << 23: 2^round(x), and 0 for round(x) = -127 (the bits above shift out)
  const uint32_t scale_bits = (t_bits << 23) + 0x3F800000u;
#if defined(__CUDA_ARCH__)
  const float scale = __uint_as_float(scale_bits);
#else
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
#endif
  return poly * scale;
}

}  // namespace sinkattn::cuda::ptx
