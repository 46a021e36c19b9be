"""Runs every (workload, implementation) cell: check against the fp64 reference, then time and
measure memory per mode. Each cell is isolated: an exception or an out-of-memory becomes that
cell's status, caches are emptied after it, and rows are appended to a JSON-lines file as they
come so that a run can resume in a fresh process after a fatal CUDA error (see __main__).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import re
import threading
import time
from typing import Dict, List, Optional, Tuple

import torch

from . import flops
from .budget import Budget
from .inputs import make_inputs, set_bytes
from .peers import Peer
from .plan import BUDGET, Cell, Estimator, decide, memory_skip, static_skip
from .reference import TOLERANCE, compare, reference
from .suites import FWD, Workload
from .timing import TimingConfig, input_sets_needed, measure, peak_memory

# CSV columns, in order. Numbers are blank where they do not apply.
COLUMNS = ["workload", "family", "length", "shape", "impl", "label", "mode", "status", "ms",
           "tflops", "gbps", "peak_mib", "check_err", "reps", "spread", "gflop", "compile_s",
           "cell_s", "tier", "note"]

class ContextLost(RuntimeError):
    """The CUDA context is unusable (e.g. an illegal address): only a new process can go on."""


@dataclasses.dataclass
class Settings:
    device: torch.device
    timing: TimingConfig
    budget: Budget
    max_cell_s: float = math.inf  # a cell estimated above this is skipped as too slow


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")


def _short(e: BaseException) -> str:
    """The exception's first line and, where that only announces a traceback (Inductor's "An
    exception occurred in a subprocess:"), the traceback's last exception line: the cause."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    msg = lines[0] if lines else ""
    if msg.endswith(":"):
        causes = [line for line in lines[1:] if _RAISED.match(line)]
        if causes:
            msg += " ... " + causes[-1][:160]
    return f"{type(e).__name__}: {msg}"[:260]


def _sig(x: float) -> float:
    """Four significant digits: CPU rows are in GFLOP/s territory, GPU rows in the hundreds."""
    return float(f"{x:.4g}")


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // 2  # leave half to everyone else
    except (OSError, KeyError, ValueError):
        return 8 << 30


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a dead context is reported by _context_alive
            pass


def _context_alive(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    try:
        torch.ones(1, device=device).add_(1).item()
        torch.cuda.synchronize(device)
        return True
    except Exception:
        return False


def _one_call(peer: Peer, fn, mode: str):
    """The timed unit: a forward under no_grad, or a forward plus the gradients of its leaves."""
    if mode == FWD:
        def call(inp):
            with torch.no_grad():
                fn(inp)
    else:
        def call(inp):
            out = fn(inp)
            torch.autograd.grad(out, inp.leaves(peer.uses_sinks), inp.dout)
    return call


def check(peer: Peer, wl: Workload, device: torch.device) -> Tuple[str, float, str]:
    """(status, worst relative error, which tensor) of the peer on the workload's small slice,
    on fresh random inputs; the backward is checked too when the workload times it."""
    sl = wl.check_slice()
    mode = FWD if wl.modes == (FWD,) else wl.modes[-1]
    inp = make_inputs(sl, device, seed=int.from_bytes(os.urandom(4), "little"),
                      requires_grad=mode != FWD)
    fn = peer.prepare(sl, device)
    if mode == FWD:
        with torch.no_grad():
            res = {"out": fn(inp)}
    else:
        out = fn(inp)
        leaves = inp.leaves(peer.uses_sinks)
        grads = torch.autograd.grad(out, leaves, inp.dout, allow_unused=True)
        # A leaf the output does not depend on has no gradient: compare() scores it as wrong.
        res = {n: t for n, t in zip(("out", "dq", "dk", "dv", "dsink"), (out, *grads))
               if t is not None}
    errs = compare(res, reference(sl, inp, peer.uses_sinks, mode))
    worst = max(errs, key=errs.get)
    ok = errs[worst] <= TOLERANCE[wl.dtype]
    return ("ok" if ok else "wrong"), errs[worst], worst


class Runner:
    """Runs cells in the order given, appending rows to ``results_path``; ``lock`` guards the
    file against the watchdog, which may write the report while a cell is running."""

    def __init__(self, settings: Settings, results_path: str):
        self.s = settings
        self.results_path = results_path
        self.lock = threading.Lock()
        self.current: Optional[Cell] = None  # the cell running now (the watchdog names it)
        self.estimator = Estimator(settings.device.type, settings.timing)
        self._checks: Dict[Tuple[str, Workload], Tuple[str, float, str]] = {}

    def _save(self, rows: List[dict]) -> None:
        with self.lock, open(self.results_path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def _skip(self, cell: Cell, status: str) -> List[dict]:
        rows = [cell_row(cell, m, status) for m in cell.wl.modes]
        self._save(rows)
        return rows

    def run_cell(self, cell: Cell) -> List[dict]:
        """All rows of one cell; never raises except ContextLost."""
        t0 = time.time()
        self.current = cell
        try:
            return self._run_cell(cell)
        finally:  # seconds the cell took, check and compilation included: where a run's time went
            self.current = None
            with self.lock, open(self.results_path, "a") as f:
                f.write(json.dumps({"kind": "cell", "workload": cell.wl.name,
                                    "impl": cell.peer.name,
                                    "cell_s": round(time.time() - t0, 1)}) + "\n")

    def estimate(self, cell: Cell, modes: Optional[List[str]] = None) -> float:
        checked = (cell.peer.name, cell.wl.check_slice()) in self._checks
        return self.estimator.cell_s(cell.peer, cell.wl, checked, modes)

    def _run_cell(self, cell: Cell) -> List[dict]:
        wl, peer, dev = cell.wl, cell.peer, self.s.device
        reason = static_skip(peer, wl, dev)
        if reason:
            return self._skip(cell, "skipped: " + reason)
        free = _free_bytes(dev)
        no_room = {m: memory_skip(peer, wl, m, free) for m in wl.modes}
        fitting = [m for m in wl.modes if not no_room[m]]
        if not fitting:
            rows = [cell_row(cell, m, no_room[m]) for m in wl.modes]
            self._save(rows)
            return rows
        why = decide(self.estimate(cell, fitting), self.s.budget.left(), self.s.max_cell_s)
        if why:
            return self._skip(cell, why)

        rows: List[dict] = []
        key = (peer.name, wl.check_slice())
        try:
            if key not in self._checks:
                self._checks[key] = check(peer, wl, dev)
            status, err, worst = self._checks[key]
        except Exception as e:  # noqa: BLE001 - any failure is this cell's result
            status, err, worst = "error: check: " + _short(e), math.nan, ""
        finally:
            _release(dev)
        err_txt = "" if math.isnan(err) else f"{err:.2e}"
        if status != "ok":
            note = f"worst {worst}" if worst else ""
            rows = [cell_row(cell, m, status, check_err=err_txt, note=note) for m in wl.modes]
            self._save(rows)
            self._raise_if_lost()
            return rows
        for mode in wl.modes:
            why = no_room[mode] or decide(self.estimator.mode_s(peer, wl, mode),
                                          self.s.budget.left(), math.inf)
            row = cell_row(cell, mode, why) if why else self._time_mode(cell, mode, free)
            row["check_err"] = err_txt
            rows.append(row)
            self._save([row])
            if row["status"].startswith("error"):
                self._raise_if_lost()
        return rows

    def _raise_if_lost(self) -> None:
        if not _context_alive(self.s.device):
            raise ContextLost("CUDA context lost")

    def _time_mode(self, cell: Cell, mode: str, free: int) -> dict:
        wl, peer, dev = cell.wl, cell.peer, self.s.device
        need = peer.memory_need(wl, mode) + set_bytes(wl)
        sets = fn = None
        try:
            t0 = time.perf_counter()
            fn = peer.prepare(wl, dev)
            prep_s = time.perf_counter() - t0
            n = input_sets_needed(set_bytes(wl), dev, free - need)
            sets = [make_inputs(wl, dev, seed=1000 + i, requires_grad=mode != FWD)
                    for i in range(n)]
            one = _one_call(peer, fn, mode)
            t = measure(lambda i: one(sets[i % n]), dev, self.s.timing)
            peak = peak_memory(lambda: one(sets[0]), dev)
            ms = t.median_ms
            compile_s = round(prep_s + t.first_s, 2)
            self.estimator.observe(peer, wl, mode, ms, compile_s)
            gbps = ""
            if mode == FWD:
                elem = sets[0].q.element_size()
                moved = flops.fwd_min_bytes(wl.rows_q, wl.rows_k, wl.heads_q, wl.heads_kv,
                                            wl.head_dim, elem)
                gbps = _sig(moved / ms / 1e6)
            return cell_row(cell, mode, "ok", ms=_sig(ms),
                             tflops=_sig(wl.flops(mode) / ms / 1e9), gbps=gbps,
                             peak_mib="" if math.isnan(peak) else round(peak / 2**20, 1),
                             reps=t.reps, spread=round(t.spread, 3), compile_s=compile_s,
                             note=peer.note())
        except torch.cuda.OutOfMemoryError:
            return cell_row(cell, mode, "oom")
        except Exception as e:  # noqa: BLE001
            if "out of memory" in str(e).lower():
                return cell_row(cell, mode, "oom")
            return cell_row(cell, mode, "error: " + _short(e))
        finally:
            del sets, fn
            _release(dev)


def cell_row(cell: Cell, mode: str, status: str, **kw) -> dict:
    """A CSV row of the cell (every column present; blanks where nothing applies)."""
    wl, peer = cell.wl, cell.peer
    row = dict.fromkeys(COLUMNS, "")
    row.update(workload=wl.name, family=wl.family, length=wl.length, shape=wl.describe(),
               impl=peer.name, label=peer.label, mode=mode, status=status,
               gflop=_sig(wl.flops(mode) / 1e9), tier=cell.tier)
    row.update(kw)
    return row


def missing_rows(plan: List[Cell], rows: List[dict], running: Optional[Cell],
                 device: torch.device) -> List[dict]:
    """A row for every planned (cell, mode) without one, after a run cut short (by the watchdog,
    or killed and then reported with --report-only): the static skip where there is one (it
    would never have run), else "skipped: budget"."""
    have = {(r["workload"], r["impl"], r["mode"]) for r in rows}
    out = []
    for cell in plan:
        for mode in cell.wl.modes:
            if (cell.wl.name, cell.peer.name, mode) in have:
                continue
            why = static_skip(cell.peer, cell.wl, device)
            status = ("skipped: " + why if why else
                      BUDGET + (" (cut while running)" if cell is running else " (not reached)"))
            out.append(cell_row(cell, mode, status))
    return out


def load_rows(path: str) -> List[dict]:
    """Result rows of a JSON-lines file, each with the seconds its cell took ("cell_s")."""
    rows, took = [], {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                if r.get("kind") == "cell":
                    took[(r["workload"], r["impl"])] = r["cell_s"]
                else:
                    rows.append(r)
    for r in rows:
        r["cell_s"] = took.get((r["workload"], r["impl"]), "")
    return rows


def done_cells(rows: List[dict]) -> set:
    return {(r["workload"], r["impl"]) for r in rows}
