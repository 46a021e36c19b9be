"""Host overhead of the Python layer per call, over the bare C call on the same tensors.

    python -m sinkattn.overhead [--device cpu|cuda] [--iters N]

For a tiny problem (so the kernel costs little) it times, per call (median of repeats):
  c_fwd     sinkattn_fwd through ctypes with params built once (the floor: kernel + one ctypes call)
  fwd       sinkattn.attention(...) under no_grad (eager fast path)
  fwd_grad  sinkattn.attention(...) on inputs that require grad (records autograd)
  fwd_op    torch.ops.sinkattn.fwd(...) directly (the dispatcher path torch.compile uses)
  c_bwd / fwd_bwd  the same for the backward: bare sinkattn_bwd, and attention + backward()
On CUDA every call is only enqueued; the loop measures the host time to issue N calls (short enough
that the launch queue never fills) and synchronises once outside the timed region.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch

from . import _lib, attention, ops


def _per_call_us(fn, iters: int, repeats: int, sync) -> float:
    for _ in range(max(iters // 10, 10)):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        times.append((time.perf_counter() - t0) / iters * 1e6)
        sync()
    return statistics.median(times)


def _workspace(params, size_fn, device):
    """Allocates the workspace the params need, once; returns it to keep it alive."""
    n = ctypes.c_size_t()
    assert size_fn(ctypes.addressof(params), ctypes.addressof(n)) == _lib.OK
    ws = torch.empty(n.value + 256, dtype=torch.uint8, device=device)
    params.workspace, params.workspace_size = (ws.data_ptr() + 255) & ~255, n.value
    return ws


def measure(device: str = "cpu", iters: int = 2000, repeats: int = 7, shape=(1, 1, 16, 2, 1, 64)):
    b, sq, sk, hq, hkv, d = shape
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    mk = lambda *s: torch.randn(*s, device=device, dtype=dtype)
    q, k, v = mk(b, sq, hq, d), mk(b, sk, hkv, d), mk(b, sk, hkv, d)
    sinks = torch.randn(hq, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    scale = d ** -0.5
    args = (q, k, v, sinks, None, None, -1, -1, scale, -1, 0, True, False)

    # The floor: params filled once, then only the ctypes call and the kernel.
    out, lse = ops.fwd_impl(*args)
    p = ops.fwd_params(q, k, v, sinks, None, None, -1, -1, scale, -1, 0, True, out, lse)
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

    res = {}
    res["c_fwd"] = _per_call_us(lambda: _lib.fwd(fwd_addr), iters, repeats, sync)
    with torch.no_grad():
        res["fwd"] = _per_call_us(lambda: attention(q, k, v, sinks), iters, repeats, sync)
        res["fwd_op"] = _per_call_us(lambda: torch.ops.sinkattn.fwd(*args), iters, repeats, sync)
    res["fwd_grad"] = _per_call_us(lambda: attention(qg, kg, vg, sg), iters, repeats, sync)
    res["c_bwd"] = _per_call_us(lambda: _lib.bwd(bwd_addr), iters, repeats, sync)
    res["fwd_bwd"] = _per_call_us(fwd_bwd, iters // 4, repeats, sync)
    del ws, wsb
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--iters", type=int, default=2000)
    a = ap.parse_args()
    r = measure(a.device, a.iters)
    print(f"device={a.device} torch={torch.__version__} shape (B,Sq,Sk,Hq,Hkv,D)=(1,1,16,2,1,64)")
    for key, us in r.items():
        print(f"  {key:9s} {us:8.2f} us/call")
    print(f"  overhead fwd (no grad)      {r['fwd'] - r['c_fwd']:6.2f} us over the bare C call")
    print(f"  overhead fwd (grad)         {r['fwd_grad'] - r['c_fwd']:6.2f} us")
    print(f"  overhead fwd via dispatcher {r['fwd_op'] - r['c_fwd']:6.2f} us")
    print(f"  overhead fwd+bwd            {r['fwd_bwd'] - r['c_fwd'] - r['c_bwd']:6.2f} us")


if __name__ == "__main__":
    main()
