"""Random arguments, valid and not, through the public functions (forward and backward): each call
either returns or raises ValueError / TypeError whose message starts with "sinkattn" and names an
argument. Any other exception (an IndexError, a ZeroDivisionError, a torch error from inside the
layer) is a bad-input path that nobody wrote a check for. The cases are drawn from the run's seed
(SINKATTN_TEST_SEED replays them); SINKATTN_SWEEP_CASES=N draws more."""

from __future__ import annotations

import math
import os
import random
import re

import torch

import sinkattn

_SEED = int(os.environ.get("SINKATTN_TEST_SEED", "0"))
_CASES = int(os.environ.get("SINKATTN_SWEEP_CASES", "600"))
_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32]
# the argument a refusal names: the Python name, or the C field the library checked
_NAMED = re.compile(r"^sinkattn(_\w+)?: [\w.\[\]]+")


def _tensor(rng, shape, dtype):
    if dtype.is_floating_point:
        t = torch.randn(shape).to(dtype)
    else:
        t = torch.randint(0, 5, shape, dtype=dtype)
    if rng.random() < 0.1 and t.dim() > 1:
        t = t.transpose(-1, -2)  # the head dim no longer contiguous
    if rng.random() < 0.05 and t.numel():
        t[(0,) * t.dim()] = math.nan if dtype.is_floating_point else 0
    return t


def _options(rng):
    kw = {}
    if rng.random() < 0.3:
        kw["window"] = rng.choice([None, 0, 1, 5, -3, (1, 2), (None, 0), (-1, -1), (2,), "x", 3.5,
                                   (True, 1), 10**13])
    if rng.random() < 0.3:
        kw["causal"] = rng.choice([True, False, 1, None])
    if rng.random() < 0.3:
        kw["scale"] = rng.choice([None, 0.1, 0, -1, math.nan, math.inf, "a", True, 1e308, 1e-320])
    if rng.random() < 0.2:
        kw["deterministic"] = rng.choice([True, False, 0])
    if rng.random() < 0.2:
        kw["return_lse"] = rng.choice([True, False])
    return kw


def _call(rng):
    dim = lambda: rng.choice([0, 1, 2, 3, 5, 8, 16, 33])  # noqa: E731
    b, sq, sk, hkv = dim(), dim(), dim(), rng.choice([0, 1, 1, 2, 3])
    hq = hkv * rng.choice([1, 2, 3]) if rng.random() < 0.8 else dim()
    d = rng.choice([0, 1, 8, 32, 48, 64, 64, 64, 257])
    dtype = rng.choice(_DTYPES[:3])
    other = lambda: dtype if rng.random() < 0.9 else rng.choice(_DTYPES)  # noqa: E731
    kw = _options(rng)
    sinks = None
    if rng.random() < 0.6:
        sinks = _tensor(rng, (rng.choice([hq, hq, hq, hq + 1, 0]),),
                        rng.choice([torch.float32, torch.float32, torch.bfloat16, torch.int32]))
    if rng.random() < 0.3:  # packed sequences
        lens = [rng.choice([0, 1, 4]) for _ in range(rng.choice([0, 1, 3]))]
        cu = [0]
        for n in lens:
            cu.append(cu[-1] + n)
        cu_t = torch.tensor(cu, dtype=rng.choice([torch.int32, torch.int32, torch.int64]))
        if rng.random() < 0.1:
            cu_t = cu_t.flip(0)
        rows = max(0, cu[-1] + rng.choice([0, 0, 2, -1]))
        q = _tensor(rng, (rows, hq, d), dtype)
        k, v = _tensor(rng, (rows, hkv, d), other()), _tensor(rng, (rows, hkv, d), other())
        most = rng.choice([None, None, max(lens or [0]), 0, -1, 2**40])
        return lambda: sinkattn.varlen_attention(q, k, v, cu_t, cu_t, most, most, sinks, **kw), ()
    q = _tensor(rng, (b, sq, hq, d), dtype)
    k = _tensor(rng, (b if rng.random() < 0.9 else b + 1, sk, hkv, d), other())
    v = _tensor(rng, tuple(k.shape), other())
    grads = ()
    if rng.random() < 0.5 and all(t.dtype.is_floating_point for t in (q, k, v)):
        grads = tuple(t.requires_grad_() for t in (q, k, v))
    return lambda: sinkattn.attention(q, k, v, sinks, **kw), grads


def test_random_arguments_return_or_name_the_argument():
    rng = random.Random(f"{_SEED}-sweep")
    ran = refused = 0
    for i in range(_CASES):
        call, grads = _call(rng)
        try:
            out = call()
            out = out[0] if isinstance(out, tuple) else out
            if grads and out.numel():
                out.float().sum().backward()
            ran += 1
        except (ValueError, TypeError) as e:
            assert _NAMED.match(str(e)), f"case {i} (SINKATTN_TEST_SEED={_SEED}): {e!r}"
            refused += 1
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"case {i} (SINKATTN_TEST_SEED={_SEED}): an unchecked path "
                                 f"raised {e!r}") from e
    assert ran > _CASES // 60 and refused > _CASES // 4  # both sides (~8% / ~92% run)
