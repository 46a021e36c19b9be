"""`python -m sinkattn.demo` end to end on the CPU, shrunk to a few steps."""

import json
import subprocess
import sys

from sinkattn import demo


def test_demo_trains_both_and_writes_plot_and_numbers(tmp_path):
    summary = demo.main(["--device", "cpu", "--steps", "3", "--seq", "64", "--batch", "1", "--out", str(tmp_path)])
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["steps"] == 3 and len(saved["sinkattn_losses"]) == 3 and len(saved["eager_losses"]) == 3
    # Same weights, same data, fp32: the two runs agree to rounding.
    assert summary["max_loss_diff"] < 1e-4
    assert summary["max_grad_diff"] <= 1e-4 * summary["max_grad"]
    assert summary["sinkattn_tokens_per_s"] > 0 and summary["eager_peak_memory_bytes"] > 0


def test_demo_module_is_runnable():
    help_text = subprocess.run([sys.executable, "-m", "sinkattn.demo", "--help"], capture_output=True, text=True, check=True)
    for option in ("--steps", "--seq", "--model", "--device", "--out"):
        assert option in help_text.stdout
