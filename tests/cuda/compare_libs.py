"""Side-by-side timings of several builds of the library in ONE process: every shape is timed on
every build in turn, round after round (each round all forwards, then all backwards, the builds'
order rotated by one each round), so clock drift and thermal state hit all builds alike. Before
timing, each build's forward output and backward gradients on that shape are compared with the
first build's (a broken variant is reported, not timed); the fp64 grid stays check_cuda.py's job.

usage: python3 compare_libs.py NAME=LIB.so NAME=LIB.so ... [--rounds=N] [--only=SUBSTR,...] [--det=1]
       [--time-all=1]   (time builds that disagree too: ablations that skip part of the work)
       [--fwd-only=1]   (time forwards alone: more rounds in the same time for forward changes)
       [--sdpa=1]       (also time torch SDPA on cuDNN, no sinks, in the same rotation, on the
                         fixed-length causal shapes: the #7 targets' ratio, interleaved)
The kernel path follows SINKATTN_CUDA_PATH as usual. Prints, per shape, forward and backward
TFLOP/s of each build (median over rounds; backward = the atomic-dq mode, or with --det=1 the
deterministic one) and the ratio to the first build; each shape's medians also as soon as it is
done (one line, "[shape] build fwd / bwd ms, ..."), for calls that may hit their time limit.
"""
import statistics
import sys

import torch

from check_cuda import BENCH_SHAPES, doc_lengths, median_ms, packed_problem, pairs, rand
from sinkattn_ctypes import Lib

# check_cuda.py's timed shapes, then packed documents of 256..8k tokens (its varlen benchmark),
# their 32k tokens as one sequence, ~1000 short documents (per-sequence costs), causal documents
# of 128..1024 tokens (many sequences' short tiles; the d 64 forward's 192-row kernel since the
# forty-ninth session, its 128-row one before), ~4000 tiny documents or ~150 of 64..256
# tokens beside one long one (the grids sized by the longest; the tiny ones also under a window
# of 128, the band kernels, and at d 128), causal documents of 16..129 (the band kernels since
# the fiftieth session), llama documents of up to 256 and gptoss ones of 130..512 (the narrow
# backward since then) and a d 128 window of 128 (the
# narrow-window backward's dq handoff; gptoss's window takes the band kernels): (name, seqlen,
# heads_q, heads_kv, head_dim, learned sinks, window left, packed documents' length range [+ the
# long one's] or False).
SHAPES = [shape + (False,) for shape in BENCH_SHAPES] + [
    ("gptoss varlen 32k", 32768, 64, 8, 64, True, -1, (256, 8192)),
    ("gptoss 32k causal", 32768, 64, 8, 64, True, -1, False),
    ("llama 32k causal", 32768, 32, 8, 128, False, -1, False),
    ("gptoss 1k docs w128", 32768, 64, 8, 64, True, 127, (16, 48)),
    ("gptoss short docs 32k", 32768, 64, 8, 64, True, -1, (128, 1024)),
    ("gptoss tiny docs + 16k", 32768, 64, 8, 64, True, -1, (2, 6, 16384)),
    ("gptoss docs 64..256 + 8k", 32768, 64, 8, 64, True, -1, (64, 256, 8192)),
    ("gptoss docs 16..129", 32768, 64, 8, 64, True, -1, (16, 129)),
    ("llama docs 16..256", 32768, 32, 8, 128, False, -1, (16, 256)),
    ("gptoss docs 130..512", 32768, 64, 8, 64, True, -1, (130, 512)),
    ("gptoss tiny docs + 16k w128", 32768, 64, 8, 64, True, 127, (2, 6, 16384)),
    ("llama tiny docs + 16k", 32768, 32, 8, 128, False, -1, (2, 6, 16384)),
    ("llama 16k window128", 16384, 32, 8, 128, True, 127, False)]
# Decode (one query per sequence against a k/v cache, causal, sinks; the packed-group forward):
# (name, batch, cache length). The "TF/s" columns count its visible pairs as for the others.
DECODE = [("gptoss decode B64 8k", 64, 8192), ("gptoss decode B16 8k", 16, 8192),
          ("gptoss decode B1 32k", 1, 32768)]


class Case:
    """Inputs and outputs of one shape, shared by every build."""

    def __init__(self, s, hq, hkv, d, sink, left, varlen, det=False, batch=1, sq=None):
        """s keys (and queries, unless sq = 1: one query per sequence, decode) per sequence; a
        fixed-length batch of `batch` sequences, or packed documents (varlen)."""
        self.det = det  # deterministic backward
        lens = doc_lengths(s, *varlen[:2], long=varlen[2] if len(varlen) > 2 else 0) if varlen else [s]
        lead = () if varlen else (batch,)
        sq = sq or s
        self.q, self.dout = rand(lead + (sq, hq, d), torch.bfloat16), rand(lead + (sq, hq, d), torch.bfloat16)
        self.k, self.v = rand(lead + (s, hkv, d), torch.bfloat16), rand(lead + (s, hkv, d), torch.bfloat16)
        self.sinks = torch.randn(hq, device="cuda") if sink else None
        if varlen:  # cu kept on self: the problem holds only its address
            self.prob, self.cu = packed_problem(self.q, self.k, self.v, self.sinks, lens, left)
        else:
            self.prob = Lib.problem(self.q, self.k, self.v, sinks=self.sinks, causal=True, left=left)
        self.out = torch.empty_like(self.q)
        self.lse = torch.empty((hq, s) if varlen else (batch, hq, sq), device="cuda")
        self.dq, self.dk, self.dv = torch.empty_like(self.q), torch.empty_like(self.k), torch.empty_like(self.v)
        self.dsink = torch.empty(hq, device="cuda") if sink else None
        visible = batch * s if sq == 1 else sum(pairs(n, left) for n in lens)  # decode: every key
        self.flops = 4.0 * hq * d * visible

    def fwd(self, lib):
        return lambda: lib.fwd(self.prob, self.out, self.lse)

    def bwd(self, lib):
        return lambda: lib.bwd(self.prob, self.out, self.dout, self.lse, self.dq, self.dk, self.dv, self.dsink, self.det)

    def results(self, lib):
        """{name: output} of one build on this case."""
        self.fwd(lib)()
        self.bwd(lib)()
        torch.cuda.synchronize()
        named = {"out": self.out, "lse": self.lse, "dq": self.dq, "dk": self.dk, "dv": self.dv,
                 "dsink": self.dsink}
        return {n: t.float().clone() for n, t in named.items() if t is not None}


class Sdpa:
    """torch SDPA on its cuDNN backend (no sinks: the #7 targets' peer) on a fixed-length causal
    case's tensors, timed like a build: the forward under no_grad, the backward as forward plus
    autograd.grad less the forward (as the benchmark suite derives a peer's backward)."""
    name = "sdpa-cudnn"

    def __init__(self, case):
        from torch.nn.attention import SDPBackend

        self.backend = SDPBackend.CUDNN_ATTENTION
        # (B, S, H, D) -> (B, H, S, D) views, as the suite's peer passes them
        self.q, self.k, self.v = (t.detach().transpose(1, 2).requires_grad_()
                                  for t in (case.q, case.k, case.v))
        self.dout = case.dout.transpose(1, 2)

    def _out(self):
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([self.backend]):
            return torch.nn.functional.scaled_dot_product_attention(
                self.q, self.k, self.v, is_causal=True, enable_gqa=True)

    def fwd(self):
        def call():
            with torch.no_grad():
                self._out()
        return call

    def fwd_bwd(self):
        return lambda: torch.autograd.grad(self._out(), (self.q, self.k, self.v), self.dout)


# How far two builds' outputs may differ, relative to the largest: bf16 rounding and atomics for
# the 16-bit outputs and dsink; lse (fp32, promised to fp32 accuracy) only summation order.
BOUND, LSE_BOUND = 2e-2, 1e-4


def mismatches(ref, got):
    """The outputs of `got` (Case.results of another build) outside their bounds around `ref`:
    non-finite values must sit at the same places, the finite ones within the relative bound."""
    bad = []
    for key, r in ref.items():
        g, bound = got[key], LSE_BOUND if key == "lse" else BOUND
        fin = torch.isfinite(r)
        if not torch.equal(fin, torch.isfinite(g)) or not torch.equal(g[~fin], r[~fin]):
            bad.append(f"{key} non-finite elsewhere")
            continue
        if fin.any():
            rel = ((g[fin] - r[fin]).abs().max() / r[fin].abs().max().clamp_min(1e-6)).item()
            if rel > bound:
                bad.append(f"{key} by {rel:.3g} (bound {bound:g})")
    return bad


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    rounds = int(opts.get("rounds", 3))
    det = opts.get("det", "0") == "1"
    time_all = opts.get("time-all", "0") == "1"
    fwd_only = opts.get("fwd-only", "0") == "1"
    with_sdpa = opts.get("sdpa", "0") == "1"
    only = [x for x in opts.get("only", "").split(",") if x]
    if len(args) < 2 or any("=" not in a for a in args):
        sys.exit("usage: compare_libs.py NAME=LIB.so ... [--rounds=N] [--only=a,b] [--det=1] "
                 "[--time-all=1] [--fwd-only=1]")
    builds = [(a.split("=", 1)[0], Lib(a.split("=", 1)[1])) for a in args]  # separate copies
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "| builds:", ", ".join(n for n, _ in builds), flush=True)
    rows = []
    cases = [(name, lambda shape=shape: Case(*shape, det=det)) for name, *shape in SHAPES]
    sdpa_shapes = {name for name, *_, left, varlen in SHAPES if left < 0 and not varlen}
    cases += [(name, lambda b=b, sk=sk: Case(sk, 64, 8, 64, True, -1, False, det=det, batch=b, sq=1))
              for name, b, sk in DECODE]
    for name, make in cases:
        if only and not any(o in name for o in only):
            continue
        case = make()
        ref = case.results(builds[0][1])
        ok = {}
        for bname, lib in builds[1:]:  # same inputs: agreement within BOUND / LSE_BOUND
            bad = mismatches(ref, case.results(lib))
            ok[bname] = not bad
            if bad:
                print(f"[MISMATCH] {name}: {bname} differs from {builds[0][0]}: " + ", ".join(bad) + " (relative)")
        sdpa = Sdpa(case) if with_sdpa and name in sdpa_shapes else None
        timed = builds + ([(Sdpa.name, sdpa)] if sdpa else [])
        times = {b: ([], []) for b, _ in timed}
        live = [(b, lib) for b, lib in timed if ok.get(b, True) or time_all]
        for r in range(rounds):
            # Every forward of the round, then every backward, each build in every position in
            # turn (rotated by one each round). With a build's forward and backward timed together
            # and the order reversed every other round, the first of two identical builds read
            # its gptoss 4k forward 6-7% below the second's (H200, two calls).
            order = live[r % len(live):] + live[:r % len(live)]
            for bname, lib in order:
                times[bname][0].append(median_ms(sdpa.fwd() if lib is sdpa else case.fwd(lib)))
            for bname, lib in ([] if fwd_only else order):
                if lib is sdpa:  # its forward + backward less this round's forward
                    times[bname][1].append(median_ms(sdpa.fwd_bwd()) - times[bname][0][-1])
                else:
                    times[bname][1].append(median_ms(case.bwd(lib)))
        for bname, _ in timed:
            f, b = times[bname]
            if f:
                tf = statistics.median(f)
                tb = statistics.median(b) if b else float("nan")
                rows.append((name, bname, tf, tb, case.flops / tf / 1e9, 2.5 * case.flops / tb / 1e9))
        # The shape's medians at once, so a call cut short by its time limit still reports them.
        print(f"[{name}] " + ", ".join(f"{r[1]} {r[2]:.3f} / {r[3]:.3f} ms" for r in rows if r[0] == name),
              flush=True)
        del case, sdpa
        torch.cuda.empty_cache()
    base = {r[0]: r for r in rows if r[1] == builds[0][0]}
    print(f"\n{'shape':24s} {'build':10s} {'fwd ms':>8s} {'bwd ms':>8s} {'fwd TF/s':>9s} {'bwd TF/s':>9s} {'fwd x':>6s} {'bwd x':>6s}")
    for name, bname, tf, tb, ff, fb in rows:
        b0 = base.get(name)
        rf, rb = (b0[2] / tf, b0[3] / tb) if b0 else (float("nan"),) * 2
        print(f"{name:24s} {bname:10s} {tf:8.3f} {tb:8.3f} {ff:9.1f} {fb:9.1f} {rf:6.3f} {rb:6.3f}")
    # Each build against SDPA cuDNN, from the medians above (the targets' ratio)
    peer = {r[0]: r for r in rows if r[1] == Sdpa.name}
    for name, bname, tf, tb, _, _ in rows:
        if name in peer and bname != Sdpa.name:
            print(f"{name:24s} {bname:10s} against SDPA cuDNN: fwd {peer[name][2] / tf:.3f}x, "
                  f"bwd {peer[name][3] / tb:.3f}x")


if __name__ == "__main__":
    main()
