"""The cost of packing alone: the same documents as a packed (varlen) batch and as a fixed-length
batch of equal sequences, forward and backward, so that the tiles and their work are identical
and only the varlen indexing differs. Medians over interleaved rounds.
    python3 varlen_vs_batch.py LIB [DOCS x LEN ...]   (default: 8x4096 32x1024 128x256)
Run from tests/cuda, like check_cuda.py; the path follows SINKATTN_CUDA_PATH."""
import statistics
import sys

import torch

from check_cuda import median_ms, packed_problem, rand
from sinkattn_ctypes import Lib

ROUNDS = 4


def main():
    lib = Lib(sys.argv[1])
    specs = [tuple(map(int, a.split("x"))) for a in sys.argv[2:]] or [(8, 4096), (32, 1024), (128, 256)]
    hq, hkv, d = 64, 8, 64
    print(f"{'docs x len':12s} {'layout':8s} {'fwd ms':>8s} {'bwd ms':>8s}")
    for n, s in specs:
        q, k, v, dout = (rand((n, s, h, d), torch.bfloat16) for h in (hq, hkv, hkv, hq))
        sinks = torch.randn(hq, device="cuda")
        dq, dk, dv, dsink = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty(hq, device="cuda")
        out = torch.empty_like(q)
        fixed = Lib.problem(q, k, v, sinks=sinks, causal=True)
        lse_f = torch.empty((n, hq, s), device="cuda")
        flat = [x.view(n * s, *x.shape[2:]) for x in (q, k, v, dout, out, dq, dk, dv)]
        packed, cu = packed_problem(flat[0], flat[1], flat[2], sinks, [s] * n)
        lse_p = torch.empty((hq, n * s), device="cuda")
        layouts = (("fixed", fixed, lse_f, (dout, out, dq, dk, dv)), ("varlen", packed, lse_p, flat[3:]))
        times = {name: ([], []) for name, *_ in layouts}
        for r in range(ROUNDS):  # interleaved, the order reversed every other round (drift)
            for name, prob, lse, (g, o, a, b, c) in layouts[:: 1 if r % 2 == 0 else -1]:
                times[name][0].append(median_ms(lambda: lib.fwd(prob, o, lse)))
                times[name][1].append(median_ms(lambda: lib.bwd(prob, o, g, lse, a, b, c, dsink, False)))
        for name, (t_f, t_b) in times.items():
            print(f"{n}x{s:<9d} {name:8s} {statistics.median(t_f):8.3f} {statistics.median(t_b):8.3f}", flush=True)
        del cu


if __name__ == "__main__":
    main()
