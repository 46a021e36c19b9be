"""Context-parallel throughput against one GPU: every mode, forward + backward.

    torchrun --standalone --nproc_per_node 2 -m sinkattn.cp.bench --csv cp_bench.csv
    torchrun --standalone --nproc_per_node 2 -m sinkattn.cp.bench --device cpu --tokens 512 \
        --shapes llama --reps 1 --warmup 1        # a smoke run on the CPU (gloo)

Per shape (gptoss: Hq 64, Hkv 8, D 64, sinks; llama: Hq 32, Hkv 8, D 128), every rank first
times sinkattn on the WHOLE sequence on its own GPU (the one-GPU baseline, causal and causal
window-128), then each mode on its shard of the sequence. Efficiency per GPU is
(one-GPU time / W) / CP time: 100% means W GPUs finish W times faster. A CP time is the slowest
rank's median; FLOPs count visible pairs only (fwd 4, bwd 10 flops per pair and head dim).
Each cell also reports the largest difference of the CP output from the one-GPU output
(bf16; a quick check that the mode computed the same thing, not the tolerance test, which is
tests/python/test_cp.py). --budget-s bounds the whole run: cells that would start after it are
skipped (every rank agrees, so nobody waits in a collective).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time

import torch
import torch.distributed as dist

import sinkattn
from sinkattn import cp

SHAPES = {  # name: (Hq, Hkv, D, sinks)
    "gptoss": (64, 8, 64, True),
    "llama": (32, 8, 128, False),
}
# name: (mode, layout, fused, window)
MODES = {
    "allgather-fused": ("allgather", "zigzag", True, None),
    "allgather-unfused": ("allgather", "zigzag", False, None),
    "allgather-contig": ("allgather", "contiguous", None, None),
    "ring": ("ring", "contiguous", None, None),
    "zigzag-ring": ("ring", "zigzag", None, None),
    "halo-w128": ("halo", "contiguous", None, 128),
    "ulysses": ("ulysses", "contiguous", None, None),
}


def _pairs(S: int, window) -> int:
    """Visible (query, key) pairs of a causal mask (with a window of `window` keys)."""
    if window is None:
        return S * (S + 1) // 2
    w = min(window, S)
    return w * (w + 1) // 2 + (S - w) * w


def _time(step, reps: int, warmup: int, device) -> float:
    """Median ms of step() on this rank (CUDA events; wall clock on the CPU); every rank runs the
    same number of steps, so the collectives inside pair up."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    dist.barrier()
    times = []
    for _ in range(reps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            sync()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _profile(step, title: str, device) -> None:
    """Rank 0's kernels and host ranges over 3 steps (torch.profiler), sorted by device time: where
    a mode's time goes beyond the attention kernels."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    if dist.get_rank() == 0:
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"\nprofile, {title} (3 steps, rank 0):\n" +
              prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60),
              flush=True)


def _slowest(ms: float, device) -> float:
    t = torch.tensor([ms], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _agree(flag: bool, device) -> bool:
    """Rank 0's decision on every rank."""
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def run(args, device) -> list:
    rank, world = dist.get_rank(), dist.get_world_size()
    start = time.perf_counter()
    S, rows = args.tokens, []
    for shape in args.shapes:
        hq, hkv, d, with_sinks = SHAPES[shape]
        g = torch.Generator(device=device).manual_seed(1234)  # the same inputs on every rank
        mk = lambda h: torch.randn(1, S, h, d, device=device, generator=g).to(  # noqa: E731
            torch.bfloat16)
        q, k, v, dout = mk(hq), mk(hkv), mk(hkv), mk(hq)
        sinks = None  # trained, as in gpt-oss: dsink is part of the backward
        if with_sinks:
            sinks = torch.randn(hq, device=device, generator=g).requires_grad_()

        def single(window):
            leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]

            def step():
                for t in leaves + [sinks]:
                    if t is not None:
                        t.grad = None
                out = sinkattn.attention(*leaves, sinks, causal=True, window=window)
                out.backward(dout)
            return step

        base, ref = {}, {}
        for window in (None, 128):
            step = single(window)
            base[window] = _slowest(_time(step, args.reps, args.warmup, device), device)
            with torch.no_grad():
                ref[window] = sinkattn.attention(q, k, v, sinks, causal=True, window=window)
        for name in args.modes:
            mode, layout, fused, window = MODES[name]
            if not _agree(time.perf_counter() - start < args.budget_s, device):
                rows.append(dict(shape=shape, mode=name, skipped="time budget"))
                continue
            sh = lambda t, layout=layout: cp.shard(t, layout).contiguous()  # noqa: E731
            leaves = [sh(t).requires_grad_() for t in (q, k, v)]
            dout_l = sh(dout)
            kw = dict(mode=mode, layout=layout, causal=True, window=window, check=False,
                      fused=fused)

            def step(leaves=leaves, kw=kw, dout_l=dout_l):
                for t in leaves + [sinks]:
                    if t is not None:
                        t.grad = None
                out = cp.attention(*leaves, sinks, **kw)
                out.backward(dout_l)

            ms = _slowest(_time(step, args.reps, args.warmup, device), device)
            if name in args.profile:
                _profile(step, f"{shape} {name}", device)
            with torch.no_grad():
                out = cp.attention(*leaves, sinks, **kw)
            err = (cp.unshard(out, layout).float() - ref[window].float()).abs().max()
            dist.all_reduce(err, op=dist.ReduceOp.MAX)
            flops = 14 * _pairs(S, window) * d * hq
            rows.append(dict(shape=shape, mode=name, window=window or "", tokens=S, world=world,
                             single_ms=round(base[window], 3), cp_ms=round(ms, 3),
                             efficiency=round(base[window] / world / ms, 4),
                             tflops_per_gpu=round(flops / world / ms * 1e-9, 1),
                             max_diff=float(f"{err.item():.3g}")))
            if rank == 0:
                print(rows[-1], flush=True)
    return rows


def torch_cp_rows(args, device) -> list:
    """PyTorch's own context parallelism as the peer (ANCHORS.md): ring attention over SDPA (cuDNN
    or flash backend), load-balanced, NO sinks, K/V repeated to every query head (no GQA), with
    the all-gather and the all-to-all rotation; its efficiency is against SDPA on one GPU with the
    same tensors. Opt-in (--torch-cp): the API is experimental."""
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel
    from torch.distributed.tensor.experimental._attention import set_rotate_method
    from torch.nn.attention import SDPBackend, sdpa_kernel

    world, S, rows = dist.get_world_size(), args.tokens, []
    mesh = init_device_mesh("cuda", (world,))
    for shape in args.shapes:
        hq, _, d, _ = SHAPES[shape]
        g = torch.Generator(device=device).manual_seed(4321)
        q, k, v, dout = (torch.randn(1, hq, S, d, device=device, generator=g).to(torch.bfloat16)
                         for _ in range(4))

        def train_step(q, k, v, dout):
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            return lambda: F.scaled_dot_product_attention(*leaves, is_causal=True).backward(dout)

        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]):
            base = _slowest(_time(train_step(q, k, v, dout), args.reps, args.warmup, device),
                            device)
            for rotate in ("allgather", "alltoall"):
                set_rotate_method(rotate)
                bufs = [t.clone() for t in (q, k, v, dout)]
                with context_parallel(mesh, buffers=bufs, buffer_seq_dims=[2, 2, 2, 2],
                                      no_restore_buffers=set(bufs)):
                    ms = _slowest(_time(train_step(*bufs), args.reps, args.warmup, device), device)
                flops = 14 * _pairs(S, None) * d * hq
                rows.append(dict(shape=shape, mode=f"torch-cp-{rotate}", window="", tokens=S,
                                 world=world, single_ms=round(base, 3), cp_ms=round(ms, 3),
                                 efficiency=round(base / world / ms, 4),
                                 tflops_per_gpu=round(flops / world / ms * 1e-9, 1),
                                 max_diff=float("nan")))
                if dist.get_rank() == 0:
                    print(rows[-1], flush=True)
    return rows


def table(rows) -> str:
    lines = [f"{'shape':8} {'mode':18} {'1-GPU ms':>9} {'CP ms':>8} {'eff/GPU':>8} "
             f"{'TFLOPs/GPU':>10} {'max diff':>9}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['shape']:8} {r['mode']:18} skipped ({r['skipped']})")
            continue
        lines.append(f"{r['shape']:8} {r['mode']:18} {r['single_ms']:9.2f} {r['cp_ms']:8.2f} "
                     f"{100 * r['efficiency']:7.1f}% {r['tflops_per_gpu']:10.1f} "
                     f"{r['max_diff']:9.3g}")
    by = {(r["shape"], r["mode"]): r for r in rows if "skipped" not in r}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        f, u = by.get((shape, "allgather-fused")), by.get((shape, "allgather-unfused"))
        if f and u:
            lines.append(f"{shape}: fused / unfused zigzag all-gather speed-up "
                         f"{u['cp_ms'] / f['cp_ms']:.2f}x")
    return "\n".join(lines)


def _device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=65536, help="global sequence length")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=150.0,
                    help="start no cell after this many seconds")
    ap.add_argument("--csv", default=None, help="write the rows here (rank 0)")
    ap.add_argument("--profile", nargs="*", default=[], choices=list(MODES),
                    help="also profile these modes (rank 0 prints a kernel table)")
    ap.add_argument("--torch-cp", action="store_true",
                    help="also time PyTorch's context_parallel (SDPA, no sinks) as the peer")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda: NCCL, one GPU per rank; cpu: gloo (a smoke test of the script)")
    args = ap.parse_args(argv)
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    try:
        rows = run(args, device)
        if args.torch_cp:
            if device.type != "cuda":
                rows.append(dict(shape="-", mode="torch-cp", skipped="CUDA only"))
            else:
                rows += torch_cp_rows(args, device)
        if dist.get_rank() == 0:
            if args.csv:
                keys = list(dict.fromkeys(k for r in rows for k in r))
                with open(args.csv, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=keys)
                    w.writeheader()
                    w.writerows(rows)
            print(f"\nCP benchmark: {args.tokens} tokens, world {dist.get_world_size()}, bf16, "
                  f"causal, fwd+bwd; {_device_name(device)}\n" + table(rows), flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
