"""Progress lines for long loops that print nothing else for minutes: done/total, rate, time left.

    progress = Progress("epoch 0 (pseudo)", total=43, unit="steps")
    for step in ...:
        ...
        progress.update()      # prints at most every `every_s` seconds, and at the last item

A line reads `epoch 0 (pseudo): 12/43 steps, 0.35 steps/s, 1m 29s left`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def duration_text(seconds: float) -> str:
    """`45s`, `1m 29s`, `2h 05m`: seconds rounded to whole ones."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def progress_line(label: str, done: int, total: int, elapsed: float, unit: str = "steps") -> str:
    """`label: done/total unit, rate unit/s, time left` (the rate over `elapsed` seconds; the time
    left at that rate; `?` before anything is done)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    left = duration_text((total - done) / rate) if rate > 0 else "?"
    return f"{label}: {done}/{total} {unit}, {rate:.2f} {unit}/s, {left} left"


class Progress:
    """Counts items of a loop of `total` and prints a `progress_line` at most every `every_s`
    seconds and once at the last item (`out`: where lines go; `clock`: seconds)."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "steps",
        every_s: float = 30.0,
        out: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.out, self.clock = out, clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        """Count `n` more items; print when `every_s` passed since the last line, or at the end."""
        self.done += n
        now = self.clock()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            self.out(progress_line(self.label, self.done, self.total, now - self.start, self.unit))
