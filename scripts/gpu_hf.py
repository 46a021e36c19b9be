#!/usr/bin/env python3
"""GPU check of the transformers integration, in one run:

1. the training demo (`python -m sinkattn.demo`, GPU defaults), and
2. a GPT-OSS-20B-shaped block (hidden 2880, 64 query / 8 kv heads of dim 64, learned sinks,
   sliding window 128 on alternate layers, 32 experts top-4, bf16): one training step (forward +
   backward of the decoder stack; loss = mean square of the last hidden state; no optimizer),
   and the same for its attention alone (a sliding and a full attention module: projections,
   RoPE and kernel; the MoE, which does not depend on the attention, dominates the block at
   this size), at 8k and 32k tokens, timed for sinkattn, transformers' flex_attention path
   (sinks applied through its LSE correction) and eager, with peak memory. Prints a table;
   writes $OUT/gpu_hf.json (OUT defaults to ./gpu_hf_out).

    SINKATTN_LIBRARY=... PYTHONPATH=python python scripts/gpu_hf.py [--layers 2] [--seqs 8192 32768]
        [--impls sinkattn flex_attention] [--skip-demo] [--profile]

Eager materialises (64, S, S) scores per layer: at 32k it cannot fit and is reported as OOM.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

IMPLS = ("sinkattn", "flex_attention", "eager")


def timed(step, iters: int) -> dict:
    """Median CUDA-event time (ms) of `step` after two warm-ups, and its peak memory (GiB);
    an error (OOM above all) is reported instead of raised, so one peer cannot hide the others."""
    try:
        for _ in range(2):  # warm-up (flex_attention compiles here)
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return dict(ms=statistics.median(times), peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    except torch.OutOfMemoryError:
        return dict(ms=None, peak_gib=None, error="OOM")
    except Exception as e:
        return dict(ms=None, peak_gib=None, error=f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")


def build_steps(impl: str, config, seq: int, device: str = "cuda"):
    """Two training steps to time: the decoder stack (`block`), and its attention alone: the
    attention modules of a sliding and a full layer (projections, RoPE, kernel) on a random
    hidden state (`attention`)."""
    from transformers import AutoModel
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    import sinkattn.hf  # noqa: F401  (registers attn_implementation="sinkattn")

    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: on the CPU it takes minutes at these widths
        model = AutoModel.from_config(config, attn_implementation=impl, dtype=torch.bfloat16).train()
    ids = torch.randint(0, config.vocab_size, (1, seq), device=device)

    def block_step():
        model(input_ids=ids).last_hidden_state.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    hidden = torch.randn(1, seq, config.hidden_size, device=device, dtype=torch.bfloat16, requires_grad=True)
    position_ids = torch.arange(seq, device=device)[None]
    kw = dict(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None,
              position_ids=position_ids)
    masks = {"full_attention": create_causal_mask(**kw), "sliding_attention": create_sliding_window_causal_mask(**kw)}

    def attention_step():
        rope = model.rotary_emb(hidden, position_ids)
        loss = sum(model.layers[i].self_attn(hidden, rope, masks[t])[0].float().pow(2).mean()
                   for i, t in enumerate(config.layer_types[:2]))
        loss.backward()
        model.zero_grad(set_to_none=True)
        hidden.grad = None

    return dict(block=block_step, attention=attention_step)


def profile(step, label: str, out: Path, rows: int = 18) -> None:
    """The GPU kernels of one `step` (torch profiler), largest GPU time first: where a step's
    time goes besides the attention kernels themselves (projections, copies, casts)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)
    (out / f"profile_{label}.txt").write_text(table)
    print(f"[gpu_hf] profile {label}\n{table}", file=sys.stderr, flush=True)


def measure(impl: str, layers: int, seq: int, iters: int, profile_dir: Path | None = None) -> dict:
    from sinkattn.hf.configs import gpt_oss_config

    # A fresh compile per length: after a first length torch.compile recompiles the next one
    # with dynamic sizes: flex_attention at 32k timed 161 ms after 8k, 126 ms alone (PERFORMANCE.md).
    torch.compiler.reset()
    steps = build_steps(impl, gpt_oss_config(layers=layers), seq)  # gpt-oss-20b widths
    result = {part: timed(step, iters) for part, step in steps.items()}
    if profile_dir is not None and result["attention"]["ms"] is not None:
        profile(steps["attention"], f"{impl}_{seq}", profile_dir)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2, help="decoder layers in the block (2-4)")
    p.add_argument("--seqs", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--demo-steps", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="print the GPU kernels of one attention step")
    args = p.parse_args()
    out = Path(os.environ.get("OUT", "gpu_hf_out"))
    out.mkdir(parents=True, exist_ok=True)
    assert torch.cuda.is_available(), "needs a GPU"
    gpu = torch.cuda.get_device_name()
    report = dict(gpu=gpu, torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))

    if not args.skip_demo:
        from sinkattn import demo

        demo_args = ["--device", "cuda", "--out", str(out / "demo")]
        if args.demo_steps:
            demo_args += ["--steps", str(args.demo_steps)]
        summary = demo.main(demo_args)
        report["demo"] = {k: v for k, v in summary.items() if not k.endswith(("_losses", "_speeds"))}

    rows = []
    for seq in args.seqs:
        for impl in args.impls:
            r = measure(impl, args.layers, seq, args.iters, out if args.profile else None)
            torch.cuda.empty_cache()  # the model went with measure's frame; give its memory back
            for part in ("block", "attention"):
                rows.append(dict(part=part, impl=impl, seq=seq, layers=args.layers, **r[part]))
            print(f"[gpu_hf] {impl} seq {seq}: {r}", file=sys.stderr, flush=True)
    report["rows"] = rows
    (out / "gpu_hf.json").write_text(json.dumps(report, indent=1))

    print(f"\nGPT-OSS-20B-shaped, bf16, batch 1, forward + backward; {gpu}")
    print(f"block = {args.layers}-layer decoder stack; attention = one sliding + one full attention module")
    print(f"{'part':>9} {'seq':>6} {'impl':>15} {'ms':>9} {'peak GiB':>9} {'sinkattn speed-up':>18}")
    for part in ("block", "attention"):
        for seq in args.seqs:
            group = [r for r in rows if r["seq"] == seq and r["part"] == part]
            ours = next((r for r in group if r["impl"] == "sinkattn"), None)
            for r in group:
                ms = f"{r['ms']:.1f}" if r["ms"] else r.get("error", "-")[:9]
                peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] else "-"
                ratio = f"{r['ms'] / ours['ms']:.2f}x" if r["ms"] and ours and ours["ms"] and r is not ours else ""
                print(f"{part:>9} {seq:>6} {r['impl']:>15} {ms:>9} {peak:>9} {ratio:>18}")
    print(f"\nwritten: {out / 'gpu_hf.json'}" + ("" if args.skip_demo else f", {out / 'demo' / 'demo.png'}"))


if __name__ == "__main__":
    main()
