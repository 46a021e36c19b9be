"""Where the per-call host time of sinkattn.attention goes on CUDA tensors (no grad, planned call):
each step of ops.fwd_impl's plan path timed alone, thread CPU clock, median of 7 x 5000 calls."""
import statistics
import time

import torch

import sinkattn
from sinkattn import _lib, ops


def t(fn, n=5000):
    fn()
    runs = []
    for _ in range(7):
        a = time.thread_time_ns()
        for _ in range(n):
            fn()
        runs.append((time.thread_time_ns() - a) / n / 1000)
    torch.cuda.synchronize()
    return statistics.median(runs)


dev = "cuda"
q = torch.randn(1, 1, 2, 64, device=dev, dtype=torch.bfloat16)
k = torch.randn(1, 16, 1, 64, device=dev, dtype=torch.bfloat16)
v = torch.randn(1, 16, 1, 64, device=dev, dtype=torch.bfloat16)
sinks = torch.randn(2, device=dev)
with torch.no_grad():
    sinkattn.attention(q, k, v, sinks)
    sinkattn.attention(q, k, v)
    key = list(ops._fwd_plans)[-1]  # the plan of the call without sinks
    plan = ops._fwd_plans[key]
    w = ops._fwd_words(plan.words)
    out_like = plan.likes[0]
    rows = {
        "attention()": lambda: sinkattn.attention(q, k, v),
        "attention(sinks)": lambda: sinkattn.attention(q, k, v, sinks),
        "resolve": lambda: ops.resolve(q, None, True, None, None, False),
        "eager_ok": lambda: ops._eager_ok(q, k, v, None, None, None),
        "is_grad_enabled+requires_grad": lambda: torch.is_grad_enabled() and q.requires_grad,
        "fwd_impl": lambda: ops.fwd_impl(q, k, v, None, None, None, -1, -1, 0.125, -1, 0, True,
                                         False, want_lse=False),
        "problem_key": lambda: ops._problem_key(q, k, v, None, None, None),
        "q.device": lambda: q.device,
        "q.get_device()": lambda: q.get_device(),
        "q.shape, q.stride()": lambda: (q.shape, q.stride()),
        "dict get": lambda: ops._fwd_plans.get(key),
        "data_ptr x3": lambda: (q.data_ptr(), k.data_ptr(), v.data_ptr()),
        "empty_like(out_like)": lambda: torch.empty_like(out_like),
        "fwd_outputs": lambda: ops._fwd_outputs(*plan.likes, False, False),
        "words copy": lambda: ops._fwd_words(plan.words),
        "patch_problem": lambda: ops._patch_problem(w, plan, (q.data_ptr(), k.data_ptr(),
                                                             v.data_ptr()), None, None, None, -1, -1),
        "raw stream": lambda: torch._C._cuda_getCurrentRawStream(0),
        "C fwd (launch)": lambda: _lib.fwd(ops._addressof(w)),
    }
    for name, fn in rows.items():
        print(f"{name:32s} {t(fn):7.2f} us")
