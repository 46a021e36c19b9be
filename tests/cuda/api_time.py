"""What a packed (varlen) call costs through the Python layer: sinkattn.varlen_attention's forward
and forward+backward, output allocation and every kernel included (compare_libs.py times the
library alone). One build a process (the package and library from PYTHONPATH and
SINKATTN_LIBRARY); to compare two, run it in alternating processes and compare the lines.

  usage: python3 api_time.py TAG [--reps N]
"""

from __future__ import annotations

import argparse

import torch

from check_cuda import doc_lengths, median_ms

import sinkattn

# (name, document lengths of q, of k): gptoss heads (64 / 8, d 64, sinks), causal
SHAPES = [
    ("varlen 32k (8 docs)", doc_lengths(32768, 256, 8192), None),
    ("short docs 32k", doc_lengths(32768, 128, 1024), None),
    ("decode B64 8k", [1] * 64, [8192] * 64),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tag")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    for name, lens_q, lens_k in SHAPES:
        lens_k = lens_k or lens_q
        cu_q, cu_k = (torch.tensor([0] + lens, device="cuda").cumsum(0).to(torch.int32)
                      for lens in (lens_q, lens_k))
        tq, tk = sum(lens_q), sum(lens_k)
        q = torch.randn(tq, 64, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(tk, 8, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(2))
        s = torch.randn(64, device="cuda", requires_grad=True)
        dout = torch.randn_like(q)
        call = lambda: sinkattn.varlen_attention(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), s)

        def fwd():
            with torch.no_grad():
                call()

        def fwd_bwd():
            torch.autograd.grad(call(), (q, k, v, s), dout)

        f = median_ms(fwd, reps=args.reps)
        fb = median_ms(fwd_bwd, reps=args.reps)
        print(f"{args.tag:8s} {name:22s} fwd {f:8.4f} ms  f+b {fb:8.4f} ms", flush=True)


if __name__ == "__main__":
    main()
