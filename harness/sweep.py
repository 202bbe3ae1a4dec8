"""A load sweep (`bench run --concurrency 1,4,16,64`, or a list of request rates): the levels back to
back against ONE server start, each level its own run folder, then a table of the levels.

Every level re-sends the same suite, so before each level the server's prefix, multimodal and encoder
caches are reset (harness.protocol) and the level's own warm-up runs at its concurrency: each level
measures first-seen prompts on a warm server, as `benchmarks/gpu/measure.py` does on the GPU. A launched
variant is started once, here, and each level attaches to it (its manifest records the variant).

The sweep ends with `RUN_ID-sweep/`: `sweep.json` (the levels and their run folders) and the sweep
report (`sweep.md`, `sweep.html`: harness.report.sweep_report, through finalize.report_sweep), rebuilt
by `bench report RUN_ID-sweep`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from harness.finalize import open_run, report_sweep
from harness.load import LoadSpec, level_name
from harness.loop import RunSpec
from harness.progress import Progress
from harness.protocol import CacheReset, reset_caches
from harness.report.sweep_report import SweepLevel, write_index
from harness.runner import execute, resolve_model_path
from harness.server import LaunchedServer


@dataclass(frozen=True)
class Level:
    name: str
    run_dir: Path
    cache_reset: CacheReset | None  # None before the first level (the server has served nothing yet)
    requests_per_s: float | None
    ttft_p50_s: float | None
    e2e_p50_s: float | None
    e2e_p99_s: float | None
    j_per_request: float | None

    @property
    def caches(self) -> str:
        """What the server's caches were before this level."""
        if self.cache_reset is None:
            return "fresh server"
        return "reset" if self.cache_reset.complete else f"NOT reset ({self.cache_reset.describe()})"


def sweep_folder(spec: RunSpec) -> Path:
    return spec.settings.results_dir / f"{spec.settings.run_id}-sweep"


def run_sweep(spec: RunSpec, levels: list[LoadSpec], progress: Progress) -> list[Level]:
    """Run every level; returns one row per level, in order."""
    with contextlib.ExitStack() as stack:
        if spec.base_url is None:  # launch once; every level attaches
            folder = spec.settings.results_dir / f"{spec.settings.run_id}-server"
            folder.mkdir(parents=True, exist_ok=True)
            model_path, dummy = resolve_model_path(spec.variant, spec.dummy_weights, progress)
            progress.message(f"starting vLLM for variant '{spec.variant.name}' once for the whole sweep "
                             f"(log: {folder / 'server.log'})")
            server = stack.enter_context(LaunchedServer(spec.variant, model_path, folder, load_format_dummy=dummy))
            spec = replace(spec, base_url=server.base_url, model=server.model)
        rows = []
        for n, load in enumerate(levels):
            reset = reset_caches(spec.base_url, spec.api_key) if n else None
            if reset is not None:
                progress.message(f"level {level_name(load)}: caches reset ({reset.describe()})")
            settings = replace(spec.settings, concurrency=load.concurrency, request_rate=load.request_rate,
                               run_id=f"{spec.settings.run_id}-{level_name(load)}")
            run_dir = execute(replace(spec, settings=settings), progress)
            summary = open_run(run_dir).summary
            lat, energy = summary.latency, summary.energy
            rows.append(Level(level_name(load), run_dir, reset, lat.requests_per_s, lat.ttft_s.p50, lat.e2e_s.p50,
                              lat.e2e_s.p99, energy.j_per_request_mean if energy.available else None))
            # The index grows level by level: a sweep stopped midway still reports the levels it finished.
            write_index(sweep_folder(spec), [SweepLevel(r.name, r.run_dir, r.caches) for r in rows])
    report_sweep(sweep_folder(spec))
    return rows


def sweep_lines(rows: list[Level]) -> list[str]:
    def num(value, width: int, digits: int) -> str:
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    lines = ["level      req/s   ttft p50   e2e p50   e2e p99   J/request  caches before the level"]
    for r in rows:
        lines.append(f"{r.name:<8} {num(r.requests_per_s, 7, 2)} {num(r.ttft_p50_s, 10, 3)} "
                     f"{num(r.e2e_p50_s, 9, 3)} {num(r.e2e_p99_s, 9, 3)} {num(r.j_per_request, 11, 2)}  {r.caches}")
    return lines
