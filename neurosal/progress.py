"""Progress that reads well where it goes: a tqdm bar on a terminal, plain periodic lines in a
log file (a bar's carriage-return redraws would fill a log with thousands of partial lines)."""

from __future__ import annotations

import sys
import time
from typing import Optional

from tqdm import tqdm

__all__ = ["bar", "LineProgress"]


class LineProgress:
    """tqdm's interface (``update``, ``set_postfix``, ``close``, context manager), written as one
    whole line every ``every`` seconds and at the end."""

    def __init__(self, total: int, *, desc: str = "", unit: str = "it", initial: int = 0, every: float = 30.0,
                 file=None, disable: bool = False):
        self.total, self.desc, self.unit, self.n = int(total or 0), desc, unit, int(initial)
        self.every, self.file, self.disable = float(every), file or sys.stderr, disable
        self.start = self.last = time.monotonic()
        self.start_n = self.n
        self.postfix = ""

    def update(self, k: int = 1) -> None:
        self.n += int(k)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line()

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def _line(self, end: bool = False) -> None:
        if self.disable:
            return
        dt = time.monotonic() - self.start
        rate = (self.n - self.start_n) / dt if dt > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        left = ""
        if self.total and rate > 0 and not end:
            left = f", about {(self.total - self.n) / rate:.0f} s left"
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct} in {dt:.0f} s, {rate:.3g} {self.unit}/s"
              f"{left}{post}{' - done' if end else ''}", file=self.file, flush=True)

    def close(self) -> None:
        if not self.disable:
            self._line(end=True)
            self.disable = True

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False


def bar(total: int, *, desc: str = "", unit: str = "it", initial: int = 0, disable: bool = False,
        leave: bool = True, every: Optional[float] = None):
    """A tqdm bar when stderr is a terminal; otherwise :class:`LineProgress` (one line every
    ``every`` seconds, default 30; inner bars that would not be left on screen print nothing)."""
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=disable, leave=leave)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, disable=disable or not leave,
                        every=30.0 if every is None else every)
