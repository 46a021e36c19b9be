"""One shape's forward and backward, a few calls each, for a profiler (ncu / nsys) to attach to:
    python3 profile_one.py LIB NAME   (NAME: window128, gptoss16k, gptoss4k, llama8k)
Run from tests/cuda, like check_cuda.py."""
import sys

import torch

from sinkattn_ctypes import Lib

SHAPES = {  # seq, Hq, Hkv, D, sinks, window left (-1: full causal)
    "window128": (16384, 64, 8, 64, True, 127),
    "gptoss16k": (16384, 64, 8, 64, True, -1),
    "gptoss4k": (4096, 64, 8, 64, True, -1),
    "llama8k": (8192, 32, 8, 128, False, -1),
}


def main():
    lib = Lib(sys.argv[1])
    s, hq, hkv, d, sink, left = SHAPES[sys.argv[2]]
    r = lambda *shape: torch.randn(shape, device="cuda").to(torch.bfloat16)
    q, k, v, dout = r(1, s, hq, d), r(1, s, hkv, d), r(1, s, hkv, d), r(1, s, hq, d)
    sinks = torch.randn(hq, device="cuda") if sink else None
    prob = Lib.problem(q, k, v, sinks=sinks, causal=True, left=left)
    out, lse = torch.empty_like(q), torch.empty((1, hq, s), device="cuda")
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dsink = torch.empty(hq, device="cuda") if sink else None
    for _ in range(3):
        lib.fwd(prob, out, lse)
        lib.bwd(prob, out, dout, lse, dq, dk, dv, dsink, False)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
