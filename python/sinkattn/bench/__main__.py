"""python -m sinkattn.bench --suite quick|full [--device cuda|cpu] [--out DIR] [--compare CSV]
                           [--budget-s N] [--dry-run]

Runs every implementation on every workload of the suite in this process, writes DIR/results.csv,
DIR/PERFORMANCE.md and DIR/perf_*.png, and prints the short table last. With --compare, exits 1
when a tracked figure falls more than --margin below the baseline.

--budget-s bounds the whole run, report included: cells run in priority order (plan.py; see
--dry-run) while their estimate fits, the rest are reported as "skipped: budget", and a watchdog
writes the outputs and ends the process at the budget if a cell overruns.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
import warnings
from typing import Optional, Tuple

import torch

from . import budget, compare, peers, plan, report, runner, suites
from .timing import TimingConfig

_RESTARTS = "SINKATTN_BENCH_RESTARTS"
# The budget and the run's start, carried across restarts.
_END, _RESERVE, _START = "SINKATTN_BENCH_END", "SINKATTN_BENCH_RESERVE", "SINKATTN_BENCH_START"
MAX_RESTARTS = 3


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m sinkattn.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="quick", choices=sorted(suites.SUITES))
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if any)")
    p.add_argument("--out", default="bench-out", help="output folder (created)")
    p.add_argument("--impls", default=None,
                   help="comma list of implementations (default: all): "
                   + ",".join(x.name for x in peers.all_peers()))
    p.add_argument("--workloads", default=None, help="comma list of workload names to keep")
    p.add_argument("--compare", default=None, metavar="BASELINE_CSV",
                   help="regression gate against a previous results.csv")
    p.add_argument("--margin", type=float, default=0.10,
                   help="allowed TFLOP/s drop below the baseline (fraction, default 0.10)")
    p.add_argument("--track", default="sinkattn", help="comma list of implementations gated")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall seconds for the whole run, report included: cells that do not fit "
                   f"are reported as 'skipped: budget' (default {suites.BUDGET_S})")
    p.add_argument("--max-cell-s", type=float, default=None,
                   help="skip a cell estimated to take longer (default: a quarter of the budget, "
                   "at least 60)")
    p.add_argument("--target-s", type=float, default=None,
                   help="timed work per cell in seconds (sets the repeat count)")
    p.add_argument("--list", action="store_true", help="print the suite's workloads and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the planned cells in run order with their estimated seconds and "
                   "exit (plans for --device cuda even without a GPU)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="keep DIR/results.jsonl and run only the cells not in it")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite the outputs from DIR/results.jsonl (e.g. after a "
                   "run was killed)")
    return p.parse_args(argv)


def _commit() -> str:
    """$SINKATTN_COMMIT when set (the GPU scripts name the tree they carried: the device copy's
    .git can be a stale one, which git would report), else the checkout's commit (git), else
    "unknown"."""
    if os.environ.get("SINKATTN_COMMIT"):
        return os.environ["SINKATTN_COMMIT"]
    here = os.path.dirname(os.path.abspath(__file__))
    sha = dirty = ""
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                    "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if sha:
        return sha + (" (with uncommitted changes)" if dirty else "")
    return "unknown"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - absent or broken: just say so
        return "-"


def _meta(args, device: torch.device, argv) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name += f", {torch.get_num_threads()} threads"
    argv = [a for a in argv if a != "--resume"]
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": str(device), "device_name": name, "suite": args.suite,
            "torch": torch.__version__, "transformers": _version("transformers"),
            "triton": _version("triton"), "commit": _commit(),
            "command": "python -m sinkattn.bench " + shlex.join(argv)}


def _timing(args, device: torch.device) -> TimingConfig:
    if device.type == "cuda":
        cfg = TimingConfig(warmup=2, target_s=0.3 if args.suite == "quick" else 0.4,
                           min_reps=5, max_reps=50, cap_s=15.0)
    else:
        cfg = TimingConfig(warmup=1, target_s=0.1, min_reps=3, max_reps=10)
    if args.target_s is not None:
        cfg.target_s = args.target_s
    return cfg


def _max_cell_s(args, budget_s: float) -> float:
    """A cell estimated above this is skipped as too slow ("skipped: time"), not left to eat the
    budget: --max-cell-s, else a quarter of the budget but at least a minute (below that the
    budget itself decides: "skipped: budget")."""
    return args.max_cell_s if args.max_cell_s is not None else max(60.0, 0.25 * budget_s)


def _restart(argv) -> None:
    """Start over in a fresh process (the CUDA context is gone), keeping the rows so far."""
    n = int(os.environ.get(_RESTARTS, "0")) + 1
    os.environ[_RESTARTS] = str(n)
    print(f"[bench] CUDA context lost: restarting in a new process ({n}/{MAX_RESTARTS})",
          file=sys.stderr, flush=True)
    argv = [a for a in argv if a != "--resume"] + ["--resume"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "sinkattn.bench"] + argv)


def _device(name: str, need_gpu: bool) -> Tuple[Optional[torch.device], str]:
    """The device to run on, or (None, error). A dry run may plan for CUDA without a GPU."""
    device = torch.device(name)
    if device.type != "cuda":
        return device, ""
    if not torch.cuda.is_available():
        return (None, "error: --device cuda but torch sees no CUDA device") if need_gpu \
            else (device, "")
    device = torch.device("cuda", device.index if device.index is not None
                          else torch.cuda.current_device())
    torch.cuda.set_device(device)
    return device, ""


def _budget(args, suite_name: str) -> budget.Budget:
    """This run's budget; after a restart (--resume in a child) the end set by the first process."""
    if args.resume and os.environ.get(_END):
        return budget.Budget(float(os.environ[_END]), float(os.environ[_RESERVE]))
    b = budget.Budget.starting_now(args.budget_s if args.budget_s is not None
                                   else suites.BUDGET_S[suite_name])
    os.environ[_END], os.environ[_RESERVE] = str(b.end), str(b.reserve)
    return b


class _Finisher:
    """Writes the outputs exactly once: at the normal end, or from the watchdog when the budget
    runs out mid-cell (then the process exits right after, see budget.Watchdog)."""

    def __init__(self, args, cells, runner_, jsonl: str, meta_path: str, t0: float):
        self.args, self.cells, self.runner, self.jsonl = args, cells, runner_, jsonl
        self.meta_path, self.t0 = meta_path, t0
        self._lock = threading.Lock()
        self._done = False

    def finish(self, cut: bool = False) -> Optional[int]:
        """Exit status; None if the other thread already finished (it exits the process)."""
        with self._lock:
            if self._done:
                return None
            self._done = True
            with self.runner.lock:  # no row half-written by the main thread
                rows = runner.load_rows(self.jsonl)
                running = self.runner.current if cut else None
                rows += runner.missing_rows(self.cells, rows, running, self.runner.s.device)
            run_s = None if self.args.report_only else time.time() - self.t0
            return _write_outputs(self.args, rows, self.meta_path, run_s, cut)


def _save_meta(path: str, meta: dict) -> None:
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)


def _write_outputs(args, rows, meta_path: str, run_s: Optional[float], cut: bool) -> int:
    with open(meta_path) as f:
        meta = json.load(f)
    if run_s is not None:  # kept for a later --report-only, which does not know it
        meta["run_s"] = round(run_s)
        _save_meta(meta_path, meta)
    if cut:
        print("\n[bench] budget spent while a cell was running: writing what was measured",
              file=sys.stderr, flush=True)
    files = report.write_all(rows, args.out, meta, with_plots=not args.no_plots)
    print(f"\nwrote {', '.join(os.path.join(args.out, x) for x in files)}")
    code = 0
    verdict = None
    if args.compare:
        track = [t.strip() for t in args.track.split(",") if t.strip()]
        res = compare.gate(rows, report.read_csv(args.compare), args.margin, track)
        text = compare.format_result(res, args.margin)
        print(text)
        verdict = text.splitlines()[-1]
        code = 0 if res.passed else 1
    print(f"\n{meta['device_name']} | suite {args.suite} | {meta['command']}")
    print(report.short_table(rows))
    if verdict:
        print(verdict)
    sys.stdout.flush()
    return code


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    t0 = float(os.environ.get(_START, time.time())) if args.resume else time.time()
    device, err = _device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                          need_gpu=not (args.list or args.dry_run or args.report_only))
    if device is None:
        print(err, file=sys.stderr)
        return 2
    suite = suites.get_suite(args.suite, device.type)
    if args.workloads:
        keep = {w.strip() for w in args.workloads.split(",")}
        suite = suites.Suite(tuple(w for w in suite.key if w.name in keep),
                             tuple(w for w in suite.rest if w.name in keep))
    if args.list:
        for w in suite.workloads:
            print(f"{w.name:16s} {w.describe()}; {'/'.join(w.modes)}; {w.dtype}")
        return 0
    impls = peers.select(args.impls)
    cells = plan.order(suite, impls)
    timing = _timing(args, device)
    if args.dry_run:
        budget_s = args.budget_s if args.budget_s is not None else suites.BUDGET_S[args.suite]
        print(plan.format_plan(cells, device, timing, budget_s, _max_cell_s(args, budget_s)))
        return 0

    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "results.jsonl")
    meta_path = os.path.join(args.out, "meta.json")
    if args.report_only:
        args.resume = True
    if not args.resume:
        if os.path.exists(jsonl):
            os.remove(jsonl)
        os.environ.pop(_RESTARTS, None)
        os.environ[_START] = str(t0)
    bud = _budget(args, args.suite)
    if not args.resume or not os.path.exists(meta_path):
        meta = _meta(args, device, argv)
        meta["budget_s"] = round(bud.end - t0)
        _save_meta(meta_path, meta)

    warnings.filterwarnings("ignore", category=UserWarning)  # backend-selection chatter

    done = runner.done_cells(runner.load_rows(jsonl))
    todo = [] if args.report_only else [c for c in cells if c.key not in done]
    run = runner.Runner(runner.Settings(device, timing, bud, _max_cell_s(args, bud.end - t0)),
                        jsonl)
    fin = _Finisher(args, cells, run, jsonl, meta_path, t0)
    dog = None
    if todo:
        dog = budget.Watchdog(bud.cells_end, lambda: fin.finish(cut=True)).start()
    bar = None
    if todo and not args.no_progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(todo) + len(done), initial=len(done), unit="cell",
                       file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10.0,
                       dynamic_ncols=True)
        except ImportError:
            pass
    for i, cell in enumerate(todo, len(done) + 1):
        if bar is not None:
            bar.set_postfix_str(f"{cell.wl.name} / {cell.peer.name}", refresh=False)
        try:
            t_cell = time.time()
            rows = run.run_cell(cell)
            if bar is None and not all(r["status"].startswith("skipped") for r in rows):
                print(f"[cell {i}/{len(cells)}] {cell.wl.name} {cell.peer.name}: "
                      + ", ".join(f"{r['mode']} {r['status'][:40]}" for r in rows)
                      + f" ({time.time() - t_cell:.1f} s, {bud.left():.0f} s left)",
                      file=sys.stderr, flush=True)
        except runner.ContextLost:
            if int(os.environ.get(_RESTARTS, "0")) < MAX_RESTARTS:
                if bar is not None:
                    bar.close()
                _restart(argv)
            bud.stop_now()  # out of restarts: the rest is reported as skipped
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if dog is not None:
        dog.cancel()
    code = fin.finish()
    if code is None:  # the watchdog is writing the outputs and ends the process
        dog.join()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
