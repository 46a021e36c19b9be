"""Train a GPT-OSS-shaped attention block with context parallelism (one GPU per process).

    torchrun --nproc_per_node 2 examples/cp/train_gptoss_block.py --seq 65536 --mode allgather \
        --layout zigzag                                   # NCCL, bf16, on 2 GPUs
    torchrun --nproc_per_node 2 examples/cp/train_gptoss_block.py --device cpu --seq 256 \
        --hidden 256 --heads 8 --kv-heads 2 --steps 5     # gloo, fp32, on the CPU

The block is GPT-OSS's attention layer (RMSNorm, q/k/v projections with 64 query heads over 8 kv
heads of dim 64, RoPE, learned sinks, output projection, residual), stacked `--layers` times with
a sliding window on every other layer, as in gpt-oss. Each rank holds one shard of the sequence;
sliding-window layers can use their own mode (--window-mode halo). The task is next-token
regression on a fixed random sequence, so the loss must fall. Parameters are replicated on every
rank, so their gradients are summed over the group after backward (sinks included: sinkattn.cp
returns each rank's partial dsink).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import sinkattn
from sinkattn import cp


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float = 150000.0) -> torch.Tensor:
    """Rotary embedding of x (B, S, H, D) at global positions pos (S,)."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = pos.float()[:, None] * inv[None]  # (S, D/2)
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    x1, x2 = x.float().chunk(2, -1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, hidden, heads, kv_heads, head_dim, window, args):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.window = heads, kv_heads, head_dim, window
        self.norm = nn.RMSNorm(hidden)
        self.q = nn.Linear(hidden, heads * head_dim)
        self.k = nn.Linear(hidden, kv_heads * head_dim)
        self.v = nn.Linear(hidden, kv_heads * head_dim)
        self.o = nn.Linear(heads * head_dim, hidden)
        self.sinks = nn.Parameter(torch.zeros(heads))
        self.mode = args.window_mode if (window and args.window_mode) else args.mode
        self.layout, self.group = args.layout, None
        self.single = False  # True: plain sinkattn.attention on the full sequence (--check)

    def forward(self, x, pos):
        b, s, _ = x.shape
        h = self.norm(x)
        q = rope(self.q(h).view(b, s, self.heads, self.head_dim), pos)
        k = rope(self.k(h).view(b, s, self.kv_heads, self.head_dim), pos)
        v = self.v(h).view(b, s, self.kv_heads, self.head_dim)
        if self.single:
            out = sinkattn.attention(q, k, v, self.sinks, causal=True, window=self.window)
        else:
            out = cp.attention(q, k, v, self.sinks, group=self.group, mode=self.mode,
                               layout=self.layout, causal=True, window=self.window)
        return x + self.o(out.reshape(b, s, -1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--seq", type=int, default=32768, help="global tokens (all ranks together)")
    p.add_argument("--hidden", type=int, default=2880)
    p.add_argument("--heads", type=int, default=64)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--window", type=int, default=128, help="sliding window of every other layer")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--mode", default="allgather", choices=list(cp.MODES))
    p.add_argument("--window-mode", default=None, choices=list(cp.MODES),
                   help="mode of the sliding-window layers (default: --mode)")
    p.add_argument("--layout", default="zigzag", choices=list(cp.LAYOUTS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--check", action="store_true",
                   help="first compare the CP loss with one device running the full sequence")
    args = p.parse_args()

    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32

    torch.manual_seed(0)  # same parameters and data on every rank
    layers = nn.ModuleList(
        Attention(args.hidden, args.heads, args.kv_heads, args.head_dim,
                  args.window if i % 2 == 0 else None, args) for i in range(args.layers))
    layers.to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(layers.parameters(), lr=args.lr)
    x = torch.randn(1, args.seq + 1, args.hidden, device=device, dtype=dtype)
    inputs, targets = x[:, :-1], x[:, 1:]
    # this rank's shard of the sequence, its global positions and targets
    shard = lambda t: cp.shard(t, args.layout, dim=1).contiguous()  # noqa: E731
    x_l, y_l = shard(inputs), shard(targets)
    pos_l = cp.shard(torch.arange(args.seq, device=device), args.layout, dim=0)

    def run(x_in, y, pos):
        h = x_in
        for layer in layers:
            h = layer(h, pos)
        # the mean over the GLOBAL sequence: each rank's sum divided by the global token count
        return F.mse_loss(h.float(), y.float(), reduction="sum") / (args.seq * args.hidden)

    if args.check:
        with torch.no_grad():
            for layer in layers:
                layer.single = True
            want = run(inputs, targets, torch.arange(args.seq, device=device))
            for layer in layers:
                layer.single = False
            got = run(x_l, y_l, pos_l)
            dist.all_reduce(got)
        if rank == 0:
            print(f"check: CP loss {got.item():.6f}, one device {want.item():.6f}, "
                  f"relative difference {abs(got.item() - want.item()) / want.item():.2e}")

    for step in range(args.steps):
        t0 = time.perf_counter()
        loss = run(x_l, y_l, pos_l)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for prm in layers.parameters():  # replicated parameters: sum the per-rank partials
            dist.all_reduce(prm.grad)
        opt.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        if cuda:
            torch.cuda.synchronize()
        if rank == 0:
            print(f"step {step:3d}  loss {total.item():.5f}  {time.perf_counter() - t0:.3f}s  "
                  f"({args.mode}/{args.layout}, {world} ranks, {args.seq // world} tokens each)",
                  flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
