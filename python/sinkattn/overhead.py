"""Host overhead of the Python layer per call, over the bare C call on the same tensors.

    python -m sinkattn.overhead [--device cpu|cuda] [--iters N] [--clock wall|thread]

For a tiny problem (so the kernel costs little) it times, per call (median of repeats):
  c_fwd          sinkattn_fwd through ctypes with params built once, lse not wanted (the floor:
                 kernel + one ctypes call)
  alloc_c_fwd    c_fwd plus allocating out the way a planned call does (torch's direct
                 allocator where ops.py can use it, else empty_like; on the CPU the kernel then
                 also writes fresh memory)
  fwd            sinkattn.attention(...) under no_grad (eager fast path)
  fwd_op         torch.ops.sinkattn.fwd(...) directly (the dispatcher path torch.compile uses)
  fwd_grad       sinkattn.attention(...) on inputs that require grad (records autograd)
  c_bwd, fwd_bwd the same for the backward: bare sinkattn_bwd, and attention + backward()
and what no sinkattn code can remove, the floors of the fwd_op, fwd_grad and fwd_bwd paths:
  empty_op       a torch.library custom op with fwd's schema and an empty body
  empty_function an autograd.Function with an empty forward, on inputs that require grad
  empty_fwd_bwd  the same and .backward() through an empty backward (gradients for q and sinks)
On CUDA every call is only enqueued; the loop measures the host time to issue N calls (short enough
that the launch queue never fills) and synchronises once outside the timed region.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from typing import Optional

import torch

from . import _lib, _plans, attention, ops


# wall: time.perf_counter. thread: CPU time of this thread (time.thread_time), which on a shared
# machine leaves out the time other processes hold the core; it counts only this thread's work, so
# it suits the CPU backend on problems too small for its worker threads, and host-side CUDA issue.
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def _per_call_us(fn, iters: int, repeats: int, sync, clock) -> float:
    for _ in range(max(iters // 10, 10)):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(iters):
            fn()
        times.append((clock() - t0) / iters * 1e6)
        sync()
    return statistics.median(times)


def _workspace(params, size_fn, device):
    """Allocates the workspace the params need, once; returns it to keep it alive."""
    n = ctypes.c_size_t()
    assert size_fn(ctypes.addressof(params), ctypes.addressof(n)) == _lib.OK
    ws = torch.empty(n.value + 256, dtype=torch.uint8, device=device)
    params.workspace, params.workspace_size = (ws.data_ptr() + 255) & ~255, n.value
    return ws


_EMPTY = {}


def _empties():
    """An empty custom op and autograd.Function with sinkattn::fwd's arguments (made once)."""
    if not _EMPTY:
        @torch.library.custom_op("sinkattn_overhead::empty", mutates_args=())
        def empty(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: Optional[torch.Tensor],
                  cu_seqlens_q: Optional[torch.Tensor], cu_seqlens_k: Optional[torch.Tensor],
                  max_seqlen_q: int, max_seqlen_k: int, scale: float, window_left: int,
                  window_right: int, causal: bool, deterministic: bool) -> None:
            pass

        class Empty(torch.autograd.Function):
            @staticmethod
            def forward(ctx, q, *args):
                return q.view_as(q)

            @staticmethod
            def backward(ctx, g):
                return (g, None, None, g[0, 0, :, 0]) + (None,) * 9
        _EMPTY.update(op=torch.ops.sinkattn_overhead.empty, function=Empty.apply)
    return _EMPTY["op"], _EMPTY["function"]


def measure(device: str = "cpu", iters: int = 2000, repeats: int = 7, shape=(1, 1, 16, 2, 1, 64),
            clock: str = "wall"):
    b, sq, sk, hq, hkv, d = shape
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    mk = lambda *s: torch.randn(*s, device=device, dtype=dtype)
    q, k, v = mk(b, sq, hq, d), mk(b, sk, hkv, d), mk(b, sk, hkv, d)
    sinks = torch.randn(hq, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    timer = CLOCKS[clock]
    scale = d ** -0.5
    args = (q, k, v, sinks, None, None, -1, -1, scale, -1, 0, True, False)

    # The floor: params filled once, then only the ctypes call and the kernel.
    out, lse = ops.fwd_impl(*args)
    # lse not wanted, as in `fwd` (a no-grad call that does not return it): the lower floor.
    p = ops.fwd_params(q, k, v, sinks, None, None, -1, -1, scale, -1, 0, True, out, None)
    ws = _workspace(p, _lib.fwd_workspace_size, q.device)
    fwd_addr = ctypes.addressof(p)
    dout = torch.randn_like(out)
    dq, dk, dv, dsink = ops.bwd_impl(dout, q, k, v, out, lse, sinks, None, None, -1, -1, scale, -1,
                                     0, True, False, True)
    pb = ops.bwd_params(dout, q, k, v, out, lse, sinks, None, None, -1, -1, scale, -1, 0, True, False,
                        dq, dk, dv, dsink)
    wsb = _workspace(pb, _lib.bwd_workspace_size, q.device)
    bwd_addr = ctypes.addressof(pb)

    qg, kg, vg, sg = (t.clone().requires_grad_() for t in (q, k, v, sinks))

    def fwd_bwd():
        attention(qg, kg, vg, sg).backward(dout)

    words = _lib.FwdWords.from_buffer(p)
    spec = (tuple(out.shape), out.stride(), out.dtype)
    empty = _plans._direct_allocator((spec,), (out,))
    alloc = (lambda: empty(*spec)) if empty is not None else (lambda: torch.empty_like(out))

    def alloc_c_fwd():  # the floor plus the one allocation no Python layer can avoid
        o = alloc()
        words[ops._WF_OUT] = o.data_ptr()
        _lib.fwd(fwd_addr)

    def per_call(fn, n=iters):
        return _per_call_us(fn, n, repeats, sync, timer)

    res = {}
    res["c_fwd"] = per_call(lambda: _lib.fwd(fwd_addr))
    res["alloc_c_fwd"] = per_call(alloc_c_fwd)
    with torch.no_grad():
        res["fwd"] = per_call(lambda: attention(q, k, v, sinks))
        res["fwd_op"] = per_call(lambda: torch.ops.sinkattn.fwd(*args))
    res["fwd_grad"] = per_call(lambda: attention(qg, kg, vg, sg))
    empty_op, empty_function = _empties()
    with torch.no_grad():
        res["empty_op"] = per_call(lambda: empty_op(*args))
    gargs = (qg, kg, vg, sg) + args[4:]
    res["empty_function"] = per_call(lambda: empty_function(*gargs))
    res["empty_fwd_bwd"] = per_call(lambda: empty_function(*gargs).backward(dout), iters // 4)
    res["c_bwd"] = per_call(lambda: _lib.bwd(bwd_addr))
    res["fwd_bwd"] = per_call(fwd_bwd, iters // 4)
    del ws, wsb
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--clock", default="wall", choices=sorted(CLOCKS))
    ap.add_argument("--shape", default="1,1,16,2,1,64",
                    help="B,Sq,Sk,Hq,Hkv,D (the default runs the packed-group forward on CUDA; "
                         "1,64,64,8,1,64 the Hopper one, which takes a workspace)")
    a = ap.parse_args()
    shape = tuple(int(x) for x in a.shape.split(","))
    if len(shape) != 6:
        ap.error("--shape: expected six integers B,Sq,Sk,Hq,Hkv,D")
    r = measure(a.device, a.iters, shape=shape, clock=a.clock)
    print(f"device={a.device} torch={torch.__version__} shape (B,Sq,Sk,Hq,Hkv,D)={shape} "
          f"clock={a.clock}")
    for key, us in r.items():
        print(f"  {key:14s} {us:8.2f} us/call")
    print(f"  overhead fwd (no grad)      {r['fwd'] - r['c_fwd']:6.2f} us over the bare C call")
    print(f"  overhead fwd (grad)         {r['fwd_grad'] - r['c_fwd']:6.2f} us")
    print(f"  overhead fwd via dispatcher {r['fwd_op'] - r['c_fwd']:6.2f} us")
    print(f"  overhead fwd+bwd            {r['fwd_bwd'] - r['c_fwd'] - r['c_bwd']:6.2f} us")


if __name__ == "__main__":
    main()
