"""Progress: a live bar on a terminal, a quiet line now and then in a log file.

A redirected log (a CI job, `nohup`, a compare's per-run log) gets no carriage-return redraws: one
line every `every` seconds with the same figures a bar shows (count, share, rate, the last
postfix), and a last line when the work ends, so a 4-minute training run writes a dozen lines, not
thousands.
"""
from __future__ import annotations

import sys
import time

LOG_EVERY = 30.0  # seconds between two lines in a log


class LogProgress:
    """tqdm's small interface (update, set_postfix, close, iteration) as periodic log lines."""

    def __init__(self, iterable=None, total=None, initial: int = 0, desc: str = "", unit: str = "it",
                 file=None, every: float = LOG_EVERY, clock=time.monotonic):
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.file, self.every, self.clock = file or sys.stderr, every, clock
        self.start = self.last = clock()
        self.first, self.postfix, self.closed = initial, "", False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every:
            self._line()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def _line(self) -> None:
        now = self.clock()
        self.last = now
        rate = (self.n - self.first) / max(now - self.start, 1e-9)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit}s{share}, {now - self.start:.0f} s, {rate:.3g} {self.unit}/s{post}",
              file=self.file, flush=True)


class _Silent(LogProgress):
    def _line(self) -> None:
        pass


def progress_bar(iterable=None, *, total=None, initial: int = 0, desc: str = "", unit: str = "it",
                 enabled: bool = True, file=None):
    """A tqdm bar when `file` (stderr) is a terminal, LogProgress lines otherwise, nothing when disabled."""
    file = file or sys.stderr
    if not enabled:
        return _Silent(iterable, total, initial, desc, unit, file)
    if hasattr(file, "isatty") and file.isatty():
        from tqdm import tqdm
        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=file)
    return LogProgress(iterable, total, initial, desc, unit, file)


def say(message: str, file=None) -> None:
    """A line that must not break a live bar (tqdm.write where a bar may be drawing)."""
    from tqdm import tqdm
    tqdm.write(message, file=file or sys.stderr)
