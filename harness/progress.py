"""Run progress for people: a rich bar on a terminal, one plain line per request otherwise."""

from __future__ import annotations

import sys
from typing import Protocol

from harness.records import RequestRecord


class Progress(Protocol):
    """Observer of a run's progress (rich bar on a terminal, plain lines otherwise)."""

    def begin(self, total: int, description: str) -> None: ...
    def advance(self, record: RequestRecord) -> None: ...
    def message(self, text: str) -> None: ...
    def end(self) -> None: ...


class PlainProgress:
    def __init__(self, stream=None):
        self.stream, self.total, self.done = stream or sys.stderr, 0, 0

    def begin(self, total: int, description: str) -> None:
        self.total, self.done = total, 0
        print(f"{description}: {total} request(s)", file=self.stream, flush=True)

    def advance(self, record: RequestRecord) -> None:
        self.done += 1
        detail = f"{record.e2e_s:.2f} s, {record.completion_tokens} tokens" if record.ok else record.status
        print(f"[{self.done}/{self.total}] {record.item_id} ({record.task}): {detail}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def end(self) -> None:
        pass


class RichProgress:
    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("failed {task.fields[failed]}"), TimeRemainingColumn(), console=self.console)
        self.task = None
        self.failed = 0

    def begin(self, total: int, description: str) -> None:
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, failed=0)

    def advance(self, record: RequestRecord) -> None:
        self.failed += not record.ok
        self.bar.update(self.task, advance=1, failed=self.failed)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def end(self) -> None:
        self.bar.stop()


def for_terminal() -> Progress:
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
