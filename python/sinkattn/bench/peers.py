"""Implementations timed side by side. Each takes the shared token-major inputs (B, S, H, D) and
returns the output in the same layout (a view is fine); layout changes they need are views inside
the call. Masks, block masks and document ids are built once in ``prepare`` (not timed), as a
model builds them once per forward for all its layers.

A peer that cannot compute the sink term says so (``uses_sinks = False``): it is checked against
the reference without sinks and labelled "no sinks" in every table, as a speed reference point.
"""
from __future__ import annotations

import functools
import importlib
import types
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from . import flex_blocks, flops
from .inputs import Inputs
from .suites import FWD, Workload

Fn = Callable[[Inputs], torch.Tensor]


class Peer:
    name = ""          # row key in CSV and the regression gate
    label = ""         # what the tables call it
    uses_sinks = True  # computes the sink term when the workload has sinks
    devices = ("cpu", "cuda")
    compiles = False   # compiles per shape (slow first call): run after the others
    rate_hint = 1.0    # expected speed relative to a fused kernel, for the budget's estimates

    def unavailable(self) -> Optional[str]:
        """Why this peer cannot run in this process at all (missing package), else None."""
        return None

    def unsupported(self, wl: Workload, device: torch.device) -> Optional[str]:
        """Why this peer cannot run this workload, else None."""
        return None

    def work_flops(self, wl: Workload, mode: str) -> float:
        """FLOPs it actually executes (what its time scales with): visible pairs by default."""
        return wl.flops(mode)

    def memory_need(self, wl: Workload, mode: str) -> int:
        """Bytes it will allocate beyond the inputs, when that may not fit (0: not a concern)."""
        return 0

    def prepare(self, wl: Workload, device: torch.device) -> Fn:
        raise NotImplementedError

    def note(self) -> str:
        """Anything the tables must say about how it ran (empty if nothing)."""
        return ""


@functools.lru_cache(maxsize=None)
def _try_import(module: str) -> Optional[str]:
    try:
        importlib.import_module(module)
        return None
    except Exception as e:  # any import failure (missing package, bad build) means "skip"
        return f"not installed ({module}: {type(e).__name__})"


def _sinks(wl: Workload, inp: Inputs, peer: Peer) -> Optional[torch.Tensor]:
    return inp.sinks if (wl.sinks and peer.uses_sinks) else None


def _cu_seqlens(wl: Workload, device, drop_empty: bool = False) -> torch.Tensor:
    """(N + 1,) int32 offsets of the packed documents; ``drop_empty`` leaves out zero-length
    documents (they own no rows, so the packing is the same) for kernels that mishandle them."""
    cu = [0]
    for n in wl.doc_lens:
        if n or not drop_empty:
            cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def _dense_mask_bool(wl: Workload, device) -> Optional[torch.Tensor]:
    """(Sq, Sk) visibility (or (T, T) block-diagonal for varlen); None when every pair is seen."""
    left, right = flops.window_bounds(wl.causal, wl.window)
    if wl.varlen:
        doc = torch.repeat_interleave(torch.arange(len(wl.doc_lens), device=device),
                                      torch.tensor(wl.doc_lens, device=device))
        t = torch.arange(doc.numel(), device=device)
        qi, ki = t.unsqueeze(1), t.unsqueeze(0)
        vis = doc.unsqueeze(1) == doc.unsqueeze(0)  # q and k lengths are equal per document
    else:
        qi = torch.arange(wl.seqlen_q, device=device).unsqueeze(1) + (wl.seqlen_k - wl.seqlen_q)
        ki = torch.arange(wl.seqlen_k, device=device).unsqueeze(0)
        vis = torch.ones(wl.seqlen_q, wl.seqlen_k, dtype=torch.bool, device=device)
        if left < 0 and right < 0:
            return None
    if left >= 0:
        vis = vis & (ki >= qi - left)
    if right >= 0:
        vis = vis & (ki <= qi + right)
    return vis


# ---- sinkattn -----------------------------------------------------------------------------------

class SinkAttn(Peer):
    name = "sinkattn"
    label = "sinkattn"

    def unavailable(self):
        return _try_import("sinkattn")

    def prepare(self, wl, device):
        import sinkattn

        kw = dict(causal=wl.causal, window=wl.window, scale=wl.scale)
        if wl.varlen:
            cu = _cu_seqlens(wl, device)
            n = max(wl.doc_lens)
            return lambda inp: sinkattn.varlen_attention(inp.q, inp.k, inp.v, cu, cu, n, n,
                                                         _sinks(wl, inp, self), **kw)
        return lambda inp: sinkattn.attention(inp.q, inp.k, inp.v, _sinks(wl, inp, self), **kw)


# ---- transformers eager -------------------------------------------------------------------------

class HFEager(Peer):
    """transformers' own eager attention: the GPT-OSS function (sink column) when the workload has
    sinks, the Llama one otherwise. Quadratic memory: skipped where it would not fit."""
    name = "hf-eager"
    label = "transformers eager"
    rate_hint = 0.15  # of work_flops: ~15 TFLOP/s on an H200 (gptoss 4k/16k, quick suite)

    def work_flops(self, wl, mode):
        """Every pair of the dense score matrix (one packed row for varlen), masked or not."""
        keys = wl.rows_k if wl.varlen else wl.seqlen_k
        rows = wl.rows_q if wl.varlen else wl.batch * wl.seqlen_q
        return flops.attention_flops(rows * keys, wl.heads_q, wl.head_dim, mode)

    def unavailable(self):
        return _try_import("transformers.models.gpt_oss.modeling_gpt_oss")

    def memory_need(self, wl, mode):
        elem = torch.empty((), dtype=getattr(torch, wl.dtype)).element_size()
        rows = wl.rows_q if wl.varlen else wl.seqlen_q
        keys = wl.rows_k if wl.varlen else wl.seqlen_k
        batch = 1 if wl.varlen else wl.batch
        scores = batch * wl.heads_q * rows * (keys + 1)
        # Live score-sized tensors: ~3 in a no-grad forward (scores, masked, softmax; the Llama
        # path adds an fp32 softmax), ~6 with autograd (saved probs + their gradients).
        per = 3 * elem + (0 if wl.sinks else 4)
        if mode != FWD:
            per *= 2
        kv = 2 * batch * wl.heads_q * keys * wl.head_dim * elem  # repeat_kv copies of K and V
        return scores * per + kv * (1 if mode == FWD else 2) + rows * keys * elem

    def prepare(self, wl, device):
        if wl.sinks:
            from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward
        else:
            from transformers.models.llama.modeling_llama import eager_attention_forward
        dtype = getattr(torch, wl.dtype)
        vis = _dense_mask_bool(wl, device)
        mask = None
        if vis is not None:  # transformers' additive mask: 0 where seen, the dtype's min elsewhere
            mask = torch.zeros(vis.shape, dtype=dtype, device=device)
            mask.masked_fill_(~vis, torch.finfo(dtype).min)
            mask = mask[None, None]
        groups = wl.heads_q // wl.heads_kv

        def fn(inp: Inputs):
            q, k, v = inp.q, inp.k, inp.v
            if wl.varlen:  # packed documents: one long row with a block-diagonal mask
                q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
            module = types.SimpleNamespace(num_key_value_groups=groups, training=False,
                                           sinks=_sinks(wl, inp, self))
            out, _ = eager_attention_forward(module, q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), mask, scaling=wl.scale)
            return out.squeeze(0) if wl.varlen else out

        return fn


# ---- FlexAttention ------------------------------------------------------------------------------

try:  # module level, so that the compiled function below traces no import statement
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention
except ImportError:  # older torch: the peer reports itself unavailable
    AuxRequest = flex_attention = None


def _flex_sink(q, k, v, sinks, block_mask, scale):
    """FlexAttention, then the sink folded in through the LSE: with the sink in the denominator,
    out_sink = out * e^lse / (e^lse + e^s) = out * sigmoid(lse - s). q (B, Hq, S, D)."""
    if sinks is None:  # plain FlexAttention: no LSE requested
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)
    out, aux = flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True,
                              return_aux=AuxRequest(lse=True))
    w = torch.sigmoid(aux.lse - sinks.float().view(1, -1, 1))
    return (out.float() * w.unsqueeze(-1)).to(out.dtype)


class Flex(Peer):
    """Compiled once per shape and grad mode (the harness reports those seconds as compile_s).
    ``compiled=False`` runs torch's unfused reference path instead: for tests on the CPU."""
    name = "flex"
    label = "FlexAttention (compiled) + sink correction"
    _compiled = None

    def __init__(self, compiled: bool = True):
        self.compiled = self.compiles = compiled
        # torch 2.11 compiles it on the CPU for inference only, without LSE.
        self.devices = ("cuda",) if compiled else ("cpu", "cuda")

    def unavailable(self):
        return None if flex_attention else "not installed (torch without FlexAttention AuxRequest)"

    def _kernel(self):
        if not self.compiled:
            return _flex_sink
        if Flex._compiled is None:
            import torch._dynamo as dynamo

            # One graph per shape and grad mode: the default limit of 8 would silently fall back
            # to the unfused (and memory-quadratic) path part-way through the full suite.
            dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 128)
            Flex._compiled = torch.compile(_flex_sink, dynamic=False)
        return Flex._compiled

    def prepare(self, wl, device):
        kernel = self._kernel()
        left, right = flops.window_bounds(wl.causal, wl.window)
        block_mask = None
        if wl.varlen:
            doc = torch.repeat_interleave(torch.arange(len(wl.doc_lens), device=device),
                                          torch.tensor(wl.doc_lens, device=device))
            n_q = n_k = doc.numel()
            offset = 0
            cu = _cu_seqlens(wl, "cpu").tolist()
            docs = [(a, b, a, b) for a, b in zip(cu[:-1], cu[1:])]
        else:
            doc = None
            n_q, n_k = wl.seqlen_q, wl.seqlen_k
            offset = n_k - n_q
            docs = [(0, n_q, 0, n_k)]

        def mask_mod(b, h, qi, ki):
            pos = qi + offset
            vis = ki >= 0
            if doc is not None:
                vis = vis & (doc[qi] == doc[ki])
            if left >= 0:
                vis = vis & (ki >= pos - left)
            if right >= 0:
                vis = vis & (ki <= pos + right)
            return vis

        if wl.varlen or left >= 0 or (right >= 0 and offset < n_k - 1):
            block_mask = flex_blocks.block_mask(docs, n_q, n_k, left, right, mask_mod, device)

        def fn(inp: Inputs):
            q, k, v = inp.q, inp.k, inp.v
            if wl.varlen:
                q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
            out = kernel(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                         _sinks(wl, inp, self), block_mask, wl.scale)
            out = out.transpose(1, 2)
            return out.squeeze(0) if wl.varlen else out

        return fn


# ---- peers without sinks that may lack a GQA kernel --------------------------------------------

class _KVFallback(Peer):
    """A kernel that may refuse Hq != Hkv: the first refusal switches to K/V repeated to Hq
    inside the timed call (the copy is part of what using it costs), and the tables say so."""
    uses_sinks = False
    _expanded = False

    def note(self):
        return "K/V repeated to Hq (GQA refused)" if self._expanded else ""

    def _with_fallback(self, wl: Workload, call) -> Fn:
        """call(q, k, v, gqa) on token-major tensors -> out; returns the peer's fn."""
        groups = wl.heads_q // wl.heads_kv
        self._expanded = False
        dim = 1 if wl.varlen else 2

        def fn(inp: Inputs):
            if self._expanded:
                return call(inp.q, inp.k.repeat_interleave(groups, dim=dim),
                            inp.v.repeat_interleave(groups, dim=dim), False)
            try:
                return call(inp.q, inp.k, inp.v, True)
            except torch.cuda.OutOfMemoryError:
                raise
            except RuntimeError:
                if groups == 1:
                    raise
                self._expanded = True
                return fn(inp)

        return fn


# ---- SDPA ---------------------------------------------------------------------------------------

class SDPA(_KVFallback):
    """torch SDPA restricted to one backend; no sinks, no window, no varlen."""

    def __init__(self, backend: str, devices):
        self.backend = backend
        self.name = f"sdpa-{backend}"
        self.label = f"SDPA {backend}, no sinks"
        self.devices = devices

    def unsupported(self, wl, device):
        if wl.varlen:
            return "no varlen"
        if wl.window is not None:
            return "no sliding window"
        if wl.causal and wl.seqlen_q not in (1, wl.seqlen_k):
            return "causal needs Sq == Sk (top-left alignment)"
        return None

    def prepare(self, wl, device):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION}[self.backend]
        # A single query under bottom-right alignment sees every key: no mask at all.
        causal = wl.causal and wl.seqlen_q > 1

        def call(q, k, v, gqa):
            with sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                     v.transpose(1, 2), is_causal=causal,
                                                     scale=wl.scale, enable_gqa=gqa)
            return out.transpose(1, 2)

        return self._with_fallback(wl, call)


# ---- torch varlen_attn (FlashAttention-2 inside torch) ------------------------------------------

class TorchVarlen(_KVFallback):
    name = "torch-varlen"
    label = "torch varlen_attn (flash), no sinks"
    devices = ("cuda",)

    def unavailable(self):
        return _try_import("torch.nn.attention.varlen")

    def unsupported(self, wl, device):
        # Fixed causal full-context shapes are SDPA flash's; this one covers window and varlen.
        if not (wl.varlen or wl.window is not None):
            return "covered by sdpa-flash"
        return None

    def prepare(self, wl, device):
        from torch.nn.attention.varlen import varlen_attn

        left, right = flops.window_bounds(wl.causal, wl.window)
        if wl.varlen:
            cu_q = cu_k = _cu_seqlens(wl, device, drop_empty=True)
            max_q = max_k = max(wl.doc_lens)
        else:
            cu_q = torch.arange(wl.batch + 1, dtype=torch.int32, device=device) * wl.seqlen_q
            cu_k = torch.arange(wl.batch + 1, dtype=torch.int32, device=device) * wl.seqlen_k
            max_q, max_k = wl.seqlen_q, wl.seqlen_k

        def call(q, k, v, gqa):  # varlen_attn has no GQA switch: it takes Hkv | Hq or refuses
            shape = q.shape
            if not wl.varlen:
                q, k, v = q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)
            out = varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=wl.scale,
                              window_size=(left, right))
            return out.view(shape)

        return self._with_fallback(wl, call)


# ---- flash-attn packages, when installed ---------------------------------------------------

class FlashAttnPkg(Peer):
    """flash_attn (FA2) or flash_attn_interface (FA3): window and varlen, no sinks."""
    uses_sinks = False
    devices = ("cuda",)

    def __init__(self, module: str, name: str, label: str):
        self.module, self.name, self.label = module, name, label

    def unavailable(self):
        return _try_import(self.module)

    def prepare(self, wl, device):
        mod = importlib.import_module(self.module)
        left, right = flops.window_bounds(wl.causal, wl.window)
        kw = dict(softmax_scale=wl.scale, causal=wl.causal, window_size=(left, right))
        first = lambda r: r[0] if isinstance(r, tuple) else r  # some versions also return lse
        if wl.varlen:
            cu = _cu_seqlens(wl, device, drop_empty=True)
            n = max(wl.doc_lens)
            return lambda inp: first(mod.flash_attn_varlen_func(inp.q, inp.k, inp.v, cu, cu, n, n,
                                                                **kw))
        return lambda inp: first(mod.flash_attn_func(inp.q, inp.k, inp.v, **kw))


def all_peers() -> List[Peer]:
    """Every implementation the harness knows, in table order (ours first)."""
    return [
        SinkAttn(),
        HFEager(),
        Flex(),
        SDPA("flash", ("cpu", "cuda")),
        SDPA("cudnn", ("cuda",)),
        TorchVarlen(),
        FlashAttnPkg("flash_attn", "flash-attn2", "flash-attn 2 (package), no sinks"),
        FlashAttnPkg("flash_attn_interface", "flash-attn3", "flash-attn 3 (package), no sinks"),
    ]


def select(names: Optional[str]) -> List[Peer]:
    """Peers named in a comma list (all when None)."""
    peers = all_peers()
    if not names:
        return peers
    want = [n.strip() for n in names.split(",") if n.strip()]
    known = {p.name for p in peers}
    bad = [n for n in want if n not in known]
    if bad:
        raise ValueError(f"unknown implementation(s) {bad}; known: {sorted(known)}")
    return [p for p in peers if p.name in want]

