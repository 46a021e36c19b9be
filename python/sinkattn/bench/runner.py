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
import time
from typing import Dict, List, Tuple

import torch

from . import flops
from .inputs import make_inputs, set_bytes
from .peers import Peer
from .reference import TOLERANCE, compare, reference
from .suites import FWD, Workload
from .timing import TimingConfig, input_sets_needed, measure, peak_memory

# CSV columns, in order. Numbers are blank where they do not apply.
COLUMNS = ["workload", "family", "length", "shape", "impl", "label", "mode", "status", "ms",
           "tflops", "gbps", "peak_mib", "check_err", "reps", "spread", "gflop", "cell_s", "note"]


class ContextLost(RuntimeError):
    """The CUDA context is unusable (e.g. an illegal address): only a new process can go on."""


@dataclasses.dataclass
class Settings:
    device: torch.device
    timing: TimingConfig
    deadline: float  # time.time() after which remaining cells are skipped


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:160]


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
    def __init__(self, settings: Settings, results_path: str):
        self.s = settings
        self.results_path = results_path
        self._checks: Dict[Tuple[str, Workload], Tuple[str, float, str]] = {}

    def _row(self, wl: Workload, peer: Peer, mode: str, status: str, **kw) -> dict:
        row = dict.fromkeys(COLUMNS, "")
        row.update(workload=wl.name, family=wl.family, length=wl.length, shape=wl.describe(),
                   impl=peer.name, label=peer.label, mode=mode, status=status,
                   gflop=_sig(wl.flops(mode) / 1e9))
        row.update(kw)
        return row

    def _save(self, rows: List[dict]) -> None:
        with open(self.results_path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    def run_cell(self, wl: Workload, peer: Peer) -> List[dict]:
        """All rows of one (workload, peer); never raises except ContextLost."""
        t0 = time.time()
        try:
            return self._run_cell(wl, peer)
        finally:  # seconds the cell took, check and compilation included: where a run's time went
            with open(self.results_path, "a") as f:
                f.write(json.dumps({"kind": "cell", "workload": wl.name, "impl": peer.name,
                                    "cell_s": round(time.time() - t0, 1)}) + "\n")

    def _run_cell(self, wl: Workload, peer: Peer) -> List[dict]:
        dev = self.s.device
        reason = (peer.unavailable()
                  or (None if dev.type in peer.devices else f"{dev.type} not supported here")
                  or peer.unsupported(wl, dev))
        if reason:
            rows = [self._row(wl, peer, m, "skipped: " + reason) for m in wl.modes]
            self._save(rows)
            return rows
        if time.time() > self.s.deadline:
            rows = [self._row(wl, peer, m, "skipped: time budget") for m in wl.modes]
            self._save(rows)
            return rows

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
            rows = [self._row(wl, peer, m, status, check_err=err_txt, note=note)
                    for m in wl.modes]
            self._save(rows)
            self._raise_if_lost()
            return rows
        for mode in wl.modes:
            row = self._time_mode(wl, peer, mode)
            row["check_err"] = err_txt
            rows.append(row)
            self._save([row])
            if row["status"].startswith("error"):
                self._raise_if_lost()
        return rows

    def _raise_if_lost(self) -> None:
        if not _context_alive(self.s.device):
            raise ContextLost("CUDA context lost")

    def _time_mode(self, wl: Workload, peer: Peer, mode: str) -> dict:
        dev = self.s.device
        if time.time() > self.s.deadline:
            return self._row(wl, peer, mode, "skipped: time budget")
        need = peer.memory_need(wl, mode) + set_bytes(wl)
        free = _free_bytes(dev)
        if need > 0.9 * free:
            return self._row(wl, peer, mode, f"skipped: memory (needs ~{need / 2**30:.0f} GiB)")
        sets = fn = None
        try:
            fn = peer.prepare(wl, dev)
            n = input_sets_needed(set_bytes(wl), dev, free - need)
            sets = [make_inputs(wl, dev, seed=1000 + i, requires_grad=mode != FWD)
                    for i in range(n)]
            one = _one_call(peer, fn, mode)
            t = measure(lambda i: one(sets[i % n]), dev, self.s.timing)
            peak = peak_memory(lambda: one(sets[0]), dev)
            ms = t.median_ms
            gbps = ""
            if mode == FWD:
                elem = sets[0].q.element_size()
                moved = flops.fwd_min_bytes(wl.rows_q, wl.rows_k, wl.heads_q, wl.heads_kv,
                                            wl.head_dim, elem)
                gbps = _sig(moved / ms / 1e6)
            return self._row(wl, peer, mode, "ok", ms=_sig(ms),
                             tflops=_sig(wl.flops(mode) / ms / 1e9), gbps=gbps,
                             peak_mib="" if math.isnan(peak) else round(peak / 2**20, 1),
                             reps=t.reps, spread=round(t.spread, 3), note=peer.note())
        except torch.cuda.OutOfMemoryError:
            return self._row(wl, peer, mode, "oom")
        except Exception as e:  # noqa: BLE001
            if "out of memory" in str(e).lower():
                return self._row(wl, peer, mode, "oom")
            return self._row(wl, peer, mode, "error: " + _short(e))
        finally:
            del sets, fn
            _release(dev)


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


def cells(workloads: List[Workload], peers: List[Peer]) -> List[Tuple[Workload, Peer]]:
    """Run order: peer by peer, those that compile per shape last, so that when the time budget
    runs out it is their largest shapes that go unmeasured, never our own rows. Tables are
    sorted by workload afterwards."""
    order = sorted(peers, key=lambda p: p.compiles)
    return [(wl, p) for p in order for wl in workloads]

