"""Progress of a batch prediction: a live rich bar on a terminal (items, items/s, time left by the
bytes read), and one line of totals on stderr when stderr is not a terminal (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, *, total_bytes: int | None, label: str, quiet: bool = False, stream: TextIO | None = None,
                 items: int = 0, done_bytes: int = 0):
        self.stream = stream or sys.stderr
        self.quiet, self.label = quiet, label
        self.items, self.start_items = items, items  # a resumed run counts on from where it was
        self.started = time.perf_counter()
        self._bar: Any = None
        if not quiet and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[items]:,} items  {task.fields[rate]:,.0f} items/s"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(label, total=total_bytes, completed=done_bytes, items=items, rate=0.0)

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return (self.items - self.start_items) / elapsed if elapsed > 0 else 0.0

    def update(self, items: int, read_bytes: int) -> None:
        self.items += items
        if self._bar is not None:
            self._bar.update(self._task, completed=read_bytes, items=self.items, rate=self.rate())

    def close(self, *, chunks: int, resumed_from: int = 0) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.started
        more = f" (resumed after {resumed_from:,})" if resumed_from else ""
        self.stream.write(f"{self.label}: {self.items:,} items{more} in {chunks:,} chunks, {elapsed:.1f} s, "
                          f"{self.rate():,.1f} items/s\n")
        self.stream.flush()
