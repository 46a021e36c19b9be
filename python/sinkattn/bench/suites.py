"""Workloads and the named suites. Every size is written out here, per device kind: the CUDA sizes
are the issue's (GPT-OSS and Llama shapes at long context), the CPU sizes are the same shapes
scaled down (fewer heads, sequences of 256-4096) so the quick suite runs in CI on two cores.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Optional, Tuple

from . import flops

FWD = "fwd"
FWD_BWD = "fwd+bwd"


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str                 # unique row key, e.g. "gptoss-16k"
    family: str               # plot/series group: rows of one family differ only in length
    heads_q: int              # Hq
    heads_kv: int             # Hkv (Hq % Hkv == 0)
    head_dim: int             # D
    seqlen_q: int             # Sq per sequence (fixed) or max over documents (varlen)
    seqlen_k: int             # Sk per sequence (fixed) or max over documents (varlen)
    batch: int = 1            # B (fixed) or number of documents (varlen; set from doc_lens)
    sinks: bool = True        # learned sink logits per query head
    causal: bool = True
    window: Optional[int] = None           # W keys including the query (GPT-OSS sliding_window)
    doc_lens: Optional[Tuple[int, ...]] = None  # varlen: packed documents (q and k lengths equal)
    modes: Tuple[str, ...] = (FWD, FWD_BWD)
    dtype: str = "bfloat16"   # torch dtype name

    @property
    def varlen(self) -> bool:
        return self.doc_lens is not None

    @property
    def decode(self) -> bool:
        return self.seqlen_q == 1 and self.seqlen_k > 1

    @property
    def length(self) -> int:
        """x axis of the plots: keys per sequence, or packed tokens for varlen."""
        return sum(self.doc_lens) if self.varlen else self.seqlen_k

    @property
    def rows_q(self) -> int:
        return sum(self.doc_lens) if self.varlen else self.batch * self.seqlen_q

    @property
    def rows_k(self) -> int:
        return sum(self.doc_lens) if self.varlen else self.batch * self.seqlen_k

    @property
    def scale(self) -> float:
        return self.head_dim ** -0.5

    def pairs(self) -> int:
        """Visible query-key pairs per head over the whole batch."""
        return flops.visible_pairs(self.batch, self.seqlen_q, self.seqlen_k, self.causal,
                                   self.window, self.doc_lens, self.doc_lens)

    def flops(self, mode: str) -> float:
        return flops.attention_flops(self.pairs(), self.heads_q, self.head_dim, mode)

    def describe(self) -> str:
        """Human-readable shape, for tables."""
        if self.varlen:
            shape = f"{len(self.doc_lens)} docs, {self.length} tokens"
        elif self.decode:
            shape = f"B {self.batch}, q 1, k {self.seqlen_k}"
        else:
            shape = f"B {self.batch}, S {self.seqlen_k}"
        extra = [f"Hq {self.heads_q}/Hkv {self.heads_kv}, D {self.head_dim}"]
        if self.window:
            extra.append(f"window {self.window}")
        extra.append("sinks" if self.sinks else "no sinks")
        return f"{shape}; " + ", ".join(extra)

    def check_slice(self) -> "Workload":
        """The same problem (heads, D, mask, sinks, layout) at a length an fp64 reference can
        afford. Implementations are checked on this before the big shape is timed; the slice only
        depends on the structure, so workloads of one family share one check."""
        w = self.window or 0
        if self.varlen:
            docs = (37, 1, 190, 0, 64 + w, 129)  # odd sizes, a 1-token and an empty document
            return dataclasses.replace(self, name=self.family + "/check", doc_lens=docs,
                                       batch=len(docs), seqlen_q=max(docs), seqlen_k=max(docs))
        sk = max(192, 2 * w + 64) if not self.decode else max(320, 2 * w + 64)
        sq = 1 if self.decode else sk
        return dataclasses.replace(self, name=self.family + "/check", batch=min(self.batch, 2),
                                   seqlen_q=sq, seqlen_k=sk)


def packed_docs(total: int, lo: int, hi: int, seed: int) -> Tuple[int, ...]:
    """Document lengths in [lo, hi] summing to exactly ``total`` (fixed seed: reproducible).
    Each draw leaves at least ``lo`` tokens, so the last document is in range too (needs
    total >= lo and hi >= 2 * lo)."""
    assert total >= lo and hi >= 2 * lo, (total, lo, hi)
    rng = random.Random(seed)
    lens: List[int] = []
    left = total
    while left > hi:
        lens.append(rng.randint(lo, min(hi, left - lo)))
        left -= lens[-1]
    lens.append(left)
    return tuple(lens)


def _k(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def gptoss(s: int, *, window=None, hq=64, hkv=8, batch=1, dtype="bfloat16") -> Workload:
    fam = "gptoss" if window is None else f"gptoss-w{window}"
    return Workload(f"{fam}-{_k(s)}", fam, hq, hkv, 64, s, s, batch=batch, window=window,
                    dtype=dtype)


def llama(s: int, *, hq=32, hkv=8, dtype="bfloat16") -> Workload:
    return Workload(f"llama-{_k(s)}", "llama", hq, hkv, 128, s, s, sinks=False, dtype=dtype)


def varlen(total: int, lo: int, hi: int, *, hq=64, hkv=8, dtype="bfloat16") -> Workload:
    docs = packed_docs(total, lo, hi, seed=total)
    return Workload(f"varlen-{_k(total)}", "gptoss-varlen", hq, hkv, 64, max(docs), max(docs),
                    batch=len(docs), doc_lens=docs, dtype=dtype)


def decode(sk: int, *, batch=64, hq=64, hkv=8, dtype="bfloat16") -> Workload:
    return Workload(f"decode-{_k(sk)}", "gptoss-decode", hq, hkv, 64, 1, sk, batch=batch,
                    modes=(FWD,), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Suite:
    """Workloads in priority order. ``key`` holds the figures a run must not lose (timed first by
    the planner, see plan.py); ``rest`` what the time budget may cut, most wanted first."""
    key: Tuple[Workload, ...]
    rest: Tuple[Workload, ...] = ()

    @property
    def workloads(self) -> List[Workload]:
        return list(self.key) + list(self.rest)


# CPU: the same shapes with 8x fewer heads (GQA ratio kept), fp32, short sequences.
_CPU = dict(dtype="float32")
_CPU_G = dict(hq=8, hkv=1, **_CPU)

SUITES: Dict[str, Dict[str, Suite]] = {
    "quick": {
        "cuda": Suite((gptoss(4096), gptoss(16384, window=128), llama(8192),
                       varlen(16384, 512, 4096)), (decode(8192),)),
        "cpu": Suite((gptoss(512, **_CPU_G), gptoss(1024, window=128, **_CPU_G),
                      llama(256, hq=4, hkv=1, **_CPU), varlen(1024, 64, 384, **_CPU_G)),
                     (decode(2048, batch=4, **_CPU_G),)),
    },
    "full": {
        # key: the headline figures; gptoss-32k is varlen-32k's tokens as one sequence
        # (the varlen/fixed throughput ratio of issue 7).
        "cuda": Suite((gptoss(16384), gptoss(4096), gptoss(16384, window=128), llama(8192),
                       varlen(32768, 256, 8192), gptoss(32768)),
                      (decode(8192), llama(32768), gptoss(65536), gptoss(65536, window=128),
                       decode(32768), decode(131072))),
        "cpu": Suite((gptoss(1024, **_CPU_G), gptoss(256, **_CPU_G),
                      gptoss(1024, window=128, **_CPU_G), llama(512, hq=4, hkv=1, **_CPU),
                      varlen(2048, 64, 512, **_CPU_G), gptoss(2048, **_CPU_G)),
                     (decode(2048, batch=4, **_CPU_G), llama(2048, hq=4, hkv=1, **_CPU),
                      gptoss(4096, **_CPU_G), gptoss(4096, window=128, **_CPU_G),
                      decode(8192, batch=4, **_CPU_G))),
    },
}

# Seconds a suite may take in all (checks, compilation, timing, the report) when --budget-s is not
# given: cells that would not fit are reported as "skipped: budget".
BUDGET_S = {"quick": 100.0, "full": 480.0}

# The figures a run must not lose: these implementations on the suite's key workloads go first.
KEY_IMPLS = ("sinkattn", "sdpa-cudnn")


def get_suite(name: str, device_kind: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {sorted(SUITES)}")
    return SUITES[name]["cuda" if device_kind == "cuda" else "cpu"]
