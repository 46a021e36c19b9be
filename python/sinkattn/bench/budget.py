"""The run's time budget: one wall-clock end for everything (checks, compilation, timing, writing
the report). Cells are started only when their estimate fits (plan.py estimates); a watchdog
thread ends the process at the end with whatever was measured, in case a cell runs far past its
estimate (a compile that takes minutes), so that a run never overshoots the device's call limit.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Optional


def report_reserve(budget_s: float) -> float:
    """Seconds kept at the end for writing the CSV, markdown and plots (~5 s with matplotlib)."""
    return min(15.0, 0.1 * budget_s)


class Budget:
    """``end``: the clock time by which the run has finished, report included; ``reserve``: the
    seconds of it kept for the report. ``clock`` is injectable so tests can drive it."""

    def __init__(self, end: float, reserve: float, clock: Callable[[], float] = time.time):
        self.end = end
        self.reserve = reserve
        self.clock = clock

    @classmethod
    def starting_now(cls, budget_s: float, clock: Callable[[], float] = time.time) -> "Budget":
        return cls(clock() + budget_s, report_reserve(budget_s), clock)

    @property
    def cells_end(self) -> float:
        """When the last cell must be done (the watchdog's time)."""
        return self.end - self.reserve

    def left(self) -> float:
        """Seconds of cell time left (negative once over)."""
        return self.cells_end - self.clock()

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()

    def stop_now(self) -> None:
        """No more cells (e.g. out of restarts after lost CUDA contexts)."""
        self.end = self.clock() + self.reserve


class Watchdog:
    """Calls ``fire()`` once at clock time ``at`` unless cancelled first, then ``exit_fn`` with
    its result. ``fire`` writes the report from the rows so far and returns the exit status (None
    if the main thread has already written it); ``exit_fn`` defaults to ``os._exit`` (the main
    thread may be stuck in a CUDA call or a compiler and cannot be unwound)."""

    def __init__(self, at: float, fire: Callable[[], int],
                 exit_fn: Optional[Callable[[int], None]] = None,
                 clock: Callable[[], float] = time.time):
        self.at = at
        self._fire = fire
        self._exit = exit_fn or os._exit
        self._clock = clock
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._cancel.is_set():
            wait = self.at - self._clock()
            if wait <= 0:
                code = self._fire()
                if code is not None:  # None: the main thread finished first and exits itself
                    self._exit(code)
                return
            self._cancel.wait(min(wait, 1.0))
