"""Clock and power of the GPU while one forward runs back to back (lent machine): each shape's
sinkattn forward, then torch SDPA's on cuDNN (no sinks), looped for a few seconds while
nvidia-smi samples the SM clock and the power draw every 50 ms. Prints per run the GPU time per
call and the clock and power medians after the first second. On the lent H200 every such run sat
at its 700 W limit, so the clock, not the kernel alone, set the rate (docs/PERFORMANCE.md,
twenty-ninth session).

usage: python3 power_probe.py LIBSINKATTN.so [SECONDS] [--bwd]
  --bwd: the backward instead (sinkattn's backward kernels; SDPA's forward + autograd.grad, whose
  time is then not comparable, only its clock and power; at llama 8k its host side set the pace:
  127 W, the GPU mostly idle)
"""
import datetime
import statistics
import subprocess
import sys
import time

import torch

from compare_libs import Case, Sdpa
from sinkattn_ctypes import Lib

# (name, Case arguments: seqlen, heads_q, heads_kv, head_dim, sinks, window left, varlen)
SHAPES = [("llama 8k", (8192, 32, 8, 128, False, -1, False)),
          ("llama 32k", (32768, 32, 8, 128, False, -1, False)),
          ("gptoss 16k", (16384, 64, 8, 64, True, -1, False))]


def loop(fn, secs):
    """(start, end, ms per call) of calling fn back to back for secs seconds. The time per call
    is the GPU's: each batch of 10 is timed from the end of a call issued before it, so the
    host's gap after each synchronize is not counted (SDPA's own host time per call, ~0.3-1 ms,
    would otherwise show up in its figure)."""
    torch.cuda.synchronize()
    t0, n, ms = time.time(), 0, 0.0
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    while time.time() - t0 < secs:
        fn()
        a.record()
        for _ in range(10):
            fn()
        b.record()
        torch.cuda.synchronize()
        ms += a.elapsed_time(b)
        n += 10
    return t0, time.time(), ms / n


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    bwd = "--bwd" in sys.argv
    lib = Lib(args[0])
    secs = float(args[1]) if len(args) > 1 else 6.0
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw",
                            "--format=csv,noheader,nounits", "-lms", "50"],
                           stdout=subprocess.PIPE, text=True)
    runs = []
    for name, shape in SHAPES:
        case = Case(*shape)
        peer = Sdpa(case)
        if bwd:
            case.fwd(lib)()  # out and lse for the backward
            pair = (("sinkattn bwd", case.bwd(lib)), ("sdpa-cudnn fwd+bwd", peer.fwd_bwd()))
        else:
            pair = (("sinkattn fwd", case.fwd(lib)), ("sdpa-cudnn fwd", peer.fwd()))
        for who, fn in pair:
            runs.append((f"{name} {who}",) + loop(fn, secs))
            time.sleep(1.5)  # the next run starts from a settled clock
        del case, peer
        torch.cuda.empty_cache()
    smi.terminate()
    samples = []  # (epoch seconds, MHz, W); nvidia-smi prints the machine's local time
    for line in smi.communicate()[0].strip().splitlines():
        ts, clk, watts = (x.strip() for x in line.split(","))
        t = datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((t, float(clk), float(watts)))
    for name, t0, t1, ms in runs:
        sel = [s for s in samples if t0 + 1.0 <= s[0] <= t1]
        if not sel:
            print(f"{name:30s} {ms:8.3f} ms/call  (no samples)")
            continue
        clock = statistics.median(s[1] for s in sel)
        watts = statistics.median(s[2] for s in sel)
        print(f"{name:30s} {ms:8.3f} ms/call  SM clock {clock:5.0f} MHz (min "
              f"{min(s[1] for s in sel):.0f})  power {watts:4.0f} W  ({len(sel)} samples)")


if __name__ == "__main__":
    main()
