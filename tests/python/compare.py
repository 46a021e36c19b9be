"""The tolerance rule of DESIGN.md: against the float64 reference, the library's error may be at most
twice the error of the same math done by torch in the inputs' precision, plus a small atol; inf and
NaN only where the reference has them."""

from __future__ import annotations

import torch

# Floors for the atol: the rounding of the result's own dtype at its magnitude (as FA3's tests do),
# but never below what fp32 accumulation order alone can move. That floor is set by the terms,
# not the result, and every dtype accumulates in fp32: with one visible key dq = scale * (dP -
# delta) k is exactly 0, torch's order may cancel to 0 exactly while another order leaves ~1e-6
# of O(1) terms (a random case, 192 fp16 queries over one key: dq 7e-7 where torch had 0). 1e-5
# is the fp32 floor the C++ suite applies to every dtype too (tests/cpp/compare.cpp).
_FP32_FLOOR = 1e-5
# And a relative bound, the C++ suite's fp32 one (1e-5 of the largest magnitude), or of the
# caller's `magnitude` where larger: a kernel that reads its stored out and sums in another order
# than torch may be ~10 ulp off where dS = P (dP - delta) cancels (P near 1: 27 queries over one
# key, scale 4 / sqrt(128), dk 1.9e-5 off at |dk| 11, torch's fp32 4.6e-6), and a gradient that
# cancels to exactly 0 carries the fp32 residues of its terms (one key, no sink: dk over 504
# rows of a query group 1.4e-5 off 0; dq at scale 4 / sqrt(128) 1.6e-5), so cases.py passes
# the largest of the case's fp64 dq, dk, dv. Bugs (a wrong mask, scale or term) move a gradient
# by its own size, orders above. For 16-bit results the rounding term is far above it.
_RTOL = 1e-5


def check(name: str, got: torch.Tensor, ref64: torch.Tensor, ref_low: torch.Tensor, dtype,
          stored=None, magnitude: float = 0.0) -> None:
    """got: library result; ref64: float64 truth; ref_low: torch in `dtype` (the inputs' dtype).
    stored: optionally the contract's own formula evaluated in float64 on the outputs as the API
    stores them (out rounded to its dtype); its error is a second yardstick for results that the
    contract defines through the stored out (dsink = -sum exp(s - lse) dout.out). magnitude: the
    case's scale for the relative bound, if larger than this tensor's."""
    assert got.shape == ref64.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref64.shape)}"
    got64, ref_low = got.detach().double(), ref_low.detach().double()
    ref64 = ref64.detach()
    assert not torch.isnan(got64).any(), f"{name}: NaN in the result"
    inf = torch.isinf(ref64)
    assert torch.equal(torch.isinf(got64), inf), f"{name}: inf at other places than the reference"
    assert torch.equal(got64[inf], ref64[inf]), f"{name}: infinities of the wrong sign"
    if inf.all():
        return
    fin = ~inf
    ref = ref64[fin]  # the finite reference values, selected once
    err = (got64[fin] - ref).abs().max().item()
    err_torch = (ref_low[fin] - ref).abs().max().item()
    for y in (() if stored is None else stored if isinstance(stored, (list, tuple)) else (stored,)):
        err_torch = max(err_torch, (y.detach().double()[fin] - ref).abs().max().item())
    rounding = ((ref + 0.3 - 0.3).to(dtype).double() - ref).abs().max().item()
    atol = max(2 * rounding, _FP32_FLOOR) + _RTOL * max(ref.abs().max().item(), magnitude)
    assert err <= 2 * err_torch + atol, (
        f"{name}: max error {err:.3e} vs float64 > 2 x torch {dtype} error {err_torch:.3e} "
        f"+ atol {atol:.3e}")
