/* Plain C use of sinkattn: a small causal, windowed attention with learned sinks on the CPU,
 * forward and backward, with one output row checked against a direct computation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "sinkattn/sinkattn.h"

enum { S = 16, HQ = 4, HKV = 2, D = 32, WINDOW_LEFT = 7 };

static float frand(unsigned* state) { /* uniform in [-1, 1) */
  *state = *state * 1664525u + 1013904223u;
  return (float)(*state >> 8) / 8388608.0f - 1.0f;
}

static sinkattn_tensor contiguous(void* data, int heads) {
  sinkattn_tensor t = {data, (int64_t)S * heads * D, (int64_t)heads * D, D};
  return t;
}

static int fail(const char* what, sinkattn_status st) {
  fprintf(stderr, "c_example: %s failed (status %d): %s\n", what, (int)st, sinkattn_last_error());
  return 1;
}

int main(void) {
  static float q[S * HQ * D], k[S * HKV * D], v[S * HKV * D], out[S * HQ * D], dout[S * HQ * D];
  static float dq[S * HQ * D], dk[S * HKV * D], dv[S * HKV * D], lse[HQ * S];
  float sinks[HQ], dsink[HQ];
  unsigned seed = 12345u;
  for (int i = 0; i < S * HQ * D; ++i) q[i] = frand(&seed), dout[i] = frand(&seed);
  for (int i = 0; i < S * HKV * D; ++i) k[i] = frand(&seed), v[i] = frand(&seed);
  for (int h = 0; h < HQ; ++h) sinks[h] = frand(&seed);

  sinkattn_problem p = {0};
  p.device_type = SINKATTN_DEVICE_CPU;
  p.dtype = SINKATTN_FLOAT32;
  p.head_dim = D;
  p.batch = 1, p.seqlen_q = S, p.seqlen_k = S, p.heads_q = HQ, p.heads_kv = HKV;
  p.q = contiguous(q, HQ), p.k = contiguous(k, HKV), p.v = contiguous(v, HKV);
  p.sinks = sinks;
  p.scale = 1.0f / sqrtf((float)D);
  p.causal = 1, p.window_left = WINDOW_LEFT, p.window_right = -1;

  sinkattn_fwd_params f = {0};
  f.problem = p, f.out = contiguous(out, HQ), f.lse = lse;
  sinkattn_status st = sinkattn_fwd_workspace_size(&f, &f.workspace_size);
  if (st != SINKATTN_OK) return fail("sinkattn_fwd_workspace_size", st);
  f.workspace = f.workspace_size ? aligned_alloc(256, (f.workspace_size + 255) / 256 * 256) : NULL;
  if ((st = sinkattn_fwd(&f)) != SINKATTN_OK) return fail("sinkattn_fwd", st);

  sinkattn_bwd_params b = {0};
  b.problem = p, b.out = f.out, b.dout = contiguous(dout, HQ), b.lse = lse;
  b.dq = contiguous(dq, HQ), b.dk = contiguous(dk, HKV), b.dv = contiguous(dv, HKV);
  b.dsink = dsink;
  if ((st = sinkattn_bwd_workspace_size(&b, &b.workspace_size)) != SINKATTN_OK)
    return fail("sinkattn_bwd_workspace_size", st);
  b.workspace = b.workspace_size ? aligned_alloc(256, (b.workspace_size + 255) / 256 * 256) : NULL;
  if ((st = sinkattn_bwd(&b)) != SINKATTN_OK) return fail("sinkattn_bwd", st);

  /* Row S-1 of query head 1 (kv head 0) directly from the formulas in sinkattn.h. */
  const int i = S - 1, h = 1, hk = h / (HQ / HKV);
  double x[S], m = sinks[h], denom = 0.0, err = 0.0;
  for (int j = i - WINDOW_LEFT; j <= i; ++j) {
    double dot = 0.0;
    for (int c = 0; c < D; ++c) dot += (double)q[(i * HQ + h) * D + c] * k[(j * HKV + hk) * D + c];
    x[j] = p.scale * dot;
    if (x[j] > m) m = x[j];
  }
  denom = exp(sinks[h] - m);
  for (int j = i - WINDOW_LEFT; j <= i; ++j) denom += exp(x[j] - m);
  for (int c = 0; c < D; ++c) {
    double o = 0.0;
    for (int j = i - WINDOW_LEFT; j <= i; ++j) o += exp(x[j] - m) / denom * v[(j * HKV + hk) * D + c];
    err = fmax(err, fabs(o - out[(i * HQ + h) * D + c]));
  }
  double lse_err = fabs(m + log(denom) - lse[h * S + i]);
  int finite = 1;
  for (int e = 0; e < S * HQ * D; ++e) finite &= isfinite(dq[e]) != 0;
  for (int e = 0; e < S * HKV * D; ++e) finite &= isfinite(dk[e]) && isfinite(dv[e]);
  for (int e = 0; e < HQ; ++e) finite &= isfinite(dsink[e]) != 0;

  int ok = err < 1e-5 && lse_err < 1e-5 && finite;
  printf("c_example: sinkattn %d, out row error %.2e, lse error %.2e, dsink[0] %.6f, gradients %s: %s\n",
         sinkattn_version(), err, lse_err, dsink[0], finite ? "finite" : "NOT finite",
         ok ? "ok" : "FAILED");
  free(f.workspace);
  free(b.workspace);
  return ok ? 0 : 1;
}
