"""Run progress for people: a rich bar on a terminal, a plain line every few seconds otherwise, or none."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from harness.records import RequestRecord


class Progress(Protocol):
    """Observer of a run's progress (rich bar on a terminal, plain lines otherwise)."""

    def begin(self, total: int, description: str) -> None: ...
    def advance(self, record: RequestRecord) -> None: ...
    def message(self, text: str) -> None: ...
    def end(self) -> None: ...


class PlainProgress:
    """Off a terminal (logs, CI): one line every `every_s` seconds, not one per request."""

    def __init__(self, stream=None, every_s: float = 5.0):
        self.stream, self.total, self.done, self.failed, self.every_s = stream or sys.stderr, 0, 0, 0, every_s
        self.started = self.last = 0.0

    def begin(self, total: int, description: str) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.started = self.last = time.monotonic()
        print(f"{description}: {total} request(s)", file=self.stream, flush=True)

    def advance(self, record: RequestRecord) -> None:
        self.done += 1
        self.failed += not record.ok
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / (now - self.started) if now > self.started else 0.0
            print(f"[{self.done}/{self.total}] {rate:.1f} req/s, {self.failed} failed", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def end(self) -> None:
        pass


class QuietProgress(PlainProgress):
    """--quiet: nothing while the run goes; warnings and errors still print."""

    def begin(self, total: int, description: str) -> None:
        self.total = total

    def advance(self, record: RequestRecord) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class RichProgress:
    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]:.1f} req/s"), TextColumn("failed {task.fields[failed]}"),
                            TimeRemainingColumn(), console=self.console)
        self.task = None
        self.failed = 0

    def begin(self, total: int, description: str) -> None:
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, failed=0, rate=0.0)
        self.started, self.done = time.monotonic(), 0

    def advance(self, record: RequestRecord) -> None:
        self.failed += not record.ok
        self.done += 1
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, failed=self.failed, rate=rate)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def end(self) -> None:
        self.bar.stop()


def for_terminal(quiet: bool = False) -> Progress:
    if quiet:
        return QuietProgress()
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
