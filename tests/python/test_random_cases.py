"""Random cases against the float64 reference: forward, lse and every gradient, drawn fresh each run
around the lengths, windows and query groups where the kernels change shape (tile edges of 16 to
192 rows, the 1024-row short-tile limit, the band forward's 144-key span, decode-sized queries,
Sq != Sk, zero-length packed sequences). The fixed grids (test_attention.py, test_cuda.py,
tests/cuda/check_cuda.py) pin known cases; this finds the ones nobody listed.

SINKATTN_TEST_SEED (printed in pytest's header) replays a run's cases; SINKATTN_RANDOM_CASES=N
draws N cases per device (default: 24 on the CPU, 160 on a GPU). On a GPU a quarter of the cases
force the portable path (SINKATTN_CUDA_PATH=sm80)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

import sinkattn
from sinkattn import _lib

from cases import leaf, make, make_varlen, run_and_compare

_SEED = int(os.environ.get("SINKATTN_TEST_SEED", "0"))  # conftest sets it for every run
_CUDA = torch.cuda.is_available() and _lib.HAS_CUDA
_DEVICES = ["cpu"] + (["cuda"] * _CUDA)


def _count(device):
    n = os.environ.get("SINKATTN_RANDOM_CASES")
    return int(n) if n else (160 if device == "cuda" else 24)


# Lengths next to the kernels' edges: 16-row decode packing, 64 / 128 / 192-row tiles, 1024
# (short tiles), 2048.
_EDGES = [1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257, 383, 384,
          385, 1023, 1024, 1025, 2047, 2048, 2049]
# Window bounds next to the band forward's limit (16 + left + right <= 144) and the narrow-window
# kernels' (left + right < 1024).
_LEFTS = [None, 0, 1, 15, 63, 64, 111, 112, 113, 127, 128, 129, 200, 1000, 1023, 1024]
_RIGHTS = [None, 0, 1, 15, 16, 17, 63, 64]


@dataclass
class Case:
    dtype: torch.dtype
    d: int
    hq: int
    hkv: int
    causal: bool
    window: object
    sinks: bool
    deterministic: bool
    lse_grad: bool
    portable: bool                       # CUDA: SINKATTN_CUDA_PATH=sm80
    scale: Optional[float] = None        # None: 1 / sqrt(d)
    b: int = 1
    sq: int = 0
    sk: int = 0
    transposed: bool = False             # q, k, v as (B, H, S, D).transpose(1, 2) views
    lens: Optional[tuple] = None         # varlen: (lens_q, lens_k, pad, pass max_seqlen)

    def pairs(self):
        """Score entries the dense reference holds (its size)."""
        if self.lens is None:
            return self.b * self.hq * self.sq * self.sk
        lq, lk = self.lens[0], self.lens[1]
        return self.hq * sum(a * b for a, b in zip(lq, lk))

    def __str__(self):
        shape = (f"varlen q {list(self.lens[0])} k {list(self.lens[1])} pad {self.lens[2]}"
                 f"{' max_seqlen' if self.lens[3] else ''}" if self.lens else
                 f"b {self.b} sq {self.sq} sk {self.sk}{' transposed' if self.transposed else ''}")
        return (f"{shape}, hq {self.hq} hkv {self.hkv} d {self.d} {str(self.dtype)[6:]}, "
                f"{'causal' if self.causal else 'not causal'}, window {self.window}, "
                f"{'sinks' if self.sinks else 'no sinks'}"
                f"{', deterministic' if self.deterministic else ''}"
                f"{', lse grad' if self.lse_grad else ''}{', portable' if self.portable else ''}"
                f"{f', scale {self.scale:g}' if self.scale else ''}")


def _length(rng, most):
    """A length next to an edge (sometimes shifted by a few rows) or uniform, at most `most`."""
    edges = [e for e in _EDGES if e <= most]
    n = rng.choice(edges) if rng.random() < 0.7 else rng.randint(1, most)
    if rng.random() < 0.2:
        n += rng.randint(-3, 3)
    return max(0, min(most, n))


def _window(rng, causal):
    r = rng.random()
    if r < 0.35:
        return None
    if r < 0.6:
        return rng.choice([1, 2, 16, 17, 64, 100, 127, 128, 129, 144, 256, 1000, 1024, 1025])
    left = rng.choice(_LEFTS)
    right = rng.choice([None, 0]) if causal else rng.choice(_RIGHTS)
    return (left, right)


def draw(device, index):
    """Case `index` of this run on `device`: a pure function of the seed, so a run replays."""
    rng = random.Random(f"{_SEED}-{device}-{index}")
    cuda = device == "cuda"
    budget = 2e7 if cuda else 1.5e5  # score entries: the float64 reference's size
    dtypes = [torch.bfloat16, torch.float16] + [torch.float32] * (not cuda)
    d = rng.choice([64, 64, 64, 128, 128, 32, 96, 256])
    hkv = rng.choice([1, 1, 2, 3])
    group = rng.choice([1, 2, 4, 8, 8, 16] if cuda else [1, 2, 3, 4, 8])
    causal = rng.random() < 0.65
    c = Case(dtype=rng.choice(dtypes), d=d, hq=hkv * group, hkv=hkv, causal=causal,
             window=_window(rng, causal), sinks=rng.random() < 0.8,
             deterministic=rng.random() < 0.25, lse_grad=rng.random() < 0.2,
             portable=cuda and rng.random() < 0.25,
             scale=d ** -0.5 * rng.choice([0.25, 0.5, 2.0, 4.0]) if rng.random() < 0.2 else None)
    most = 2049 if cuda else 385
    if rng.random() < 0.3:  # packed sequences, some empty, k lengths equal or not
        n = rng.randint(1, 6)
        lq = [0 if rng.random() < 0.15 else _length(rng, most) for _ in range(n)]
        lk = lq[:] if rng.random() < 0.6 else [_length(rng, most) for _ in range(n)]
        pad = (rng.choice([0, 0, 0, 3]), rng.choice([0, 0, 5]))
        c.lens = (lq, lk, pad, rng.random() < 0.5)
        while c.pairs() > budget:  # halve the longest sequence
            i = max(range(n), key=lambda j: lq[j] * lk[j])
            lq[i], lk[i] = lq[i] // 2, lk[i] // 2
    else:
        c.b = rng.choice([1, 1, 2, 3])
        decode = rng.random() < 0.15
        c.sq = rng.choice([1, 2, 3, 8]) if decode else _length(rng, most)
        c.sk = c.sq if not decode and rng.random() < 0.6 else _length(rng, most)
        c.transposed = rng.random() < 0.2
        while c.pairs() > budget:
            if c.b > 1:
                c.b -= 1
            else:
                c.sq, c.sk = max(1, c.sq // 2), max(1, c.sk // 2)
    if rng.random() < 0.1:  # a head dim the kernels lack (drawn last: the draws before stay)
        c.d = rng.choice([48, 80, 112, 200])
    return c


def _transposed(t):
    return leaf(t.detach().transpose(1, 2).contiguous()).transpose(1, 2)


@pytest.mark.parametrize("device,index", [(dev, i) for dev in _DEVICES for i in range(_count(dev))])
def test_random_case(device, index, monkeypatch):
    c = draw(device, index)
    if c.portable:
        monkeypatch.setenv("SINKATTN_CUDA_PATH", "sm80")
    if c.lens is None:
        q, k, v, s = make(c.b, c.sq, c.sk, c.hq, c.hkv, c.d, c.dtype, c.sinks, device=device)
        if c.transposed:
            q, k, v = (_transposed(t) for t in (q, k, v))
        cu = max_seqlen = None
    else:
        lq, lk, pad, pass_max = c.lens
        q, k, v, s, cu = make_varlen(lq, lk, c.hq, c.hkv, c.d, c.dtype, c.sinks, pad,
                                     device=device)
        max_seqlen = (max(lq), max(lk)) if pass_max else None
    kw = dict(causal=c.causal, window=c.window, deterministic=c.deterministic, scale=c.scale)
    path = sinkattn.kernels(q.detach(), k.detach(), v.detach(), None if s is None else s.detach(),
                            cu_seqlens_q=None if cu is None else cu[0],
                            cu_seqlens_k=None if cu is None else cu[1], **kw)
    try:
        run_and_compare(q, k, v, s, cu=cu, max_seqlen=max_seqlen, lse_grad=c.lse_grad, **kw)
        if c.deterministic:
            _check_repeat(q, k, v, s, cu, max_seqlen, kw)
    except AssertionError as e:
        raise AssertionError(f"{c} [{path['fwd']} / {path['bwd']}; SINKATTN_TEST_SEED={_SEED}]: "
                             f"{e}") from e


def _check_repeat(q, k, v, s, cu, max_seqlen, kw):
    """Deterministic mode: the same gradients, bit for bit, from a second forward and backward."""
    inputs = [t for t in (q, k, v, s) if t is not None]
    runs, dout = [], None
    for _ in range(2):
        if cu is None:
            out = sinkattn.attention(q, k, v, s, **kw)
        else:
            mq, mk = max_seqlen or (None, None)
            out = sinkattn.varlen_attention(q, k, v, cu[0], cu[1], mq, mk, s, **kw)
        dout = torch.randn_like(out) if dout is None else dout
        runs.append(torch.autograd.grad(out, inputs, dout))
    for name, a, b in zip("q k v sinks".split(), *runs):
        assert torch.equal(a, b), f"deterministic d{name} differs between two runs"
