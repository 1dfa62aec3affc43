"""Timing helpers shared by the benchmark scripts (medians; interleaved round robin)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    return interleaved({"fn": fn}, repeats, warmup)["fn"]


def interleaved(fns: dict, repeats: int, warmup: int = 1, sync=None) -> dict:
    """Median seconds of each function, timed in alternation (round robin) so that the
    machine's drift hits all of them alike. ``sync``: waits for an accelerator's queued work
    (e.g. ``torch.cuda.synchronize``), called before and after each timed call."""
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}
