"""Run order and cost estimates. The order puts the figures a run must not lose first (our kernel
and SDPA cuDNN on the suite's key workloads), peers that compile per shape after the cheap ones,
and the longest shapes last, so that the budget (budget.py) cuts what matters least. Estimates
come from what this run has measured so far (achieved rate per peer, compile seconds per peer)
with conservative defaults before the first measurement.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import flops
from .budget import report_reserve
from .inputs import set_bytes
from .peers import Peer
from .suites import FWD, KEY_IMPLS, Suite, Workload
from .timing import TimingConfig

TIERS = {
    1: "key workloads, key implementations",
    2: "key workloads, other implementations",
    3: "other workloads, key implementations",
    4: "key workloads, implementations that compile per shape",
    5: "other workloads, other implementations",
    6: "other workloads, implementations that compile per shape",
}


@dataclasses.dataclass(frozen=True)
class Cell:
    wl: Workload
    peer: Peer
    tier: int

    @property
    def key(self) -> Tuple[str, str]:
        return self.wl.name, self.peer.name


def order(suite: Suite, peers: Sequence[Peer]) -> List[Cell]:
    """Every (workload, peer) of the suite once, in run order (see TIERS); within a tier,
    workloads in the suite's priority order, peers in table order."""
    key_p = [p for p in peers if p.name in KEY_IMPLS]
    cheap = [p for p in peers if p.name not in KEY_IMPLS and not p.compiles]
    slow = [p for p in peers if p.name not in KEY_IMPLS and p.compiles]
    groups = [(suite.key, key_p), (suite.key, cheap), (suite.rest, key_p), (suite.key, slow),
              (suite.rest, cheap), (suite.rest, slow)]
    return [Cell(wl, p, tier) for tier, (wls, ps) in enumerate(groups, 1)
            for wl in wls for p in ps]


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Guesses used until the run has measured a peer (deliberately on the slow side)."""
    rate: float          # FLOP/s of the work a peer says it does (Peer.work_flops)
    bandwidth: float     # bytes/s: the floor for memory-bound calls (decode)
    compile_s: float     # per mode, for peers that compile per shape
    check_s: float       # the fp64 check on the slice (host work)
    overhead_s: float    # per mode: inputs, allocator release, peak-memory call bookkeeping


# cuda compile_s: FlexAttention took 17 s for check + fwd + fwd+bwd at gptoss 4k on an H200 (quick
# suite, 2026-11-22); 15 s per compile leaves room for larger graphs until the run measures.
DEFAULTS = {"cuda": Defaults(rate=100e12, bandwidth=2e12, compile_s=15.0, check_s=1.0,
                             overhead_s=0.5),
            "cpu": Defaults(rate=20e9, bandwidth=5e9, compile_s=60.0, check_s=1.0,
                            overhead_s=0.2)}


class Estimator:
    def __init__(self, device_kind: str, timing: TimingConfig):
        self.d = DEFAULTS["cuda" if device_kind == "cuda" else "cpu"]
        self.timing = timing
        self._rates: Dict[Tuple[str, str, bool], List[float]] = {}
        self._compile: Dict[Tuple[str, str], float] = {}

    def observe(self, peer: Peer, wl: Workload, mode: str, ms: Optional[float],
                compile_s: Optional[float]) -> None:
        """Learn from a timed row: the achieved rate and (compiling peers) the compile time."""
        if ms:
            self._rates.setdefault((peer.name, mode, wl.decode), []).append(
                peer.work_flops(wl, mode) / (ms * 1e-3))
        if compile_s is not None and peer.compiles:
            k = (peer.name, mode)
            self._compile[k] = max(self._compile.get(k, 0.0), compile_s)

    def call_s(self, peer: Peer, wl: Workload, mode: str) -> float:
        rates = self._rates.get((peer.name, mode, wl.decode))
        rate = statistics.median(rates) if rates else self.d.rate * peer.rate_hint
        elem = 2 if wl.dtype in ("bfloat16", "float16") else 4
        moved = flops.fwd_min_bytes(wl.rows_q, wl.rows_k, wl.heads_q, wl.heads_kv, wl.head_dim,
                                    elem) * (1 if mode == FWD else 3)
        return max(peer.work_flops(wl, mode) / rate, moved / self.d.bandwidth)

    def compile_s(self, peer: Peer, mode: str) -> float:
        if not peer.compiles:
            return 0.0
        seen = self._compile.get((peer.name, mode))
        if seen is None:  # the other mode's compile time is the better guess than the default
            other = [v for (p, _), v in self._compile.items() if p == peer.name]
            seen = max(other) if other else None
        return self.d.compile_s if seen is None else seen

    def mode_s(self, peer: Peer, wl: Workload, mode: str) -> float:
        """One mode: compile, warm-up, probe, the timed calls, the peak-memory call."""
        call = self.call_s(peer, wl, mode)
        t = self.timing
        timed = min(max(t.target_s, t.min_reps * call), max(t.cap_s, call))
        return self.compile_s(peer, mode) + self.d.overhead_s + (t.warmup + 2) * call + timed

    def cell_s(self, peer: Peer, wl: Workload, checked: bool,
               modes: Optional[Sequence[str]] = None) -> float:
        """The whole cell (``modes``: those that will run, default all); ``checked``: the peer's
        check on this family's slice already ran."""
        check = 0.0 if checked else self.d.check_s + self.compile_s(peer, wl.modes[-1])
        return check + sum(self.mode_s(peer, wl, m) for m in (modes or wl.modes))


BUDGET = "skipped: budget"  # status of what the run's time budget left out


def static_skip(peer: Peer, wl: Workload, device) -> Optional[str]:
    """Why the peer cannot run this workload here at all (no time or memory involved)."""
    return (peer.unavailable()
            or (None if device.type in peer.devices else f"{device.type} not supported here")
            or peer.unsupported(wl, device))


def memory_skip(peer: Peer, wl: Workload, mode: str, free_bytes: int) -> Optional[str]:
    """The skip status when the peer's allocations plus one input set would not fit in 90% of
    ``free_bytes``, else None."""
    need = peer.memory_need(wl, mode) + set_bytes(wl)
    return f"skipped: memory (needs ~{need / 2**30:.0f} GiB)" if need > 0.9 * free_bytes else None


def decide(estimate_s: float, left_s: float, max_cell_s: float) -> Optional[str]:
    """The skip status of a cell estimated at ``estimate_s`` with ``left_s`` of the budget left,
    or None to run it. A later, cheaper cell may still fit: the run goes on after a skip."""
    if estimate_s > max_cell_s:
        return f"skipped: time (~{estimate_s:.0f} s estimated, cap {max_cell_s:.0f} s per cell)"
    if estimate_s > left_s:
        return BUDGET + f" (~{estimate_s:.0f} s estimated, {max(left_s, 0):.0f} s left)"
    return None


def simulate(cells: Sequence[Cell], skip_fn: Callable[[Cell], Optional[str]],
             estimate_fn: Callable[[Cell, bool], float], cell_time_s: float,
             max_cell_s: float) -> List[Tuple[Cell, str, float, float]]:
    """The run as planned if every cell took its estimate: (cell, status, estimate, seconds
    used after it) per cell; status "run" or the skip. ``cell_time_s``: the budget less the
    report's reserve. The runner applies the same rules (decide) with the real clock."""
    used, checked, out = 0.0, set(), []
    for cell in cells:
        why = skip_fn(cell)
        est = 0.0
        if not why:
            slice_key = (cell.peer.name, cell.wl.check_slice())
            est = estimate_fn(cell, slice_key in checked)
            why = decide(est, cell_time_s - used, max_cell_s)
            if not why:
                used += est
                checked.add(slice_key)
        out.append((cell, why or "run", est, used))
    return out


ASSUMED_GPU_GIB = 139  # H200, for dry runs on a machine without the GPU


def format_plan(cells: Sequence[Cell], device, timing: TimingConfig, budget_s: float,
                max_cell_s: float) -> str:
    """The --dry-run listing: run order, tier, estimate and what the budget would cut."""
    est = Estimator(device.type, timing)
    if device.type == "cuda" and torch.cuda.is_available():
        free = torch.cuda.mem_get_info(device)[0]
        mem_note = "free memory of this GPU"
    else:
        free = ASSUMED_GPU_GIB * 2**30 if device.type == "cuda" else 64 * 2**30
        mem_note = f"assumed {free / 2**30:.0f} GiB free"

    def fitting(cell):
        return [m for m in cell.wl.modes if not memory_skip(cell.peer, cell.wl, m, free)]

    def skip(cell):
        why = static_skip(cell.peer, cell.wl, device)
        return why and "skipped: " + why or (None if fitting(cell) else "skipped: memory")

    cell_time = budget_s - report_reserve(budget_s)
    sim = simulate(cells, skip, lambda c, chk: est.cell_s(c.peer, c.wl, chk, fitting(c)),
                   cell_time, max_cell_s)
    lines = [f"plan: {len(cells)} cells, budget {budget_s:.0f} s ({cell_time:.0f} s for cells, "
             f"the rest for the report), at most {max_cell_s:.0f} s per cell; estimates are "
             f"defaults until the run measures ({mem_note})",
             f"{'#':>3} tier  {'workload':16s} {'impl':14s} {'est s':>6} {'used s':>7}  plan"]
    for i, (cell, status, e, used) in enumerate(sim, 1):
        lines.append(f"{i:3d} {cell.tier:4d}  {cell.wl.name:16s} {cell.peer.name:14s} "
                     f"{e:6.1f} {used:7.1f}  {status}")
    ran = sum(1 for _, st, _, _ in sim if st == "run")
    lines.append(f"{ran} cells planned to run; tiers: " +
                 "; ".join(f"{k} = {v}" for k, v in TIERS.items()))
    return "\n".join(lines)
