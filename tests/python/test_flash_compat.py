"""The flash-attn-style entry points that transformers' hub-kernel path drives
(sinkattn.hf._flash_compat), argument by argument against the fp64 reference with flash-attn's
meanings: window_size = (left, right) keys beside the query's position, right = 0 under causal.
They run without the `kernels` package, which test_hf_kernels_hub.py needs."""

import pytest
import torch

import sinkattn
from sinkattn.hf import _flash_compat

import reference

CASES = {  # name: flash-attn arguments beyond q, k, v
    "causal": dict(causal=True),
    "causal window": dict(causal=True, window_size=(3, 3)),  # transformers' (W - 1, W - 1)
    "band": dict(causal=False, window_size=(2, 5)),
    "left only": dict(causal=False, window_size=(4, -1)),
    "full": dict(causal=False),
    "scale": dict(causal=True, softmax_scale=0.3),
    "sinks": dict(causal=True, window_size=(3, 3), sinks=True),
}


def _reference(q, k, v, kw, sinks):
    left, right = kw.get("window_size", (-1, -1))
    if kw["causal"]:
        right = 0
    out, _ = reference.attention(q, k, v, sinks, causal=kw["causal"], left=left, right=right,
                                 scale=kw.get("softmax_scale"), dtype=torch.float64)
    return out.float()


@pytest.mark.parametrize("case", CASES)
def test_flash_attn_func(case):
    kw = dict(CASES[case])
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 9, 4, 32), torch.randn(2, 13, 2, 32), torch.randn(2, 13, 2, 32)
    sinks = torch.randn(4) if kw.pop("sinks", False) else None
    out = _flash_compat.flash_attn_func(q, k, v, s_aux=sinks, **kw)
    torch.testing.assert_close(out, _reference(q, k, v, kw, sinks), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_flash_attn_varlen_func(case):
    kw = dict(CASES[case])
    torch.manual_seed(0)
    lens_q, lens_k = [5, 0, 9], [7, 3, 13]
    q, k, v = torch.randn(14, 4, 32), torch.randn(23, 2, 32), torch.randn(23, 2, 32)
    sinks = torch.randn(4) if kw.pop("sinks", False) else None
    cu_q = torch.tensor([0, 5, 5, 14])
    cu_k = torch.tensor([0, 7, 10, 23])  # int64, as transformers may pass them
    out = _flash_compat.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 9, 13, s_aux=sinks, **kw)
    refs, a, c = [], 0, 0
    for sq, sk in zip(lens_q, lens_k):
        if sq:
            refs.append(_reference(q[None, a:a + sq], k[None, c:c + sk], v[None, c:c + sk], kw,
                                   sinks)[0])
        a, c = a + sq, c + sk
    torch.testing.assert_close(out, torch.cat(refs), rtol=1e-5, atol=1e-5)


def test_deterministic_reaches_the_library(monkeypatch):
    seen = []
    real = sinkattn.attention
    monkeypatch.setattr(sinkattn, "attention",
                        lambda *a, **kw: seen.append(kw["deterministic"]) or real(*a, **kw))
    q = torch.randn(1, 5, 2, 32)
    for det in (True, False):
        _flash_compat.flash_attn_func(q, q, q, causal=True, deterministic=det)
    assert seen == [True, False]


def test_dropout_is_refused():
    q = torch.randn(1, 5, 2, 32)
    with pytest.raises(ValueError, match="dropout"):
        _flash_compat.flash_attn_func(q, q, q, dropout_p=0.1)
