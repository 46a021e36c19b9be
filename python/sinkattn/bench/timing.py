"""Timing as the GPU method says: warm up (compilation, autotuning, handles stay out), then time
each call separately with CUDA events and take the median; rotate among input sets whose total
exceeds the L2 cache so repeated calls do not time the cache. On the CPU, the same loop with a
wall clock (each call is synchronous there).

On CUDA, where a call's host side (Python, torch's autograd engine, launches) takes over half
its GPU time, the timed calls are queued behind a GPU sleep long enough for the CPU to issue all
of them first, so each call's events bracket its GPU work alone, as in a training step where the
host runs ahead. Without it such a call is timed at the host's pace: on the lent H200's host a
forward+backward through ``torch.autograd.grad`` takes 0.6-0.9 ms of CPU (a bare
``autograd.grad`` alone 0.14-0.29 ms), so the gptoss 16k window-128 cell (0.525 ms of GPU work)
read 0.52-0.82 ms from run to run, flagged noisy, and 0.524-0.528 ms with spread 0.01 queued
(2026-12-04, a probe of this loop, three rounds each). Cells whose GPU work outlasts their host
side read the same either way (4k forward 0.286 / 0.287 ms). The host's cost per call is
measured on its own (sinkattn.overhead).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable, List, Tuple

import torch


@dataclasses.dataclass
class Timing:
    median_ms: float
    reps: int
    spread: float  # (p80 - p20) / median of the timed calls: run-to-run noise of this cell
    first_s: float = 0.0  # the first call, synchronised: compilation, autotuning, plan caches


@dataclasses.dataclass
class TimingConfig:
    warmup: int = 2           # untimed calls first (the first may compile)
    target_s: float = 0.5     # aim for this much timed work per cell
    min_reps: int = 5
    max_reps: int = 50
    cap_s: float = 20.0       # fewer than min_reps when a call is so slow they would exceed this


def input_sets_needed(set_bytes: int, device: torch.device, free_bytes: int) -> int:
    """Sets to rotate so that their total is >= 3x the last-level cache, within 30% of free
    memory (a set bigger than the cache needs no rotation)."""
    if device.type == "cuda":
        cache = torch.cuda.get_device_properties(device).L2_cache_size
    else:
        cache = 32 << 20  # a typical server L3 slice; small CPU shapes would otherwise sit in it
    want = max(1, math.ceil(3 * cache / max(set_bytes, 1)))
    fit = max(1, int(0.3 * free_bytes // max(set_bytes, 1)))
    return min(want, fit, 16)


_sleep_cycles_per_ms: dict = {}


def _gpu_sleep(ms: float, device: torch.device) -> None:
    """Queues about ms of GPU idle time on the current stream. torch.cuda._sleep spins for a
    number of cycles; the cycles per ms come from one timed sleep at whatever clock the GPU ran
    then (an idle H200 starts at 345 MHz against 1980 at boost), and _time_calls raises them
    whenever a sleep ended before the calls behind it were all issued."""
    if ms <= 0:
        return
    if device not in _sleep_cycles_per_ms:
        b, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        b.record()
        torch.cuda._sleep(10_000_000)
        e.record()
        torch.cuda.synchronize(device)
        _sleep_cycles_per_ms[device] = 10_000_000 / max(b.elapsed_time(e), 1e-3)
    torch.cuda._sleep(int(ms * _sleep_cycles_per_ms[device]))


def _time_calls(call: Callable[[int], None], start: int, n: int, device: torch.device,
                host_ms: float = 0.0) -> Tuple[List[float], float]:
    """Per-call times of call(start), ..., call(start + n - 1), and the host's time per call to
    issue them (up to the synchronisation). host_ms: that time as measured before; on CUDA the
    calls are queued behind a GPU sleep of 2x n of it (at most 1 s). If the sleep was over
    before the last call was issued (the clock ran faster than calibrated), the sleep's cycles
    per ms are doubled and the calls timed again (up to 4 times)."""
    if device.type == "cuda":
        for attempt in range(4):
            begin = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            end = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            _gpu_sleep(min(1000.0, 2.0 * n * host_ms), device)
            t0 = time.perf_counter()
            for i in range(n):
                begin[i].record()
                call(start + i)
                end[i].record()
            issued = (time.perf_counter() - t0) * 1e3 / n
            covered = host_ms <= 0 or not begin[0].query()  # still queued behind the sleep
            torch.cuda.synchronize(device)
            if covered or attempt == 3:
                return [b.elapsed_time(e) for b, e in zip(begin, end)], issued
            _sleep_cycles_per_ms[device] *= 2
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(start + i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out, statistics.mean(out)


def measure(call: Callable[[int], None], device: torch.device, cfg: TimingConfig) -> Timing:
    """Median time of ``call(i)`` (i picks the input set). One probe call sizes the repeat count.
    A first call slower than a tenth of the cap has compiled whatever it needed: the other
    warm-up calls are then skipped, as they would only spend the budget."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _d: None)
    t0 = time.perf_counter()
    call(0)
    sync(device)
    first_s = time.perf_counter() - t0
    if first_s < 0.1 * cfg.cap_s:
        for i in range(1, cfg.warmup):
            call(i)
        sync(device)
    probe, host_ms = _time_calls(call, cfg.warmup, 1, device)  # the GPU idle: host time alone
    per = max(probe[0], 1e-3)
    reps = int(min(cfg.max_reps, max(cfg.min_reps, cfg.target_s * 1e3 / per)))
    reps = max(1, min(reps, int(cfg.cap_s * 1e3 / per)))
    # Calls whose GPU work is well over their host time queue up on their own.
    lead = host_ms if host_ms > 0.5 * per else 0.0
    times = sorted(_time_calls(call, cfg.warmup + 1, reps, device, lead)[0])
    med = statistics.median(times)
    lo, hi = times[int(0.2 * (reps - 1))], times[math.ceil(0.8 * (reps - 1))]
    return Timing(med, reps, (hi - lo) / med if med > 0 else 0.0, first_s)


def peak_memory(call: Callable[[], None], device: torch.device) -> float:
    """Peak bytes one call allocates above what was live before it (CUDA; NaN on the CPU, where
    torch keeps no allocator statistics)."""
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - base)
