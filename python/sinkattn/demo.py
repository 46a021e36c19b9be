"""Train a small GPT-OSS-architecture model with sinkattn and with transformers' eager attention
on the same data from the same initial weights, and compare: per-step loss, tokens/s, peak
memory, the largest loss and gradient differences, and a PNG plot of both.

    python -m sinkattn.demo                       # GPU when present, else CPU (about a minute)
    python -m sinkattn.demo --steps 50 --seq 2048 --device cuda --out demo_out
    python -m sinkattn.demo --model /path/to/hf/model   # real weights and tokenizer

Each implementation trains in its own spawned process. Peak memory: on CUDA the allocator's
peak (torch.cuda.max_memory_allocated); on the CPU the activations autograd saves for backward.
The corpus is the source code of the installed transformers package (no download), byte-level
unless --model brings a tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import torch

IMPLEMENTATIONS = ("sinkattn", "eager")

# Default model and run sizes: (GPT-OSS config overrides, batch, seq, steps, learning rate).
SIZES = {
    "cpu": (dict(layers=2, hidden=128, heads=4, kv_heads=2, head_dim=32, window=32, experts=4,
                 experts_per_token=2, intermediate=128), 2, 128, 16, 1e-3),
    "cuda": (dict(layers=6, hidden=1024, heads=16, kv_heads=4, head_dim=64, window=128, experts=8,
                  experts_per_token=2, intermediate=1024), 2, 4096, 50, 3e-4),
}


def corpus_tokens(tokenizer=None, limit_bytes: int = 4 << 20) -> torch.Tensor:
    """The source of transformers' model files as one token stream (bytes, or `tokenizer` ids)."""
    import transformers

    root = Path(transformers.__file__).parent / "models"
    text, size = [], 0
    for path in sorted(root.glob("*/modeling_*.py")):
        chunk = path.read_text(encoding="utf-8", errors="replace")
        text.append(chunk)
        size += len(chunk)
        if size >= limit_bytes:
            break
    text = "\n".join(text)
    if tokenizer is None:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
    return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)


def batches(tokens: torch.Tensor, steps: int, batch: int, seq: int, seed: int = 0):
    """The same `steps` batches of (batch, seq) windows for every implementation."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seq, (steps, batch), generator=gen)
    return [torch.stack([tokens[s : s + seq] for s in row.tolist()]) for row in starts]


def build_model(args, vocab: int, device: str, dtype: torch.dtype, impl: str):
    from transformers import AutoModelForCausalLM

    import sinkattn.hf  # noqa: F401  (registers attn_implementation="sinkattn")
    from sinkattn.hf.configs import gpt_oss_config

    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation=impl).to(device)
    torch.manual_seed(args.seed)  # identical initial weights for every implementation
    config = gpt_oss_config(vocab=vocab, max_positions=max(4096, args.seq), **SIZES[device][0])
    model = AutoModelForCausalLM.from_config(config, attn_implementation=impl, dtype=dtype)
    return model.to(device)


class SavedActivations:
    """Bytes of the tensors autograd keeps for backward (parameters excluded), at their peak:
    the CPU memory measure (training memory is dominated by them; eager's S x S attention
    probabilities show up here). On CUDA the caching allocator's peak is used instead."""

    def __init__(self, model: torch.nn.Module):
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._live: dict[int, int] = {}
        self.peak = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self._params:
            self._live[storage.data_ptr()] = storage.nbytes()
        return t

    def hooks(self):
        self._live = {}
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def forward_done(self) -> None:
        self.peak = max(self.peak, sum(self._live.values()))


def train(impl: str, args, data: list[torch.Tensor], vocab: int, device: str, dtype: torch.dtype):
    """One implementation's run (in its own process). Returns losses, per-step tokens/s, peak
    memory and the step-0 gradients (on the CPU, fp32) for the comparison. On CUDA the forward
    runs under bf16 autocast over fp32 weights (mixed precision, as FSDP trainers do); weights
    from --model stay in bf16 there, since fp32 copies and optimizer state of a large model
    would not fit."""
    from tqdm import tqdm

    weights = dtype if args.model else torch.float32
    model = build_model(args, vocab, device, weights, impl).train()
    autocast = torch.autocast("cuda", dtype=dtype) if device == "cuda" else contextlib.nullcontext()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    saved = SavedActivations(model)
    losses, speeds, grads0 = [], [], None
    bar = tqdm(data, desc=f"{impl:>8}", unit="step", dynamic_ncols=True)
    for step, ids in enumerate(bar):
        ids = ids.to(device)
        start = time.perf_counter()
        with saved.hooks() if device == "cpu" else contextlib.nullcontext(), autocast:
            loss = model(input_ids=ids, labels=ids).loss
        saved.forward_done()
        loss.backward()
        if step == 0:
            grads0 = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        losses.append(loss.item())
        speeds.append(ids.numel() / elapsed)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", tok_s=f"{speeds[-1]:,.0f}")
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else saved.peak
    return dict(losses=losses, speeds=speeds, peak=peak, grads0=grads0)


def _child(conn, impl, args, data, vocab, device, dtype):
    # Plain bytes: torch's shared-memory tensor pickling would need this process to stay alive.
    buf = io.BytesIO()
    torch.save(train(impl, args, data, vocab, device, dtype), buf)
    conn.send_bytes(buf.getvalue())
    conn.close()


def run_isolated(impl, *a):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, impl, *a))
    proc.start()
    child.close()  # so that a crashed child ends the wait with EOFError instead of a hang
    try:
        result = torch.load(io.BytesIO(parent.recv_bytes()))
    except EOFError:
        result = None
    proc.join()
    if result is None or proc.exitcode != 0:
        raise RuntimeError(f"the {impl} run failed (exit code {proc.exitcode}); its traceback is above")
    return result


def compare(results: dict) -> dict:
    ours, ref = results["sinkattn"], results["eager"]
    loss_diff = max(abs(a - b) for a, b in zip(ours["losses"], ref["losses"]))
    first_diff = abs(ours["losses"][0] - ref["losses"][0])
    worst, grad_diff, grad_scale = "", 0.0, 0.0
    for name, g in ref["grads0"].items():
        diff = (ours["grads0"][name] - g).abs().max().item()
        if diff > grad_diff:
            worst, grad_diff = name, diff
        grad_scale = max(grad_scale, g.abs().max().item())
    return dict(step0_loss_diff=first_diff, max_loss_diff=loss_diff, max_grad_diff=grad_diff,
                max_grad_diff_param=worst, max_grad=grad_scale)


def steady(speeds: list[float]) -> float:
    """Median tokens/s without the first two (warm-up) steps."""
    tail = sorted(speeds[2:] or speeds)
    return tail[len(tail) // 2]


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_speed) = plt.subplots(1, 2, figsize=(11, 4))
    for impl, style in zip(IMPLEMENTATIONS, ("-", "--")):
        r = results[impl]
        ax_loss.plot(r["losses"], style, label=impl)
        ax_speed.plot(r["speeds"], style, label=f"{impl} (median {steady(r['speeds']):,.0f})")
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
    ax_speed.set(xlabel="step", ylabel="tokens / s", title="speed")
    for ax in (ax_loss, ax_speed):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sinkattn.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, help="training steps (default: 16 on CPU, 50 on GPU)")
    p.add_argument("--seq", type=int, help="sequence length (default: 128 on CPU, 4096 on GPU)")
    p.add_argument("--batch", type=int, help="sequences per step (default: 2)")
    p.add_argument("--model", help="a Hugging Face model directory to train instead of the built-in config")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    p.add_argument("--out", default="sinkattn_demo", help="output folder for demo.png and demo.json")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: 1e-3 on CPU, 3e-4 on GPU)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _, batch, seq, steps, lr = SIZES[device]
    args.batch, args.seq, args.steps, args.lr = args.batch or batch, args.seq or seq, args.steps or steps, args.lr or lr
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = None
    if args.model:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokens = corpus_tokens(tokenizer)
    vocab = len(tokenizer) if tokenizer is not None else 256
    data = batches(tokens, args.steps, args.batch, args.seq, args.seed)
    what = args.model or "GPT-OSS architecture (built-in config)"
    precision = "bf16 autocast, fp32 weights" if device == "cuda" else "fp32"
    print(f"[demo] {what}, {device} {precision}, {args.steps} steps of "
          f"{args.batch} x {args.seq} tokens; corpus {tokens.numel():,} tokens")

    results = {impl: run_isolated(impl, args, data, vocab, device, dtype) for impl in IMPLEMENTATIONS}
    diff = compare(results)
    summary = dict(
        device=device, dtype=str(dtype), steps=args.steps, batch=args.batch, seq=args.seq, model=what, **diff,
        **{f"{impl}_{key}": value for impl in IMPLEMENTATIONS for key, value in (
            ("final_loss", results[impl]["losses"][-1]), ("tokens_per_s", steady(results[impl]["speeds"])),
            ("peak_memory_bytes", results[impl]["peak"]), ("losses", results[impl]["losses"]),
            ("speeds", results[impl]["speeds"]))},
    )
    plot(results, out / "demo.png", f"{what}: {device}, {args.batch} x {args.seq} tokens per step")
    (out / "demo.json").write_text(json.dumps(summary, indent=1))

    mib = 1 << 20
    memory = "peak MiB" if device == "cuda" else "saved MiB"
    print(f"\n{'':>9} {'final loss':>11} {'tokens/s':>11} {memory:>10}")
    for impl in IMPLEMENTATIONS:
        print(f"{impl:>9} {summary[impl + '_final_loss']:>11.4f} {summary[impl + '_tokens_per_s']:>11,.0f} "
              f"{summary[impl + '_peak_memory_bytes'] / mib:>10,.1f}")
    speedup = summary["sinkattn_tokens_per_s"] / summary["eager_tokens_per_s"]
    print(f"speed-up {speedup:.2f}x; step-0 loss difference {diff['step0_loss_diff']:.3g}, largest over "
          f"{args.steps} steps {diff['max_loss_diff']:.3g}; largest step-0 gradient difference {diff['max_grad_diff']:.3g} ({diff['max_grad_diff_param']}, "
          f"largest gradient {diff['max_grad']:.3g})")
    print(f"plot: {out / 'demo.png'}  numbers: {out / 'demo.json'}")
    if not all(math.isfinite(x) for r in results.values() for x in r["losses"]):
        raise SystemExit("non-finite loss")
    return summary


if __name__ == "__main__":
    main()
