"""One shape's forward and backward, a few calls each, for a profiler (ncu / nsys) to attach to:
    python3 profile_one.py LIB NAME   (NAME: window128, gptoss16k, gptoss4k, llama8k; or
    packedNxS / batchNxS: N gptoss documents of S tokens, packed or as a fixed-length batch; or
    docsT:LO-HI[+L]: packed gptoss documents of LO..HI tokens, T in all [one of them L])
    --times: then each kernel's mean GPU time over 5 forward + backward calls (torch profiler)
    --det: the deterministic backward
Run from tests/cuda, like check_cuda.py."""
import sys

import torch

from check_cuda import doc_lengths, kernel_breakdown, packed_problem
from sinkattn_ctypes import Lib

SHAPES = {  # seq, Hq, Hkv, D, sinks, window left (-1: full causal)
    "window128": (16384, 64, 8, 64, True, 127),
    "gptoss16k": (16384, 64, 8, 64, True, -1),
    "gptoss4k": (4096, 64, 8, 64, True, -1),
    "llama8k": (8192, 32, 8, 128, False, -1),
}


def main():
    lib = Lib(sys.argv[1])
    name = sys.argv[2]
    r = lambda *shape: torch.randn(shape, device="cuda").to(torch.bfloat16)
    if name.startswith(("packed", "batch", "docs")):
        if name.startswith("docs"):
            t, spec = name[4:].split(":")
            span, _, long = spec.partition("+")
            lo, hi = map(int, span.split("-"))
            lens = doc_lengths(int(t), lo, hi, long=int(long or 0))
            n, s = 1, int(t)
        else:
            n, s = map(int, name.lstrip("packedbatch").split("x"))
            lens = [s] * n
        hq, hkv, d, sink = 64, 8, 64, True
        sinks = torch.randn(hq, device="cuda")
        q, k, v, dout = r(n, s, hq, d), r(n, s, hkv, d), r(n, s, hkv, d), r(n, s, hq, d)
        if name.startswith(("packed", "docs")):
            q, k, v, dout = (x.view(n * s, *x.shape[2:]) for x in (q, k, v, dout))
            prob, cu = packed_problem(q, k, v, sinks, lens)  # cu kept alive: prob holds its address
            lse = torch.empty((hq, n * s), device="cuda")
        else:
            prob = Lib.problem(q, k, v, sinks=sinks, causal=True)
            lse = torch.empty((n, hq, s), device="cuda")
        out = torch.empty_like(q)
    else:
        s, hq, hkv, d, sink, left = SHAPES[name]
        q, k, v, dout = r(1, s, hq, d), r(1, s, hkv, d), r(1, s, hkv, d), r(1, s, hq, d)
        sinks = torch.randn(hq, device="cuda") if sink else None
        prob = Lib.problem(q, k, v, sinks=sinks, causal=True, left=left)
        out, lse = torch.empty_like(q), torch.empty((1, hq, s), device="cuda")
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dsink = torch.empty(hq, device="cuda") if sink else None

    def call():
        lib.fwd(prob, out, lse)
        lib.bwd(prob, out, dout, lse, dq, dk, dv, dsink, "--det" in sys.argv)

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    if "--times" in sys.argv:
        kernel_breakdown(f"{name} (5 x forward + backward)", [call] * 5)


if __name__ == "__main__":
    main()
