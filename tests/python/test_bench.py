"""The benchmark harness (python/sinkattn/bench): work counting, the pre-timing check, the writers,
the regression gate, and the quick suite end to end on the CPU."""
from __future__ import annotations

import copy
import csv
import dataclasses
import os
import subprocess
import sys

import pytest
import torch

import sinkattn
from sinkattn.bench import compare, flops, peers, report, runner, suites
from sinkattn.bench.__main__ import main as bench_main
from sinkattn.bench.suites import FWD, FWD_BWD


# ---- FLOP counting: visible pairs against a brute-force count -----------------------------------

def _brute_pairs(sq, sk, causal, window):
    """Straight from the header's wording: query i sits at key position i + Sk - Sq; key j is
    visible iff j >= pos - (W - 1) (with a window) and j <= pos (causal)."""
    n = 0
    for i in range(sq):
        pos = i + sk - sq
        for j in range(sk):
            if causal and j > pos:
                continue
            if window is not None and j < pos - (window - 1):
                continue
            n += 1
    return n


@pytest.mark.parametrize("sq,sk", [(1, 1), (7, 7), (64, 64), (113, 203), (203, 113), (1, 300),
                                   (37, 0), (0, 5)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 16, 1000])
def test_visible_pairs_match_brute_force(sq, sk, causal, window):
    got = flops.visible_pairs(1, sq, sk, causal, window)
    assert got == _brute_pairs(sq, sk, causal, window)
    assert flops.visible_pairs(3, sq, sk, causal, window) == 3 * got


@pytest.mark.parametrize("window", [None, 4, 50])
def test_visible_pairs_varlen_sum_documents(window):
    lens_q, lens_k = (5, 0, 31, 1, 64), (9, 3, 31, 1, 40)  # Sq != Sk and empty documents
    want = sum(_brute_pairs(a, b, True, window) for a, b in zip(lens_q, lens_k))
    assert flops.visible_pairs(5, 64, 40, True, window, lens_q, lens_k) == want


def test_flops_formula():
    assert flops.attention_flops(10, 64, 64, FWD) == 4 * 64 * 10 * 64
    assert flops.attention_flops(10, 64, 64, FWD_BWD) == 3.5 * 4 * 64 * 10 * 64
    wl = suites.gptoss(4096)
    assert wl.pairs() == 4096 * 4097 // 2
    wl = suites.gptoss(1000, window=128)
    assert wl.pairs() == _brute_pairs(1000, 1000, True, 128)
    wl = suites.decode(100, batch=3)
    assert wl.pairs() == 300


def test_packed_docs_sum_and_bounds():
    docs = suites.packed_docs(16384, 512, 4096, seed=1)
    assert sum(docs) == 16384 and max(docs) <= 4096
    assert docs == suites.packed_docs(16384, 512, 4096, seed=1)  # reproducible


def test_suites_have_both_device_kinds():
    for name in suites.SUITES:
        for kind in ("cpu", "cuda"):
            wls = suites.get_suite(name, kind)
            assert wls and len({w.name for w in wls}) == len(wls)
            for w in wls:
                assert w.heads_q % w.heads_kv == 0
                assert w.check_slice().length <= 1024  # the fp64 reference stays cheap


def test_run_order_puts_compiling_peers_last():
    wls = suites.get_suite("quick", "cuda")
    order = runner.cells(wls, peers.all_peers())
    names = [p.name for _, p in order]
    assert names[0] == "sinkattn" and names[-1] == "flex"
    assert len(order) == len(wls) * len(peers.all_peers())


# ---- the check: a wrong implementation is reported as wrong -------------------------------------

class _NoSinkPretender(peers.Peer):
    """Plain attention that claims to compute the sink term: the check must refuse it."""
    name, label = "pretender", "pretender"

    def prepare(self, wl, device):
        def fn(inp):
            q, k, v = (t.transpose(1, 2) for t in (inp.q, inp.k, inp.v))
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=wl.scale, enable_gqa=True)
            return out.transpose(1, 2)
        return fn


class _OffByOneWindow(peers.HFEager):
    name = "off-by-one"

    def prepare(self, wl, device):
        return super().prepare(dataclasses.replace(wl, window=wl.window + 1), device)


def test_check_flags_wrong_implementations():
    cpu = torch.device("cpu")
    wl = suites.gptoss(256, hq=4, hkv=2, dtype="float32")
    assert runner.check(peers.HFEager(), wl, cpu)[0] == "ok"
    status, err, _ = runner.check(_NoSinkPretender(), wl, cpu)
    assert status == "wrong" and err > 0.1
    # Without the sink claim the same code is right (it is compared with the no-sink reference).
    honest = _NoSinkPretender()
    honest.uses_sinks = False
    assert runner.check(honest, wl, cpu)[0] == "ok"
    wl = suites.gptoss(512, window=64, hq=4, hkv=2, dtype="float32")
    assert runner.check(_OffByOneWindow(), wl, cpu)[0] == "wrong"


def test_sinkattn_passes_check_on_cpu():
    cpu = torch.device("cpu")
    for wl in suites.get_suite("quick", "cpu"):
        status, err, worst = runner.check(peers.SinkAttn(), wl, cpu)
        assert status == "ok", (wl.name, err, worst)


# ---- writers ------------------------------------------------------------------------------------

def _rows():
    wl = suites.gptoss(1024, hq=8, hkv=1, dtype="float32")
    base = dict.fromkeys(runner.COLUMNS, "")
    base.update(workload=wl.name, family=wl.family, length=wl.length, shape=wl.describe(),
                check_err="1.00e-07")
    rows = []
    for impl, label, ms_f, ms_fb in (("sinkattn", "sinkattn", 2.0, 6.0),
                                     ("hf-eager", "transformers eager", 4.0, 14.0)):
        for mode, ms in ((FWD, ms_f), (FWD_BWD, ms_fb)):
            r = dict(base, impl=impl, label=label, mode=mode, status="ok", ms=ms,
                     gflop=wl.flops(mode) / 1e9, tflops=wl.flops(mode) / ms / 1e9, gbps=1.0,
                     peak_mib=10.0, reps=5, spread=0.01)
            rows.append(r)
    rows += [dict(base, impl="flash-attn2", label="flash-attn 2", mode=m,
                  status="skipped: not installed (flash_attn: ModuleNotFoundError)")
             for m in (FWD, FWD_BWD)]
    return rows


def test_csv_roundtrip(tmp_path):
    rows = _rows()
    path = tmp_path / "r.csv"
    report.write_csv(rows, str(path))
    back = report.read_csv(str(path))
    assert [r["impl"] for r in back] == [r["impl"] for r in rows]
    assert back[0]["ms"] == 2.0 and back[0]["status"] == "ok"
    assert back[-1]["ms"] is None
    with open(path) as f:
        assert next(csv.reader(f)) == runner.COLUMNS


def test_summary_and_markdown():
    rows = _rows()
    recs = {r["impl"]: r for r in report.summarize(rows)}
    fwd_gflop = rows[0]["gflop"]
    # backward TFLOP/s from the difference of the two timings: 2.5 x fwd FLOPs / (6 - 2) ms
    assert recs["sinkattn"]["bwd_tflops"] == pytest.approx(2.5 * fwd_gflop / 4.0)
    md = report.markdown(rows, {"date": "D", "device_name": "G", "commit": "C",
                                "command": "python -m sinkattn.bench"}, ["perf_fwd_tflops.png"])
    assert "## gptoss" in md and "| workload |" in md and "Commit: C" in md
    assert "transformers eager" in md
    assert "Not run: flash-attn2 (not installed)" in md  # folded, not a table row
    assert "![perf_fwd_tflops](perf_fwd_tflops.png)" in md
    table = report.short_table(rows)
    assert table.splitlines()[1].split()[:2] == ["gptoss-1k", "sinkattn"]
    assert table.splitlines()[-1].startswith("skipped: flash-attn2")


# ---- regression gate ----------------------------------------------------------------------------

def test_gate():
    base = _rows()
    now = copy.deepcopy(base)
    assert compare.gate(now, base, 0.10).passed

    slower = copy.deepcopy(base)
    slower[0]["tflops"] *= 0.85  # sinkattn fwd 15% down
    res = compare.gate(slower, base, 0.10)
    assert not res.passed and len(res.failures) == 1 and "sinkattn" in res.failures[0]
    assert compare.gate(slower, base, 0.20).passed  # inside a wider margin

    untracked = copy.deepcopy(base)
    untracked[2]["tflops"] *= 0.5  # eager is not tracked by default
    assert compare.gate(untracked, base, 0.10).passed
    assert not compare.gate(untracked, base, 0.10, track=("sinkattn", "hf-eager")).passed

    wrong = copy.deepcopy(base)
    wrong[1]["status"], wrong[1]["tflops"] = "wrong", None
    assert not compare.gate(wrong, base, 0.10).passed

    budget = copy.deepcopy(base)
    budget[1]["status"], budget[1]["tflops"] = "skipped: time budget", None
    res = compare.gate(budget, base, 0.10)
    assert res.passed and res.notes

    assert not compare.gate([], base, 0.10).passed  # nothing compared is not a pass


# ---- the quick suite on the CPU, end to end -----------------------------------------------------

def _bench(args, timeout):
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(sinkattn.__file__)))
    env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "sinkattn.bench", "--device", "cpu",
                           "--no-progress"] + args, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_quick_suite_cpu(tmp_path, capsys):
    out = tmp_path / "quick"
    p = _bench(["--suite", "quick", "--out", str(out)], timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = report.read_csv(str(out / "results.csv"))
    by = {(r["workload"], r["impl"], r["mode"]): r for r in rows}
    for wl in suites.get_suite("quick", "cpu"):
        for mode in wl.modes:
            for impl in ("sinkattn", "hf-eager"):
                r = by[(wl.name, impl, mode)]
                assert r["status"] == "ok" and r["ms"] > 0 and r["tflops"] > 0, r
    assert not [r for r in rows if r["status"] in ("wrong", "oom") or
                r["status"].startswith("error")]
    for f in ("PERFORMANCE.md", "results.jsonl", "meta.json", "perf_fwd_tflops.png"):
        assert (out / f).exists(), f
    assert p.stdout.rstrip().splitlines()[-1].startswith("skipped:")  # the table comes last

    # The gate on a baseline that claims sinkattn was 100x faster: exit status 1.
    base = [dict(r) for r in rows]
    for r in base:
        if r["impl"] == "sinkattn" and r["tflops"]:
            r["tflops"] *= 100
    report.write_csv(base, str(tmp_path / "base.csv"))
    wl = suites.get_suite("quick", "cpu")[0].name
    code = bench_main(["--suite", "quick", "--device", "cpu", "--no-progress", "--no-plots",
                       "--out", str(tmp_path / "gate"), "--workloads", wl, "--impls", "sinkattn",
                       "--compare", str(tmp_path / "base.csv")])
    assert code == 1
    assert "regression gate: FAIL" in capsys.readouterr().out
