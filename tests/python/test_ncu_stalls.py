"""The stall ledger of tests/cuda/ncu_stalls.py, on a source page in the CSV form that Nsight
Compute exports (a kernel-name line, then the header): ranking, shares and reasons."""
from __future__ import annotations

import os
import subprocess
import sys

TOOL = os.path.join(os.path.dirname(__file__), "..", "cuda", "ncu_stalls.py")

PAGE = "\n".join([
    '"Kernel Name","void k<(int)64>(Params)",',
    '"Address","Source","Warp Stall Sampling (All Samples)","Warp Stall Sampling (Not-issued Samples)",'
    '"stall_barrier","stall_wait","stall_barrier (Not Issued)","stall_wait (Not Issued)"',
    '"0x10","  HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ","10","2","0","10","0","2"',
    '"0x20","  BAR.SYNC.DEFER_BLOCKING 0x3, 0x100","60","60","45","15","45","15"',
    '"0x30","  MUFU.EX2 R1, R1","30","5","0","30","0","5"',
])


def test_ledger_ranks_instructions_and_counts_reasons_once(tmp_path):
    page = tmp_path / "src.csv"
    page.write_text(PAGE)
    out = subprocess.run([sys.executable, TOOL, str(page), "--top=2"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == "3 instructions, 100 samples; reason columns: 2"
    assert "BAR.SYNC" in out[1] and "60.00%" in out[1] and "stall_barrier 75%, stall_wait 25%" in out[1]
    assert "MUFU.EX2" in out[2] and "30.00%" in out[2]
    assert len(out) == 4  # --top=2, then the totals
    # Over all samples only: the not-issued copies of each reason are not added in again.
    assert out[3] == "totals: stall_wait 55.0%; stall_barrier 45.0%"


def test_ledger_names_a_page_without_header(tmp_path):
    page = tmp_path / "empty.csv"
    page.write_text("==ERROR== Could not open report file\n")
    run = subprocess.run([sys.executable, TOOL, str(page)], capture_output=True, text=True)
    assert run.returncode != 0 and "no CSV header" in run.stderr
