"""Standalone GPU check of the CUDA backend through the C ABI (so api.cpp validation runs too):
a shape grid against a plain float64 reference, forward and backward (incl. dsink), the
deterministic backward bit-identical twice; then timings (CUDA events, median).

usage: python3 check_cuda.py LIBSINKATTN.so [--no-grid] [--no-bench] [--small] [--only=SUBSTR,...]
(--small: a few small cases, for runs under compute-sanitizer; --only terms starting with "64-bit"
pick the BIG_CASES, whose tensors pass 2^31 elements)
Tolerance: max|kernel - fp64| <= 2 * max|torch-lowprec - fp64| + atol, where torch-lowprec runs
the same formulas with bf16/fp16 matmul operands and bf16/fp16 outputs (out, dq, dk, dv), as torch
would return them; atol = 1e-3 * max|fp64| + 1e-5 (lse: 1e-5 * max|fp64| + 1e-5, fp32 accuracy).
lse and dsink stay fp32.
"""
import functools
import itertools
import math
import statistics
import sys

import torch

from sinkattn_ctypes import Lib

NEG = float("-inf")


# ---- fp64 reference, written plainly (shares nothing with the kernels) ------------------------
def visible_mask(sq, sk, causal, left, right, device):
    i = torch.arange(sq, device=device).view(-1, 1)
    j = torch.arange(sk, device=device).view(1, -1)
    pos = i + (sk - sq)
    right = 0 if causal else right
    vis = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        vis &= j >= pos - left
    if right >= 0:
        vis &= j <= pos + right
    return vis


def reference_one(q, k, v, dout, sinks, scale, vis, mm_dtype):
    """One sequence. q (Sq, Hq, D), k/v (Sk, Hkv, D), float64 inputs. Matmul operands are
    rounded to mm_dtype (float64 = exact reference). Returns out, lse (Hq, Sq), dq, dk, dv,
    dsink (Hq,) and the backward is evaluated at the returned out."""
    hq, hkv = q.shape[1], k.shape[1]
    g = hq // hkv
    r = (lambda x: x.to(mm_dtype).to(torch.float64)) if mm_dtype != torch.float64 else (lambda x: x)
    qh = q.permute(1, 0, 2)                                  # (Hq, Sq, D)
    kh = k.permute(1, 0, 2).repeat_interleave(g, 0)          # (Hq, Sk, D)
    vh = v.permute(1, 0, 2).repeat_interleave(g, 0)
    doh = dout.permute(1, 0, 2)
    s = torch.matmul(r(qh), r(kh).transpose(1, 2)) * scale   # (Hq, Sq, Sk)
    s = s.masked_fill(~vis, NEG)
    m = s.amax(dim=2) if s.shape[2] > 0 else torch.full(s.shape[:2], NEG, dtype=s.dtype, device=s.device)
    if sinks is not None:
        m = torch.maximum(m, sinks.view(-1, 1))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m.unsqueeze(2))
    denom = e.sum(2) + (torch.exp(sinks.view(-1, 1) - m) if sinks is not None else 0)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    p = torch.where(denom.unsqueeze(2) > 0, e / safe.unsqueeze(2), torch.zeros_like(e))
    lse = torch.where(denom > 0, m + torch.log(safe), torch.full_like(m, NEG))
    out = torch.matmul(r(p), r(vh))                           # (Hq, Sq, D)
    if mm_dtype != torch.float64:
        out = r(out)
    delta = (doh * out).sum(2)                                 # (Hq, Sq)
    dp = torch.matmul(r(doh), r(vh).transpose(1, 2))
    ds = p * (dp - delta.unsqueeze(2))
    dq = torch.matmul(r(ds), r(kh)) * scale
    dk = (torch.matmul(r(ds).transpose(1, 2), r(qh)) * scale).view(hkv, g, -1, q.shape[2]).sum(1)
    dv = torch.matmul(r(p).transpose(1, 2), r(doh)).view(hkv, g, -1, q.shape[2]).sum(1)
    dsink = None
    if sinks is not None:
        ps = torch.where(torch.isfinite(lse), torch.exp(sinks.view(-1, 1) - lse),
                         torch.zeros_like(lse))
        dsink = -(ps * delta).sum(1)
    res = [out.permute(1, 0, 2), lse, dq.permute(1, 0, 2), dk.permute(1, 0, 2), dv.permute(1, 0, 2)]
    if mm_dtype != torch.float64:  # torch would hand back out and the gradients in mm_dtype
        res = [x if i == 1 else r(x) for i, x in enumerate(res)]
    return (*res, dsink)


# ---- one case -------------------------------------------------------------------------------
class Case:
    def __init__(self, name, *, B=1, sq=64, sk=64, hq=4, hkv=4, d=64, dtype=torch.bfloat16,
                 causal=False, left=-1, right=-1, sinks=False, varlen=None, strided=False,
                 mixed=False, exact=False):
        self.__dict__.update(locals())
        del self.__dict__["self"]


def rand(shape, dtype, scale=1.0):
    return (torch.randn(shape, device="cuda", dtype=torch.float32) * scale).to(dtype)


def laid_out(t, how):
    """t's values in layout `how`: "contig"; "heads", a (.., H, S, D) tensor viewed as
    (.., S, H, D); "padded", a slice of a tensor 8 elements wider per head."""
    if how == "heads":
        return t.transpose(-3, -2).contiguous().transpose(-3, -2)
    if how == "padded":
        wide = torch.empty(t.shape[:-1] + (t.shape[-1] + 8,), dtype=t.dtype, device=t.device)
        return wide[..., :t.shape[-1]].copy_(t)
    return t


# Case.mixed: neighbouring tensors in different layouts, so that a kernel reading one with
# another's strides (v with k's, dout with q's, dv with dk's) fails; tensors that share their
# strides let such a mix-up pass.
MIXED = {"q": "contig", "k": "heads", "v": "padded", "dout": "heads",
         "out": "heads", "dq": "padded", "dk": "contig", "dv": "heads"}


def tolerance(name, ref, err_lp):
    """The bound on max|kernel - fp64| (module docstring): twice the low-precision reference's
    error plus atol. lse is promised to fp32 accuracy (as tests/cpp/compare.cpp checks it): the
    backward and every merge of partial results read it; 1e-3 had let an lse summed from bf16 P
    (1.6e-3 off, the rejected portable row in docs/PERFORMANCE.md) pass."""
    rel = 1e-5 if name == "lse" else 1e-3
    return 2 * err_lp + rel * ref.abs().max().item() + 1e-5


def exact_rounding(c, out, dv, v, dout):
    """Case.exact: q = 0 and no sinks make every probability exactly 1 / Sk, and v, dout hold
    1 + m / 128, so out = mean_j v_j and dv = (1 / Sk) sum of dout over the group's heads and rows
    are exact in fp32 before their one rounding: a 16-bit store must give the nearest value (ties
    to even), which the max-error bound (an ulp or more) cannot tell from truncation. dv's P comes
    from the fp32 lse (log Sk, ~1e-7 off), which may decide exact ties: either neighbour there.
    Returns the failures."""
    f64, g = torch.float64, c.hq // c.hkv
    want_out = v.to(f64).mean(1).repeat_interleave(g, 1).unsqueeze(1)  # (B, 1, Hq, D)
    exact_dv = dout.to(f64).unflatten(2, (c.hkv, g)).sum((1, 3)).unsqueeze(1) / c.sk
    bits, least = (10, 2.0**-24) if c.dtype == torch.float16 else (7, 0.0)
    ulp = torch.ldexp(torch.ones_like(exact_dv), torch.frexp(exact_dv).exponent - 1 - bits)
    ulp = ulp.clamp_min(least)
    tie = exact_dv - torch.floor(exact_dv / ulp) * ulp == ulp / 2
    got_dv = dv.to(f64)
    bad_out = (out.to(f64) != want_out.to(c.dtype).to(f64)).sum().item()
    ok_dv = (got_dv == exact_dv.to(c.dtype).to(f64)) | (tie & ((got_dv - exact_dv).abs() == ulp / 2))
    bad_dv = (~ok_dv).sum().item()
    if not (bad_out or bad_dv):
        return []
    return [f"exact rounding: {bad_out} out and {bad_dv} dv elements not rounded to nearest"]


def run_case(lib, c, results):
    dev = "cuda"
    if c.varlen:
        lens_q, lens_k = c.varlen
        cu_q = torch.tensor([0] + list(itertools.accumulate(lens_q)), dtype=torch.int32, device=dev)
        cu_k = torch.tensor([0] + list(itertools.accumulate(lens_k)), dtype=torch.int32, device=dev)
        tq, tk = int(cu_q[-1]), int(cu_k[-1])
        shape_q, shape_k = (tq, c.hq, c.d), (tk, c.hkv, c.d)
        seqs = [(int(cu_q[b]), lens_q[b], int(cu_k[b]), lens_k[b]) for b in range(len(lens_q))]
    else:
        cu_q = cu_k = None
        shape_q, shape_k = (c.B, c.sq, c.hq, c.d), (c.B, c.sk, c.hkv, c.d)
    if c.strided:  # q, k, v as slices of one packed qkv tensor (row stride > H * D)
        qkv = rand(shape_q[:-2] + (c.hq + 2 * c.hkv, c.d), c.dtype)
        q, k, v = qkv[..., :c.hq, :], qkv[..., c.hq:c.hq + c.hkv, :], qkv[..., c.hq + c.hkv:, :]
    else:
        q, k, v = rand(shape_q, c.dtype), rand(shape_k, c.dtype), rand(shape_k, c.dtype)
    dout = rand(shape_q, c.dtype)
    if c.exact:  # see exact_rounding
        q = torch.zeros_like(q)
        v, dout = ((1 + torch.randint(0, 128, t.shape, device=dev) / 128).to(c.dtype)
                   for t in (v, dout))
    lay = (lambda name, t: laid_out(t, MIXED[name])) if c.mixed else (lambda name, t: t)
    q, k, v, dout = lay("q", q), lay("k", k), lay("v", v), lay("dout", dout)
    sinks = (torch.randn(c.hq, device=dev) * 2).float() if c.sinks else None
    prob = Lib.problem(q, k, v, sinks=sinks, causal=c.causal, left=c.left, right=c.right,
                       cu_q=cu_q, cu_k=cu_k, max_q=max(c.varlen[0]) if c.varlen else 0,
                       max_k=max(c.varlen[1]) if c.varlen else 0)
    out = lay("out", torch.full(shape_q, float("nan"), dtype=c.dtype, device=dev))
    lse_shape = (c.hq, shape_q[0]) if c.varlen else (c.B, c.hq, c.sq)
    lse = torch.full(lse_shape, float("nan"), dtype=torch.float32, device=dev)
    kernel = lib.fwd_kernel(prob, out, lse)
    lib.fwd(prob, out, lse)

    def grads(det):
        dq = lay("dq", torch.full(shape_q, float("nan"), dtype=c.dtype, device=dev))
        dk = lay("dk", torch.full(shape_k, float("nan"), dtype=c.dtype, device=dev))
        dv = lay("dv", torch.full(shape_k, float("nan"), dtype=c.dtype, device=dev))
        dsink = torch.full((c.hq,), float("nan"), device=dev) if c.sinks else None
        lib.bwd(prob, out, dout, lse, dq, dk, dv, dsink, det)
        return dq, dk, dv, dsink

    bkernel = lib.bwd_kernel(prob, out, dout, lse, torch.empty_like(q), torch.empty_like(k),
                             torch.empty_like(v), torch.empty(c.hq, device=dev) if c.sinks else None, False)
    g_det = grads(True)
    g_det2 = grads(True)
    g_fast = grads(False)
    torch.cuda.synchronize()

    # References per sequence, then compared tensor by tensor.
    if not c.varlen:
        seqs = [(b, c.sq, b, c.sk) for b in range(c.B)]
    f64 = torch.float64
    vals = {n: [] for n in ("out", "lse", "dq", "dk", "dv")}
    keys = ["out", "lse", "dq", "dk", "dv", "dsink"]
    acc = {key: [[], [], [], [], []] for key in keys}  # kernel, ref64, reflp, kernel_fast
    dsink_ref = [0, 0]
    dsink_own = [0]
    for (q0, lq, k0, lk) in seqs:
        if c.varlen:
            sl_q, sl_k = slice(q0, q0 + lq), slice(k0, k0 + lk)
            qs, ks, vs, dos = q[sl_q], k[sl_k], v[sl_k], dout[sl_q]
            ker = [out[sl_q], lse[:, sl_q], g_det[0][sl_q], g_det[1][sl_k], g_det[2][sl_k]]
            fast = [None, None, g_fast[0][sl_q], g_fast[1][sl_k], g_fast[2][sl_k]]
        else:
            b = q0
            qs, ks, vs, dos = q[b], k[b], v[b], dout[b]
            ker = [out[b], lse[b], g_det[0][b], g_det[1][b], g_det[2][b]]
            fast = [None, None, g_fast[0][b], g_fast[1][b], g_fast[2][b]]
        vis = visible_mask(lq, lk, c.causal, c.left, c.right, dev)
        s64 = sinks.to(f64) if sinks is not None else None
        # The backward is checked at the kernel's own out (what a framework would pass).
        ref = reference_one(qs.to(f64), ks.to(f64), vs.to(f64), dos.to(f64), s64, 1 / math.sqrt(c.d), vis, f64)
        lp = reference_one(qs.to(f64), ks.to(f64), vs.to(f64), dos.to(f64), s64, 1 / math.sqrt(c.d), vis, c.dtype)
        for idx, key in enumerate(keys[:5]):
            acc[key][0].append(ker[idx].to(f64).flatten())
            acc[key][1].append(ref[idx].flatten())
            acc[key][2].append(lp[idx].flatten())
            if fast[idx] is not None:
                acc[key][3].append(fast[idx].to(f64).flatten())
        if c.sinks:
            dsink_ref[0] = dsink_ref[0] + ref[5]
            dsink_ref[1] = dsink_ref[1] + lp[5]
            # The contract's formula on the kernel's own out and lse (what its backward reads).
            lse_k = ker[1].to(f64)
            delta_k = (dos.to(f64) * ker[0].to(f64)).sum(-1).t()
            p_sink = torch.where(torch.isfinite(lse_k), torch.exp(s64.view(-1, 1) - lse_k),
                                 torch.zeros_like(lse_k))
            dsink_own[0] = dsink_own[0] - (p_sink * delta_k).sum(1)
    ok = True
    msgs = []

    def compare(name, kern, r64, rlp, fast=None):
        nonlocal ok
        fin = torch.isfinite(r64)
        if not torch.equal(torch.isfinite(kern), fin) or not torch.equal(kern[~fin], r64[~fin]):
            ok = False
            msgs.append(f"{name}: non-finite mismatch ({int((~torch.isfinite(kern)).sum())} vs {int((~fin).sum())})")
            kern = torch.where(torch.isfinite(kern), kern, torch.zeros_like(kern))
        if fin.sum() == 0:
            return
        err = (kern[fin] - r64[fin]).abs().max().item()
        err_lp = (rlp[fin] - r64[fin]).abs().max().item()
        tol = tolerance(name, r64[fin], err_lp)
        good = err <= tol
        line = f"{name} err {err:.2e} (lowp {err_lp:.2e}, tol {tol:.2e})"
        if fast is not None:
            err_f = (fast[fin] - r64[fin]).abs().max().item()
            good = good and err_f <= tol
            line += f" fast {err_f:.2e}"
        if not good:
            ok = False
            line += " FAIL"
        msgs.append(line)

    for key in keys[:5]:
        if not acc[key][0]:
            continue
        cat = [torch.cat(x) if x else None for x in acc[key][:4]]
        compare(key, cat[0], cat[1], cat[2], cat[3])
    if c.sinks:
        # dsink is defined through the stored out: its yardstick is the larger of the low-precision
        # reference's error and that of the formula on the kernel's own out (whose error the out
        # check above bounds); the backward must reproduce that formula to fp32 accuracy.
        r64, own = dsink_ref[0], dsink_own[0]
        lp_or_own = max((dsink_ref[1], own), key=lambda y: (y - r64).abs().max().item())
        compare("dsink", g_det[3].to(f64), r64, lp_or_own, g_fast[3].to(f64))
        gap = (g_det[3].to(f64) - own).abs().max().item()
        if gap > 1e-4 * own.abs().max().item() + 1e-5:
            ok = False
            msgs.append(f"dsink {gap:.2e} from the formula on the kernel's out and lse FAIL")
    if c.exact:
        bad = exact_rounding(c, out, g_det[2], v, dout)
        ok = ok and not bad
        msgs += [m + " FAIL" for m in bad]
    same = all(torch.equal(a, b) for a, b in zip(g_det, g_det2) if a is not None)
    if not same:
        ok = False
        msgs.append("deterministic backward NOT bit-identical")
    results.append((c.name, ok))
    print(f"[{'PASS' if ok else 'FAIL'}] {c.name} [{kernel.split(' (')[0]} / {bkernel.split(' (')[0]}]: " + "; ".join(msgs), flush=True)


# 100 sequences of 0 to 22 rows (every third with 5 more keys) and, at index 50, one of 1300.
SHORT_DOCS = ([1300 if i == 50 else i * 7 % 23 for i in range(100)],
              [1300 if i == 50 else i * 7 % 23 + (5 if i % 3 == 0 else 0) for i in range(100)])


def grid():
    bf, fp = torch.bfloat16, torch.float16
    return [
        Case("seqlen1 gqa8 sinks causal", B=2, sq=1, sk=1, hq=8, hkv=1, d=64, causal=True, sinks=True),
        Case("113x203 12/4 d128 causal sinks", sq=113, sk=203, hq=12, hkv=4, d=128, causal=True, sinks=True),
        Case("239x1 7/7 d32 noncausal", sq=239, sk=1, hq=7, hkv=7, d=32),
        Case("1023x1024 64/8 d64 causal sinks", sq=1023, sk=1024, hq=64, hkv=8, d=64, causal=True, sinks=True),
        Case("window1 causal d64 sinks", sq=300, sk=300, hq=8, hkv=2, d=64, causal=True, left=0, sinks=True),
        Case("window>seq causal d96", sq=200, sk=250, hq=6, hkv=3, d=96, causal=True, left=5000),
        Case("window128 gptoss 1024", sq=1024, sk=1024, hq=16, hkv=2, d=64, causal=True, left=127, sinks=True),
        Case("noncausal (17,33) d96 sinks", B=2, sq=150, sk=170, hq=4, hkv=2, d=96, left=17, right=33, sinks=True),
        Case("d256 200x300 causal sinks", sq=200, sk=300, hq=4, hkv=2, d=256, causal=True, sinks=True),
        Case("d256 noncausal fp16", sq=77, sk=130, hq=2, hkv=1, d=256, dtype=fp),
        Case("sq>sk causal (empty rows) no sink", sq=100, sk=30, hq=4, hkv=4, d=64, causal=True),
        Case("sq>sk causal (empty rows) sinks fp16", sq=100, sk=30, hq=4, hkv=2, d=128, causal=True, sinks=True, dtype=fp),
        Case("sk=0 sinks", sq=17, sk=0, hq=4, hkv=2, d=64, sinks=True),
        Case("varlen zero-length causal sinks", hq=8, hkv=2, d=64, causal=True, sinks=True,
             varlen=([0, 37, 128, 1, 0, 300], [0, 37, 150, 1, 5, 300])),
        Case("varlen window 64 d128 fp16", hq=4, hkv=4, d=128, causal=True, left=63, dtype=fp,
             varlen=([129, 0, 513], [129, 7, 513])),
        Case("strided qkv d128 causal", B=2, sq=257, sk=257, hq=8, hkv=2, d=128, causal=True, strided=True),
        Case("strided qkv d32 fp16 sinks", sq=190, sk=190, hq=4, hkv=1, d=32, causal=True, sinks=True, strided=True, dtype=fp),
        # 16-bit stores round to nearest (exact_rounding), on each head dim's path
        Case("exact rounding d64 bf16", B=2, sq=256, sk=256, hq=8, hkv=2, d=64, exact=True),
        Case("exact rounding d128 fp16", sq=256, sk=256, hq=8, hkv=2, d=128, exact=True, dtype=fp),
        Case("exact rounding d96 bf16", sq=256, sk=256, hq=8, hkv=2, d=96, exact=True),
        Case("mixed layouts 1023x1024 64/8 d64 causal sinks", sq=1023, sk=1024, hq=64, hkv=8, d=64,
             causal=True, sinks=True, mixed=True),
        Case("mixed layouts d128 window 127 fp16", B=2, sq=600, sk=700, hq=8, hkv=2, d=128,
             causal=True, left=127, sinks=True, mixed=True, dtype=fp),
        Case("mixed layouts window 127 d64", sq=1024, sk=1024, hq=16, hkv=2, d=64, causal=True,
             left=127, sinks=True, mixed=True),
        Case("mixed layouts varlen d64", hq=16, hkv=2, d=64, causal=True, sinks=True, mixed=True,
             varlen=([700, 1, 300, 0], [900, 1500, 300, 5])),
        Case("mixed layouts decode d64", sq=1, sk=2000, hq=16, hkv=2, d=64, causal=True, sinks=True,
             mixed=True),
        Case("fp16 1023x1024 d64 causal", sq=1023, sk=1024, hq=8, hkv=8, d=64, causal=True, dtype=fp),
        Case("d128 llama-ish 1000 noncausal", sq=1000, sk=1000, hq=8, hkv=2, d=128, sinks=True),
        # Many key blocks (stage reuse over several phases), both Hopper head dims.
        Case("2000x2100 B2 64/8 d64 noncausal sinks", B=2, sq=2000, sk=2100, hq=16, hkv=2, d=64, sinks=True),
        Case("1500x1500 d128 causal sinks fp16", sq=1500, sk=1500, hq=4, hkv=1, d=128, causal=True, sinks=True, dtype=fp),
        # The d 64 Hopper forward's 192-row tiles under a causal mask with a last tile cut short:
        # 2500 leaves 4 rows in it (its last two consumers see no row), Sq < Sk, and packed
        # documents with a tile cut short each (37 rows: one tile).
        Case("causal d64 2500 sinks (192-row tiles)", sq=2500, sk=2500, hq=8, hkv=1, d=64, causal=True, sinks=True),
        Case("causal d64 1500x2000 fp16 (192-row tiles)", sq=1500, sk=2000, hq=4, hkv=2, d=64, causal=True,
             dtype=fp),
        Case("varlen d64 causal long docs sinks (192-row tiles)", hq=8, hkv=2, d=64, causal=True, sinks=True,
             varlen=([1100, 0, 1500, 37, 2049], [1100, 0, 1700, 37, 2049])),
        # A wide window at d 128: the last steps of a key block's walk are seen by its second
        # 64 keys only (the Hopper backward's first consumer skips them), the first by its first.
        Case("window 1100 d128 causal 2600 sinks", sq=2600, sk=2600, hq=8, hkv=2, d=128, causal=True, left=1100,
             sinks=True),
        Case("window (100, 50) d64 B2 sinks", B=2, sq=1200, sk=1300, hq=8, hkv=4, d=64, left=100, right=50, sinks=True),
        # Narrow d 64 windows with Sq < Sk (the band shifted to the bottom right): on the 64-key
        # grid (Sk - Sq = 128) the consumers take spans, off it (Sk - Sq = 300) they walk.
        Case("window 128 d64 sq 500 sk 628 sinks", sq=500, sk=628, hq=8, hkv=1, d=64, causal=True, left=127, sinks=True),
        Case("window 128 d64 fp16 sq 640 sk 768 sinks", sq=640, sk=768, hq=4, hkv=2, d=64, causal=True, left=127,
             sinks=True, dtype=fp),
        Case("window (60, 60) d64 700x1000 fp16", sq=700, sk=1000, hq=6, hkv=2, d=64, left=60, right=60, sinks=True, dtype=fp),
        Case("varlen many docs d128 sinks", hq=8, hkv=2, d=128, causal=True, sinks=True,
             varlen=([1, 300, 129, 1000, 0, 64, 700], [1, 300, 200, 1000, 3, 64, 900])),
        Case("varlen many docs d64 window 127", hq=16, hkv=2, d=64, causal=True, left=127, sinks=True,
             varlen=([513, 2, 777, 1300, 0, 90], [513, 2, 777, 1300, 0, 90])),
        # Narrow windows whose first query rows see no key: Sq > Sk, and a packed sequence
        # without keys (the narrow-window backward kernel never walks those rows).
        Case("window 64 d64 sq 700 sk 300 (empty rows) sinks", sq=700, sk=300, hq=8, hkv=2, d=64, causal=True,
             left=63, sinks=True),
        Case("varlen window 127 d64 empty keys", hq=8, hkv=2, d=64, causal=True, left=127, sinks=True,
             varlen=([300, 50, 0, 700], [300, 0, 20, 1000])),
        # The GQA-packed band forward (sm90 fwd_band_kernel.h: d 64, groups of 8k heads, windows
        # with left + right <= 128): empty rows, both sides bounded, the widest span (128, 0), a
        # diagonal-only window, packed sequences without keys, runs cut by the sequence's end.
        Case("band window 64 group 8 sq 700 sk 300 (empty rows) sinks", sq=700, sk=300, hq=8, hkv=1, d=64,
             causal=True, left=63, sinks=True),
        Case("band window (64, 64) group 16 B2 333x400 fp16 sinks", B=2, sq=333, sk=400, hq=16, hkv=1, d=64,
             left=64, right=64, sinks=True, dtype=fp),
        Case("band window (128, 0) group 8 1000x1100 fp16", sq=1000, sk=1100, hq=8, hkv=1, d=64, left=128,
             right=0, dtype=fp),
        Case("band window1 group 8 no sink", sq=130, sk=130, hq=8, hkv=1, d=64, causal=True, left=0),
        Case("band varlen window 127 group 8 empty keys sinks", hq=16, hkv=2, d=64, causal=True, left=127,
             sinks=True, varlen=([300, 50, 0, 700, 17], [300, 0, 20, 1000, 17])),
        # Many short sequences beside a long one: the dsink partials and the dq handoff counters
        # keep a slot per 64 rows a sequence has, with free slots between sequences.
        Case("varlen 100 short docs and a long one sinks", hq=8, hkv=2, d=64, causal=True, sinks=True,
             varlen=SHORT_DOCS),
        Case("varlen 100 short docs and a long one window 127 sinks", hq=8, hkv=2, d=64, causal=True,
             left=127, sinks=True, varlen=SHORT_DOCS),
        # and the grids over slots (sm80/grid.h): the d 128 forward (a block per tile), dq kernels
        Case("varlen 100 short docs and a long one d128 sinks", hq=8, hkv=2, d=128, causal=True,
             sinks=True, varlen=SHORT_DOCS),
        Case("band varlen 100 short docs and a long one group 8 sinks", hq=16, hkv=2, d=64, causal=True,
             left=127, sinks=True, varlen=SHORT_DOCS),
        # Causal documents of up to 129 keys under query groups of 8: the band kernels, with the
        # mask's bounds cut to the lengths (dispatch.cu kernel_mask): Sq != Sk both ways, empty
        # documents, 129 keys; a window wider than every document; a full mask (both cut).
        Case("band (cut causal) varlen short docs group 8 sinks", hq=16, hkv=2, d=64, causal=True, sinks=True,
             varlen=([129, 0, 64, 40, 1, 100, 17], [129, 7, 100, 10, 1, 129, 17])),
        Case("band (cut causal) B3 129 group 8 fp16 sinks", B=3, sq=129, sk=129, hq=8, hkv=1, d=64,
             causal=True, sinks=True, dtype=fp),
        Case("band (cut window 300) varlen docs group 8", hq=8, hkv=1, d=64, causal=True, left=300,
             varlen=([90, 3, 100], [90, 3, 100])),
        Case("band (cut full) 50x60 B2 group 8 sinks", B=2, sq=50, sk=60, hq=8, hkv=1, d=64, sinks=True),
        # Sequences of up to 512 keys outside the band kernels: the backward's narrow-window
        # kernel, with the bounds cut likewise (its dq handed on; causal, Sq != Sk both ways, full).
        Case("narrow bwd (cut causal) varlen docs d128 sinks", hq=8, hkv=2, d=128, causal=True, sinks=True,
             varlen=([500, 0, 300, 64, 400], [512, 5, 200, 64, 500])),
        Case("narrow bwd (cut causal) B2 512 d64 group 4", B=2, sq=512, sk=512, hq=8, hkv=2, d=64, causal=True),
        Case("narrow bwd (cut full) 200x250 B2 d128 fp16 sinks", B=2, sq=200, sk=250, hq=4, hkv=2, d=128,
             sinks=True, dtype=fp),
        # Decode-sized queries: the packed-group forward (group * sq <= 16 rows in one tile).
        Case("decode q1 16/2 d64 sinks", B=3, sq=1, sk=1000, hq=16, hkv=2, d=64, causal=True, sinks=True),
        Case("decode q2 group 8 d128 window 100 sinks", B=2, sq=2, sk=777, hq=8, hkv=1, d=128, causal=True, left=99, sinks=True),
        Case("decode q4 group 4 d128 fp16", sq=4, sk=513, hq=8, hkv=2, d=128, causal=True, dtype=fp),
        Case("decode q3 group 5 d96 noncausal sinks", B=2, sq=3, sk=200, hq=10, hkv=2, d=96, sinks=True),
        Case("decode q1 d32 MHA window (7, 0)", sq=1, sk=300, hq=3, hkv=3, d=32, causal=True, left=7),
        Case("decode varlen q 1..2 group 8 sinks", hq=16, hkv=2, d=64, causal=True, sinks=True,
             varlen=([1, 0, 2, 1, 2], [300, 5, 0, 64, 2])),
        Case("decode varlen long keys (key splits) sinks", hq=8, hkv=1, d=64, causal=True, sinks=True,
             varlen=([1, 2, 1], [5000, 3000, 0])),
    ]


# Problems whose q, out and dq hold more than 2^31 elements, each checked on a sub-problem that
# holds everything its compared rows and keys depend on. (name, d, left, rows, docs): a fixed
# layout of `rows` positions whose last 100 query rows (and the keys only they see) are compared,
# or `docs` packed causal documents of `rows` tokens each, the last of which is compared whole.
BIG_CASES = (
    ("64-bit offsets d128 window 32", 128, 31, 270000, 0),       # the d 128 forward, dK/dV, dq
    ("64-bit offsets d64 window 128 band", 64, 127, 540000, 0),  # the GQA-packed band kernels
    ("64-bit offsets d64 packed causal", 64, -1, 2048, 262),     # 192-row tiles, causal backward
)


def big_check(lib, results, name, d, left, rows, docs, hq=64, hkv=8, tail=100):
    """One of BIG_CASES; both backward modes (the deterministic one has its own dq kernel)."""
    packed = docs > 0
    T = rows * docs if packed else rows
    lead = (T,) if packed else (1, T)
    shape_q, shape_k = lead + (hq, d), lead + (hkv, d)
    q, k, v = rand(shape_q, torch.bfloat16), rand(shape_k, torch.bfloat16), rand(shape_k, torch.bfloat16)
    assert q.numel() > 2**31
    dout = rand(shape_q, torch.bfloat16)
    sinks = torch.randn(hq, device="cuda")
    if packed:
        prob, cu = packed_problem(q, k, v, sinks, [rows] * docs)
        lse = torch.full((hq, T), float("nan"), device="cuda")
    else:
        prob = Lib.problem(q, k, v, sinks=sinks, causal=True, left=left)
        lse = torch.full((1, hq, T), float("nan"), device="cuda")
    out = torch.full_like(q, float("nan"))
    kernel = lib.fwd_kernel(prob, out, lse).split(" (")[0]
    lib.fwd(prob, out, lse)
    dq, dk, dv = torch.full_like(q, float("nan")), torch.full_like(k, float("nan")), torch.full_like(v, float("nan"))
    dsink = torch.empty(hq, device="cuda")
    bkernel = lib.bwd_kernel(prob, out, dout, lse, dq, dk, dv, dsink, False).split(" (")[0]
    lib.bwd(prob, out, dout, lse, dq, dk, dv, dsink, False)
    dq_det = torch.full_like(q, float("nan"))
    lib.bwd(prob, out, dout, lse, dq_det, torch.empty_like(k), torch.empty_like(v), dsink, True)
    torch.cuda.synchronize()
    flat = (lambda x: x) if packed else (lambda x: x[0])
    lse_rows = lse if packed else lse[0]
    # Compared query rows [r0, T) see keys [k0, T); keys [r0, T) are seen by those rows only.
    r0, k0 = (T - rows, T - rows) if packed else (T - tail, T - tail - left)
    f64 = torch.float64
    qs, ks, vs, dos = flat(q)[r0:], flat(k)[k0:], flat(v)[k0:], flat(dout)[r0:]
    vis = visible_mask(T - r0, T - k0, True, left, -1, "cuda")
    ref = reference_one(qs.to(f64), ks.to(f64), vs.to(f64), dos.to(f64), sinks.to(f64), 1 / math.sqrt(d), vis, f64)
    lp = reference_one(qs.to(f64), ks.to(f64), vs.to(f64), dos.to(f64), sinks.to(f64), 1 / math.sqrt(d), vis, torch.bfloat16)
    ok = True
    msgs = []
    kk = r0 - k0  # the sub-problem's first key whose gradient is complete
    for what, kern, r, l in (("out", flat(out)[r0:], ref[0], lp[0]), ("lse", lse_rows[:, r0:], ref[1], lp[1]),
                             ("dq", flat(dq)[r0:], ref[2], lp[2]), ("dq det", flat(dq_det)[r0:], ref[2], lp[2]),
                             ("dk", flat(dk)[r0:], ref[3][kk:], lp[3][kk:]),
                             ("dv", flat(dv)[r0:], ref[4][kk:], lp[4][kk:])):
        kern = kern.to(f64)
        err = (kern - r).abs().max().item()
        tol = tolerance(what, r, (l - r).abs().max().item())
        good = bool(torch.isfinite(kern).all()) and err <= tol
        ok &= good
        msgs.append(f"{what} err {err:.2e} tol {tol:.2e}" + ("" if good else " FAIL"))
    finite = all(bool(torch.isfinite(x).all()) for x in (out, dq, dq_det, dk, dv))
    ok &= finite
    results.append((name, ok))
    print(f"[{'PASS' if ok else 'FAIL'}] {name} [{kernel} / {bkernel}] ({q.numel()} elements in q), "
          f"all outputs finite: {finite}: " + "; ".join(msgs), flush=True)
    del q, k, v, dout, out, dq, dq_det, dk, dv, ref, lp
    lib.ws_cache.clear()
    torch.cuda.empty_cache()


# ---- timing ---------------------------------------------------------------------------------
def median_ms(fn, warmup=3, iters=10, reps=5):
    """Median over iters of the mean time of reps back-to-back calls: the queue stays full, as in
    training, so a short kernel is not charged the host's launch latency (a single call timed
    after a synchronize was: ~0.07 ms of a 0.32 ms kernel at window 128)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / reps)
    return statistics.median(times)


def pairs(s, left):
    return sum(min(i + 1, left + 1) if left >= 0 else i + 1 for i in range(s))


def kernel_breakdown(what, fns):
    """Per-kernel GPU time over one call of each fn (torch profiler / CUPTI): each kernel's launch
    count, total and mean per launch."""
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for fn in fns:
            fn()
        torch.cuda.synchronize()
    print(f"kernels of {what}:")
    for e in prof.key_averages():
        if e.device_time_total > 0:
            print(f"   {e.key[:70]:70s} n={e.count:2d} total {e.device_time_total / 1000:8.3f} ms"
                  f" mean {e.device_time_total / e.count / 1000:8.3f} ms")


def doc_lengths(total, lo, hi, seed=0, long=0):
    """Document lengths in [lo, hi] summing to total (the last one takes the remainder); with
    long > 0, one document of `long` tokens amid them (of the total)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while total - long - sum(out) > hi:
        out.append(int(torch.randint(lo, hi + 1, (1,), generator=g)))
    out.append(total - long - sum(out))
    return out[:len(out) // 2] + [long] + out[len(out) // 2:] if long else out


def packed_problem(q, k, v, sinks, lens, left=-1):
    """A causal problem over documents of the given lengths packed along q, k, v's first dim, and
    its cu_seqlens tensor, which the caller keeps alive (the problem holds only its address)."""
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    return Lib.problem(q, k, v, sinks=sinks, causal=True, left=left, cu_q=cu, cu_k=cu,
                       max_q=max(lens), max_k=max(lens)), cu


def bench_varlen(lib, total=32768, hq=64, hkv=8, d=64):
    """gptoss, causal, sinks: packed documents of 256..8k tokens totalling 32k against the same
    32k tokens as one sequence; TFLOP/s of visible pairs (the Hopper issue's 0.9x ratio)."""
    rows = []
    for name, docs in (("gptoss varlen 32k docs 256..8k", doc_lengths(total, 256, 8192)),
                       ("gptoss 32k one sequence", [total])):
        q, k, v = rand((total, hq, d), torch.bfloat16), rand((total, hkv, d), torch.bfloat16), rand((total, hkv, d), torch.bfloat16)
        dout = rand((total, hq, d), torch.bfloat16)
        sinks = torch.randn(hq, device="cuda")
        prob, cu = packed_problem(q, k, v, sinks, docs)
        out, lse = torch.empty_like(q), torch.empty((hq, total), device="cuda")
        dq, dk, dv, dsink = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty(hq, device="cuda")
        f = lambda: lib.fwd(prob, out, lse)
        bw = lambda det: (lambda: lib.bwd(prob, out, dout, lse, dq, dk, dv, dsink, det))
        t_f, t_b, t_bd = median_ms(f), median_ms(bw(False)), median_ms(bw(True))
        fl = 4.0 * hq * sum(n * (n + 1) // 2 for n in docs) * d
        rows.append((name + f" ({len(docs)} docs)" * (len(docs) > 1), t_f, t_b, t_bd, fl / t_f / 1e9,
                     2.5 * fl / t_b / 1e9, 2.5 * fl / t_bd / 1e9))
    return rows


def bench_decode(lib, batch=64, sk=8192, hq=64, hkv=8, d=64):
    """gptoss decode (one new token per sequence against a k/v cache), forward only: GB/s of the
    cache read, against SDPA (no sinks) on the same tensors."""
    q = rand((batch, 1, hq, d), torch.bfloat16)
    k, v = rand((batch, sk, hkv, d), torch.bfloat16), rand((batch, sk, hkv, d), torch.bfloat16)
    sinks = torch.randn(hq, device="cuda")
    prob = Lib.problem(q, k, v, sinks=sinks, causal=True)
    out, lse = torch.empty_like(q), torch.empty((batch, hq, 1), device="cuda")
    t = median_ms(lambda: lib.fwd(prob, out, lse))
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    t_sd = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True))
    gb = 2 * k.numel() * k.element_size() / 1e9
    print(f"decode B {batch} q 1 k {sk} ({lib.fwd_kernel(prob, out, lse).split(' (')[0]}): "
          f"{t:.3f} ms ({gb / t * 1e3:.0f} GB/s); SDPA (no sinks) {t_sd:.3f} ms ({gb / t_sd * 1e3:.0f} GB/s)", flush=True)


# Timed shapes, causal: (name, seqlen, heads_q, heads_kv, head_dim, learned sinks, window left).
BENCH_SHAPES = [("gptoss 4k causal", 4096, 64, 8, 64, True, -1),
                ("gptoss 16k causal", 16384, 64, 8, 64, True, -1),
                ("gptoss 16k window128", 16384, 64, 8, 64, True, 127),
                ("llama 8k causal", 8192, 32, 8, 128, False, -1)]


def bench(lib):
    for batch, sk in ((64, 8192), (1, 8192), (1, 32768)):
        bench_decode(lib, batch, sk)
    rows, profiled = [], []
    for name, s, hq, hkv, d, sink, left in BENCH_SHAPES:
        q, k, v = rand((1, s, hq, d), torch.bfloat16), rand((1, s, hkv, d), torch.bfloat16), rand((1, s, hkv, d), torch.bfloat16)
        dout = rand((1, s, hq, d), torch.bfloat16)
        sinks = torch.randn(hq, device="cuda") if sink else None
        prob = Lib.problem(q, k, v, sinks=sinks, causal=True, left=left)
        out = torch.empty_like(q)
        lse = torch.empty((1, hq, s), device="cuda")
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dsink = torch.empty(hq, device="cuda") if sink else None
        # Bound now, not looked up at call time: the profiled calls run after the loop, and
        # lambdas over the loop's names would all run its last shape (llama 8k).
        f = functools.partial(lib.fwd, prob, out, lse)
        print(f"{name}: forward kernel {lib.fwd_kernel(prob, out, lse)}, backward kernel "
              f"{lib.bwd_kernel(prob, out, dout, lse, dq, dk, dv, dsink, False)}", flush=True)
        bw = lambda det, a=(prob, out, dout, lse, dq, dk, dv, dsink): functools.partial(lib.bwd, *a, det)
        t_f = median_ms(f)
        t_b = median_ms(bw(False))
        t_bd = median_ms(bw(True))
        fl = 4.0 * hq * pairs(s, left) * d
        if name == "gptoss 16k causal" or name == "gptoss 16k window128":
            profiled.append((name, [f, bw(False), bw(True)]))
        rows.append((name, t_f, t_b, t_bd, fl / t_f / 1e9, 2.5 * fl / t_b / 1e9, 2.5 * fl / t_bd / 1e9))
        # Peer in the same process: SDPA flash (no sinks) for calibration, full causal only.
        if left < 0:
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            sd = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
            t_sd = median_ms(sd)
            rows.append(("  SDPA (no sinks) " + name, t_sd, float("nan"), float("nan"), fl / t_sd / 1e9, float("nan"), float("nan")))
    rows += bench_varlen(lib)
    # Profiled after every timing, so that no timing follows the profiler: the window forward,
    # timed right after the profiled 16k shape, read ~7% above compare_libs.py and the suite
    # (0.232 against 0.214-0.216 ms); with the profiling last it reads as they do (0.213 against
    # 0.211 ms, H200, 2026-12-02).
    for name, fns in profiled:
        kernel_breakdown(f"{name} (fwd, bwd atomic, bwd deterministic)", fns)
    print(f"\n{'shape':34s} {'fwd ms':>8s} {'bwd ms':>8s} {'bwdDet ms':>9s} {'fwd TF/s':>9s} {'bwd TF/s':>9s} {'bwdDet TF/s':>11s} {'f+b ms':>8s}")
    for r in rows:
        print(f"{r[0]:34s} {r[1]:8.3f} {r[2]:8.3f} {r[3]:9.3f} {r[4]:9.1f} {r[5]:9.1f} {r[6]:11.1f} {r[1] + r[2]:8.3f}")


def main():
    lib = Lib(sys.argv[1])
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), flush=True)
    if "--no-grid" not in sys.argv:
        results = []
        cases = grid()
        if "--small" in sys.argv:
            small = ("113x203", "varlen zero-length", "window1", "d256 noncausal", "sq>sk causal (empty rows) sinks",
                     "decode q2", "decode varlen")
            cases = [c for c in cases if c.name.startswith(small)]
        only = [x for a in sys.argv if a.startswith("--only=") for x in a[7:].split(",") if x]
        if only:  # grid cases whose names contain one of the substrings (BIG_CASES: "64-bit...")
            cases = [c for c in cases if any(o in c.name for o in only)]
        for c in cases:
            try:
                run_case(lib, c, results)
            except Exception as e:  # report and go on
                results.append((c.name, False))
                print(f"[FAIL] {c.name}: exception {e}", flush=True)
        for big in BIG_CASES if "--small" not in sys.argv else ():
            if only and not any(o.startswith("64-bit") and o in big[0] for o in only):
                continue
            try:
                big_check(lib, results, *big)
            except Exception as e:
                results.append((big[0], False))
                print(f"[FAIL] {big[0]}: exception {e}", flush=True)
        n_ok = sum(ok for _, ok in results)
        print(f"\nGRID: {n_ok}/{len(results)} cases passed", flush=True)
    if "--no-bench" not in sys.argv:
        bench(lib)


if __name__ == "__main__":
    main()
