"""python -m sinkattn.bench --suite quick|full [--device cuda|cpu] [--out DIR] [--compare CSV]

Runs every implementation on every workload of the suite in this process, writes DIR/results.csv,
DIR/PERFORMANCE.md and DIR/perf_*.png, and prints the short table last. With --compare, exits 1
when a tracked figure falls more than --margin below the baseline.
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
import time
import warnings

import torch

from . import compare, peers, report, runner, suites
from .timing import TimingConfig

_RESTARTS = "SINKATTN_BENCH_RESTARTS"
_DEADLINE = "SINKATTN_BENCH_DEADLINE"
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
                   help="seconds of measurement before remaining cells are skipped "
                   f"(default {suites.BUDGET_S})")
    p.add_argument("--target-s", type=float, default=None,
                   help="timed work per cell in seconds (sets the repeat count)")
    p.add_argument("--list", action="store_true", help="print the suite's workloads and exit")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="keep DIR/results.jsonl and run only the cells not in it")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rewrite the outputs from DIR/results.jsonl (e.g. after a "
                   "run was killed)")
    return p.parse_args(argv)


def _commit() -> str:
    if os.environ.get("SINKATTN_COMMIT"):
        return os.environ["SINKATTN_COMMIT"]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + (" (with uncommitted changes)" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - absent or broken: just say so
        return "-"


def _meta(args, device: torch.device) -> dict:
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
    argv = [a for a in sys.argv[1:] if a != "--resume"]
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


def _restart(out_dir: str) -> None:
    """Start over in a fresh process (the CUDA context is gone), keeping the rows so far."""
    n = int(os.environ.get(_RESTARTS, "0")) + 1
    os.environ[_RESTARTS] = str(n)
    print(f"[bench] CUDA context lost: restarting in a new process ({n}/{MAX_RESTARTS})",
          file=sys.stderr, flush=True)
    argv = [a for a in sys.argv[1:] if a != "--resume"] + ["--resume"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "sinkattn.bench"] + argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(dev_name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    workloads = suites.get_suite(args.suite, device.type)
    if args.workloads:
        keep = {w.strip() for w in args.workloads.split(",")}
        workloads = [w for w in workloads if w.name in keep]
    if args.list:
        for w in workloads:
            print(f"{w.name:16s} {w.describe()}; {'/'.join(w.modes)}; {w.dtype}")
        return 0
    impls = peers.select(args.impls)
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "results.jsonl")
    meta_path = os.path.join(args.out, "meta.json")
    if args.report_only:
        args.resume = True
    if not args.resume:
        if os.path.exists(jsonl):
            os.remove(jsonl)
        with open(meta_path, "w") as f:
            json.dump(_meta(args, device), f, indent=1)
        budget = args.budget_s if args.budget_s is not None else suites.BUDGET_S[args.suite]
        os.environ[_DEADLINE] = str(time.time() + budget)
        os.environ.pop(_RESTARTS, None)
    deadline = float(os.environ.get(_DEADLINE, time.time() + suites.BUDGET_S[args.suite]))

    warnings.filterwarnings("ignore", category=UserWarning)  # backend-selection chatter

    done = runner.done_cells(runner.load_rows(jsonl))
    todo = [c for c in runner.cells(workloads, impls) if (c[0].name, c[1].name) not in done]
    if args.report_only:
        todo = []
    run = runner.Runner(runner.Settings(device, _timing(args, device), deadline), jsonl)
    bar = None
    if todo and not args.no_progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(todo) + len(done), initial=len(done), unit="cell",
                       file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10.0,
                       dynamic_ncols=True)
        except ImportError:
            pass
    for wl, peer in todo:
        if bar is not None:
            bar.set_postfix_str(f"{wl.name} / {peer.name}", refresh=False)
        try:
            run.run_cell(wl, peer)
        except runner.ContextLost:
            if int(os.environ.get(_RESTARTS, "0")) < MAX_RESTARTS:
                if bar is not None:
                    bar.close()
                _restart(args.out)
            run.s.deadline = 0.0  # out of restarts: the rest is reported as skipped
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    rows = runner.load_rows(jsonl)
    with open(meta_path) as f:
        meta = json.load(f)
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
    return code


if __name__ == "__main__":
    sys.exit(main())
