"""Regression gate: compare a run with a baseline CSV. A tracked row (by default our own
implementation) fails when its TFLOP/s fall more than ``margin`` below the baseline's, or when it
was "ok" in the baseline and is now wrong, failing or out of memory. Rows skipped in either run
for a reason outside the implementation (the run's budget, missing peer) are reported, not
failed."""
from __future__ import annotations

import dataclasses
from typing import List, Sequence

from .report import parse_num

# "skipped: time" also covers the older "skipped: time budget" rows of earlier baselines.
NEUTRAL = ("skipped: budget", "skipped: time", "skipped: not installed")


@dataclasses.dataclass
class GateResult:
    failures: List[str]   # one line per regression
    compared: int         # tracked rows found in both runs with a figure on each side
    notes: List[str]      # tracked baseline rows that could not be compared, and why

    @property
    def passed(self) -> bool:
        return not self.failures and self.compared > 0


def gate(current: Sequence[dict], baseline: Sequence[dict], margin: float,
         track: Sequence[str] = ("sinkattn",)) -> GateResult:
    now = {(r["workload"], r["impl"], r["mode"]): r for r in current}
    res = GateResult([], 0, [])
    for b in baseline:
        if b["impl"] not in track or b["status"] != "ok":
            continue
        key = (b["workload"], b["impl"], b["mode"])
        name = "/".join(key)
        c = now.get(key)
        if c is None:
            res.notes.append(f"{name}: not in this run")
            continue
        if c["status"] != "ok":
            if c["status"].startswith(NEUTRAL):
                res.notes.append(f"{name}: {c['status']}")
            else:
                res.failures.append(f"{name}: was ok, now {c['status']}")
            continue
        base_tf, now_tf = parse_num(b["tflops"]), parse_num(c["tflops"])
        if not base_tf or now_tf is None:
            res.notes.append(f"{name}: no TFLOP/s figure to compare")
            continue
        res.compared += 1
        ratio = now_tf / base_tf
        if ratio < 1.0 - margin:
            res.failures.append(f"{name}: {now_tf:.4g} TFLOP/s vs baseline {base_tf:.4g} "
                                f"({(ratio - 1) * 100:+.1f}%, margin -{margin * 100:.0f}%)")
    return res


def format_result(res: GateResult, margin: float) -> str:
    lines = [f"regression gate (margin {margin * 100:.0f}%): {res.compared} figures compared, "
             f"{len(res.failures)} regressions"]
    lines += ["  FAIL " + f for f in res.failures]
    lines += ["  note " + n for n in res.notes]
    if res.compared == 0:
        lines.append("  FAIL nothing to compare: the baseline has no tracked ok row in this run")
    lines.append("regression gate: " + ("PASS" if res.passed else "FAIL"))
    return "\n".join(lines)
