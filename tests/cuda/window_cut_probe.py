"""Causal short sequences timed as they are and with the window their lengths make equivalent
(left = the longest - 1, the same mask): what dispatch.cu's kernel_mask weighs when it cuts a
mask's bounds to the lengths. On a library without the cut both forms show their own kernels;
with it, the shapes it cuts read the same twice. Medians of interleaved rounds, 32k tokens.
    python3 window_cut_probe.py LIB [HQ/HKV/D ...]   (default: 64/8/64 32/8/128 16/16/128)
Run from tests/cuda, like check_cuda.py."""
import statistics
import sys

import torch

from check_cuda import doc_lengths, median_ms, packed_problem, rand
from sinkattn_ctypes import Lib

TOTAL = 32768
SPECS = [("docs 16..129", (16, 129)), ("docs 130..256", (130, 256)), ("docs 257..512", (257, 512)),
         ("docs 128..1024", (128, 1024)), ("256 of 128", 128), ("64 of 512", 512),
         ("32 of 1024", 1024)]


def main():
    lib = Lib(sys.argv[1])
    layouts = [tuple(map(int, a.split("/"))) for a in sys.argv[2:]] or [(64, 8, 64), (32, 8, 128), (16, 16, 128)]
    print(f"{'heads':12s} {'shape':15s} {'fwd causal':>10s} {'fwd cut':>8s} {'bwd causal':>10s} {'bwd cut':>8s}")
    for hq, hkv, d in layouts:
        for name, spec in SPECS:
            lens = doc_lengths(TOTAL, *spec) if isinstance(spec, tuple) else [spec] * (TOTAL // spec)
            n = sum(lens)
            q, k, v, dout = (rand((n, h, d), torch.bfloat16) for h in (hq, hkv, hkv, hq))
            sinks = torch.randn(hq, device="cuda")
            forms = {}
            for form, left in (("causal", -1), ("cut", max(lens) - 1)):
                prob, cu = packed_problem(q, k, v, sinks, lens, left=left)
                out, lse = torch.empty_like(q), torch.empty((hq, n), device="cuda")
                grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty(hq, device="cuda"))
                forms[form] = (prob, cu, out, lse, grads)
            times = {form: ([], []) for form in forms}
            for r in range(4):  # interleaved, the order reversed every other round
                for form in list(forms)[:: 1 if r % 2 == 0 else -1]:
                    prob, _, out, lse, (dq, dk, dv, ds) = forms[form]
                    times[form][0].append(median_ms(lambda: lib.fwd(prob, out, lse)))
                    times[form][1].append(median_ms(lambda: lib.bwd(prob, out, dout, lse, dq, dk, dv, ds, False)))
            med = {form: [statistics.median(t) for t in ts] for form, ts in times.items()}
            print(f"{hq}/{hkv} d{d:<7d} {name:15s} {med['causal'][0]:10.3f} {med['cut'][0]:8.3f} "
                  f"{med['causal'][1]:10.3f} {med['cut'][1]:8.3f}", flush=True)


if __name__ == "__main__":
    main()
