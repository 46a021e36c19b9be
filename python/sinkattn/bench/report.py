"""Outputs of a run: CSV (every row), a short fixed-width table, the markdown for
docs/PERFORMANCE.md, and PNG plots (TFLOP/s against length per implementation, forward and
backward; peak memory against length)."""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Optional

from .flops import BWD_FACTOR
from .runner import COLUMNS
from .suites import FWD

NOISY = 0.2  # p20-p80 spread over the median above which a row is flagged as noisy
NUMERIC = {"length", "ms", "tflops", "gbps", "peak_mib", "reps", "spread", "gflop", "compile_s",
           "cell_s", "tier"}
# Skips that say something about the implementation or the run (shown as table rows); any other
# skip (not installed, feature or device missing) is folded into one line per implementation.
VISIBLE_SKIPS = ("skipped: memory", "skipped: time", "skipped: budget")


def write_csv(rows: List[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_csv(path: str) -> List[dict]:
    """Rows with numbers parsed (blank -> None)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in NUMERIC & r.keys():
            r[k] = parse_num(r[k])
    return rows


def parse_num(x) -> Optional[float]:
    """A CSV/JSON cell as a float; None for blanks and text."""
    if x is None or x == "":
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def summarize(rows: List[dict]) -> List[dict]:
    """One record per (workload, impl) in first-seen order: forward and forward+backward side by
    side. Backward TFLOP/s = 2.5x the forward FLOPs over (fwd+bwd time - fwd time)."""
    out: Dict[tuple, dict] = {}
    for r in rows:
        key = (r["workload"], r["impl"])
        rec = out.setdefault(key, {"workload": r["workload"], "family": r["family"],
                                   "length": parse_num(r["length"]), "shape": r["shape"],
                                   "impl": r["impl"], "label": r["label"], "status": [],
                                   "check_err": r.get("check_err", ""), "note": r.get("note", "")})
        tag = "fwd" if r["mode"] == FWD else "fb"
        rec[tag + "_status"] = r["status"]
        rec["spread"] = max(rec.get("spread", 0.0), parse_num(r.get("spread")) or 0.0)
        rec["compile_s"] = (rec.get("compile_s") or 0.0) + (parse_num(r.get("compile_s")) or 0.0)
        if r["status"] == "ok":
            rec[tag + "_ms"] = parse_num(r["ms"])
            rec[tag + "_tflops"] = parse_num(r["tflops"])
            rec[tag + "_mib"] = parse_num(r["peak_mib"])
            if tag == "fwd":
                rec["gbps"] = parse_num(r["gbps"])
                rec["fwd_gflop"] = parse_num(r["gflop"])
        elif r["status"] not in rec["status"]:
            rec["status"].append(r["status"])
    # Workloads in order of first appearance per family, shortest first; peers in table order.
    families = list(dict.fromkeys(r["family"] for r in out.values()))
    impls = list(dict.fromkeys(r["impl"] for r in out.values()))
    recs = sorted(out.values(), key=lambda r: (families.index(r["family"]), r["length"] or 0,
                                                r["workload"], impls.index(r["impl"])))
    for rec in recs:
        f, fb, g = rec.get("fwd_ms"), rec.get("fb_ms"), rec.get("fwd_gflop")
        if f and fb and g and fb > f:
            rec["bwd_tflops"] = BWD_FACTOR * g / (fb - f)
        rec["status"] = "; ".join(rec["status"]) or "ok"
        if rec["spread"] > NOISY:
            rec["status"] += f" (noisy: p20-p80 spread {rec['spread'] * 100:.0f}%)"
    return recs


def _quiet(rec: dict) -> bool:
    """Skipped for a reason that says nothing about speed (not installed, feature missing,
    wrong device): folded into one line instead of a table row. Memory, time and budget skips
    stay visible: the peer could have run."""
    st = rec["status"]
    return st.startswith("skipped:") and not st.startswith(VISIBLE_SKIPS)


def _quiet_line(recs: List[dict]) -> str:
    why: Dict[str, set] = {}
    for r in recs:
        if _quiet(r):
            why.setdefault(r["impl"], set()).add(r["status"][len("skipped: "):].split(" (")[0])
    return "; ".join(f"{k} ({', '.join(sorted(v))})" for k, v in why.items())


def _fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


SHORT_COLS = [("workload", 16), ("impl", 12), ("fwd ms", 9), ("fwd TF/s", 8), ("fwd GB/s", 8),
              ("f+b ms", 9), ("bwd TF/s", 8), ("MiB f+b", 8), ("status", 0)]


def short_table(rows: List[dict]) -> str:
    """The table printed last on stdout: one line per (workload, impl); peers that could not run
    a workload at all are listed once at the end instead."""
    lines = ["  ".join(n.ljust(w) for n, w in SHORT_COLS).rstrip()]
    recs = summarize(rows)
    for rec in recs:
        if _quiet(rec):
            continue
        mib = rec.get("fb_mib") if rec.get("fb_mib") is not None else rec.get("fwd_mib")
        vals = [rec["workload"], rec["impl"], _fmt(rec.get("fwd_ms")),
                _fmt(rec.get("fwd_tflops")), _fmt(rec.get("gbps")), _fmt(rec.get("fb_ms")),
                _fmt(rec.get("bwd_tflops")),
                _fmt(mib), rec["status"][:70]]
        lines.append("  ".join(str(v).ljust(w) for v, (_, w) in zip(vals, SHORT_COLS)).rstrip())
    if _quiet_line(recs):
        lines.append("skipped: " + _quiet_line(recs))
    return "\n".join(lines)


def markdown(rows: List[dict], meta: dict, plots: List[str]) -> str:
    """docs/PERFORMANCE.md: provenance, the definitions behind the numbers, one table per family,
    the plots."""
    m = meta
    timer = "CUDA-event" if str(m.get("device", "")).startswith("cuda") else "wall-clock"
    cut = sorted({(r["workload"], r["impl"]) for r in rows
                  if str(r["status"]).startswith("skipped: budget")})
    out = [
        "# Performance", "",
        f"- Date: {m.get('date', '?')}",
        f"- {'GPU' if timer == 'CUDA-event' else 'CPU'}: {m.get('device_name', '?')} "
        f"({m.get('device', '?')})",
        f"- Software: torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}, "
        f"triton {m.get('triton', '-')}",
        f"- Commit: {m.get('commit', '?')}",
        f"- Command: `{m.get('command', '?')}`",
        f"- Budget: {m.get('budget_s', '?')} s for the whole run, used {m.get('run_s', '?')} s; "
        f"{len(cut)} (workload, implementation) cells skipped by it", "",
        "TFLOP/s count visible (unmasked) query-key pairs only: 4 * Hq * pairs * D for the "
        f"forward, {BWD_FACTOR}x that for the backward; backward TFLOP/s = backward FLOPs / "
        f"(fwd+bwd time - fwd time). Times are medians of {timer}-timed calls after warm-up, "
        + ("queued behind a GPU sleep where their host side would otherwise set the pace, "
           if timer == "CUDA-event" else "") +
        "inputs rotated beyond the last-level cache. Memory is the peak allocated by one call "
        "above what was live before it (inputs excluded). Every implementation was first "
        "checked against an fp64 reference on a small slice of each workload (column 'check': worst relative error); "
        "a wrong one is not timed. \"no sinks\" rows compute plain attention: a speed reference "
        "point, not the same function. 'compile s': seconds of setup and first calls (compilation, "
        "autotuning, plans), outside the timed calls.", "",
    ]
    by_family: Dict[str, List[dict]] = {}
    for rec in summarize(rows):
        by_family.setdefault(rec["family"], []).append(rec)
    for fam, recs in by_family.items():
        out += [f"## {fam}", "",
                "| workload | shape | implementation | fwd ms | fwd TFLOP/s | fwd GB/s | "
                "fwd+bwd ms | bwd TFLOP/s | MiB fwd | MiB fwd+bwd | check | compile s | status |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in recs:
            if _quiet(r):
                continue
            out.append("| " + " | ".join([
                r["workload"], r["shape"], r["label"], _fmt(r.get("fwd_ms")),
                _fmt(r.get("fwd_tflops")), _fmt(r.get("gbps")), _fmt(r.get("fb_ms")),
                _fmt(r.get("bwd_tflops")), _fmt(r.get("fwd_mib")), _fmt(r.get("fb_mib")),
                r.get("check_err") or "-", _fmt(r.get("compile_s") or None, 2),
                (r["status"] + (f" ({r['note']})" if r["note"] else "")).replace("|", "\\|"),
            ]) + " |")
        if _quiet_line(recs):
            out.append("\nNot run: " + _quiet_line(recs) + ".")
        out.append("")
    out += _ratios(summarize(rows))
    if plots:
        out += ["## Plots", ""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in plots] + [""]
    return "\n".join(out)


# (numerator, denominator) workloads compared per implementation: packed documents against the
# same tokens as one sequence (issue 7's varlen target).
RATIOS = [("varlen-32k", "gptoss-32k"), ("varlen-16k", "gptoss-16k")]


def _ratios(recs: List[dict]) -> List[str]:
    """Throughput of one workload over another, per implementation that ran both."""
    by = {(r["workload"], r["impl"]): r for r in recs}
    out = []
    for num, den in RATIOS:
        for impl in dict.fromkeys(r["impl"] for r in recs):
            a, b = by.get((num, impl)), by.get((den, impl))
            if not a or not b:
                continue
            vals = [f"{name} {a[k] / b[k]:.2f}x" for k, name in (("fwd_tflops", "fwd"),
                                                             ("bwd_tflops", "bwd"))
                    if a.get(k) and b.get(k)]
            if vals:
                out.append(f"- {impl}: {num} / {den} TFLOP/s: " + ", ".join(vals))
    return (["## Ratios", ""] + out + [""]) if out else []


def plot(rows: List[dict], out_dir: str) -> List[str]:
    """PNG files written (names relative to out_dir); none when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    recs = summarize(rows)
    families = list(dict.fromkeys(r["family"] for r in recs))
    specs = [("perf_fwd_tflops.png", "fwd_tflops", "forward TFLOP/s"),
             ("perf_bwd_tflops.png", "bwd_tflops", "backward TFLOP/s"),
             ("perf_memory_fwd.png", "fwd_mib", "forward peak MiB"),
             ("perf_memory_fwd_bwd.png", "fb_mib", "fwd+bwd peak MiB")]
    written = []
    for fname, key, ylabel in specs:
        fams = [f for f in families if any(r.get(key) for r in recs if r["family"] == f)]
        if not fams:
            continue
        cols = min(3, len(fams))
        rows_n = math.ceil(len(fams) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.6 * rows_n), squeeze=False)
        for ax in axes.flat[len(fams):]:
            ax.set_visible(False)
        for ax, fam in zip(axes.flat, fams):
            # Decoding is memory-bound: its forward panel shows bandwidth, not FLOP/s.
            k, yl = ("gbps", "forward GB/s (memory-bound)") if (
                key == "fwd_tflops" and fam.endswith("decode")) else (key, ylabel)
            impls = list(dict.fromkeys(r["label"] for r in recs if r["family"] == fam))
            for label in impls:
                pts = sorted((r["length"], r[k]) for r in recs
                             if r["family"] == fam and r["label"] == label and r.get(k))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            ax.set_xscale("log", base=2)
            if "mib" in key:
                ax.set_yscale("log")
            ax.set_title(fam)
            ax.set_xlabel("tokens (keys per sequence; packed total for varlen)")
            ax.set_ylabel(yl)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, fname), dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def write_all(rows: List[dict], out_dir: str, meta: dict, with_plots: bool = True) -> List[str]:
    """CSV, markdown and plots into out_dir; returns the files written."""
    write_csv(rows, os.path.join(out_dir, "results.csv"))
    plots = plot(rows, out_dir) if with_plots else []
    with open(os.path.join(out_dir, "PERFORMANCE.md"), "w") as f:
        f.write(markdown(rows, meta, plots))
    return ["results.csv", "PERFORMANCE.md"] + plots

