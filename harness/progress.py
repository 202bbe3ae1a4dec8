"""Run progress for people: a rich bar on a terminal, a plain line every few seconds otherwise, or none.

Beside the request rate, both show J/request so far (`LiveEnergy`): the power samples the run
loop drains from the meter (about once a second) integrated since the measured window began, as
mean power over that window divided by the completion rate so far (`live_j_per_request`). It is a
display estimate: the stored J/request is energy.analysis's, from the counter and the attribution."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Protocol

from harness.records import PowerSample, RequestRecord


class Progress(Protocol):
    """Observer of a run's progress (rich bar on a terminal, plain lines otherwise)."""

    def begin(self, total: int, description: str) -> None: ...
    def advance(self, record: RequestRecord) -> None: ...
    def message(self, text: str) -> None: ...
    def end(self) -> None: ...


def live_j_per_request(mean_power_w: float | None, completed: int, elapsed_s: float,
                       idle_power_w: float | None = None) -> tuple[float | None, float | None]:
    """(J/request, above-idle J/request) so far: mean power over the measured window so far divided by
    the completion rate so far (completed / elapsed), i.e. the window's energy extrapolated to now over
    the requests completed by now. None where unknown (no power yet, nothing completed, no idle baseline)."""
    if mean_power_w is None or completed <= 0 or elapsed_s <= 0:
        return None, None
    seconds_per_request = elapsed_s / completed
    above = None if idle_power_w is None else (mean_power_w - idle_power_w) * seconds_per_request
    return mean_power_w * seconds_per_request, above


class EnergyTally:
    """Energy of the samples inside [start_ns, end_ns) (end open while None), added batch by batch:
    per GPU, the trapezoid between consecutive samples, clipped to the window. O(1) per sample."""

    def __init__(self, start_ns: int, end_ns: int | None = None):
        self.start_ns, self.end_ns = start_ns, end_ns
        self.last: dict[int, tuple[int, float]] = {}  # gpu -> its previous sample (t_ns, W)
        self.energy_j: dict[int, float] = {}
        self.until_ns: dict[int, int] = {}  # gpu -> how far its energy is integrated

    def add(self, samples: Iterable[PowerSample]) -> None:
        lo, hi = self.start_ns, self.end_ns
        for s in samples:
            prev = self.last.get(s.gpu)
            self.last[s.gpu] = (s.t_ns, s.power_w)
            if prev is None or s.t_ns <= prev[0]:
                continue
            t0, p0 = prev
            a, b = max(t0, lo), s.t_ns if hi is None else min(s.t_ns, hi)
            if b <= a:
                continue
            slope = (s.power_w - p0) / (s.t_ns - t0)
            pa, pb = p0 + slope * (a - t0), p0 + slope * (b - t0)
            self.energy_j[s.gpu] = self.energy_j.get(s.gpu, 0.0) + (pa + pb) / 2 * (b - a) / 1e9
            self.until_ns[s.gpu] = b

    def mean_power_w(self) -> float | None:
        """Summed over GPUs: each GPU's energy over the span its samples covered so far."""
        spans = {g: (t - self.start_ns) / 1e9 for g, t in self.until_ns.items()}
        if not spans or min(spans.values()) <= 0:
            return None
        return sum(self.energy_j[g] / spans[g] for g in spans)


class LiveEnergy:
    """The run loop feeds it every batch of power samples it drains, and marks the idle window and
    the start of the measured window; the progress observers read `per_request`."""

    def __init__(self):
        self.idle: EnergyTally | None = None
        self.run: EnergyTally | None = None
        self.run_start_ns: int | None = None

    def idle_window(self, start_ns: int, end_ns: int) -> None:
        self.idle = EnergyTally(start_ns, end_ns)

    def begin_run(self, start_ns: int) -> None:
        self.run, self.run_start_ns = EnergyTally(start_ns), start_ns

    def add(self, samples: list[PowerSample]) -> None:
        for tally in (self.idle, self.run):
            if tally is not None and samples:
                tally.add(samples)

    def per_request(self, completed: int, now_ns: int | None = None) -> tuple[float | None, float | None]:
        if self.run is None:
            return None, None
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        idle_w = self.idle.mean_power_w() if self.idle is not None else None
        return live_j_per_request(self.run.mean_power_w(), completed, (now_ns - self.run_start_ns) / 1e9, idle_w)


def energy_text(live: LiveEnergy | None, completed: int) -> str:
    """', 12.3 J/request (8.1 above idle)', or '' while nothing is known."""
    if live is None:
        return ""
    total, above = live.per_request(completed)
    if total is None:
        return ""
    return f", {total:.3g} J/request" + ("" if above is None else f" ({above:.3g} above idle)")


class PlainProgress:
    """Off a terminal (logs, CI): one line every `every_s` seconds, not one per request."""

    def __init__(self, stream=None, every_s: float = 5.0):
        self.stream, self.total, self.done, self.failed, self.every_s = stream or sys.stderr, 0, 0, 0, every_s
        self.started = self.last = 0.0
        self.live: LiveEnergy | None = None

    def watch(self, live: LiveEnergy) -> None:
        """Show J/request so far from this run's power samples."""
        self.live = live

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
            energy = energy_text(self.live, self.done)
            print(f"[{self.done}/{self.total}] {rate:.1f} req/s, {self.failed} failed{energy}", file=self.stream,
                  flush=True)

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
                            TextColumn("{task.fields[energy]}"), TimeRemainingColumn(), console=self.console)
        self.task = None
        self.failed = 0
        self.live: LiveEnergy | None = None

    def watch(self, live: LiveEnergy) -> None:
        self.live = live

    def begin(self, total: int, description: str) -> None:
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, failed=0, rate=0.0, energy="")
        self.started, self.done = time.monotonic(), 0

    def advance(self, record: RequestRecord) -> None:
        self.failed += not record.ok
        self.done += 1
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, failed=self.failed, rate=rate,
                        energy=energy_text(self.live, self.done).removeprefix(", "))

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def end(self) -> None:
        self.bar.stop()


def for_terminal(quiet: bool = False) -> Progress:
    if quiet:
        return QuietProgress()
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
