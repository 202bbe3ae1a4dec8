"""`bench run`: the options as given, turned into one run, a sweep of load levels, a resumed run or
a competition replay, and carried out. Returns the lines the CLI prints."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from harness.competition import CompetitionSpec, competition_lines, run_competition
from harness.config import DEFAULT_VARIANT, RunSettings, Sampling, load_suite_spec, load_variant
from harness.credentials import check_base_url, read_api_key
from harness.energy.attribute import PhaseWeights
from harness.errors import ConfigError
from harness.finalize import open_run
from harness.history import row_from_run
from harness.load import parse_levels, sweep_specs
from harness.loop import RunSpec
from harness.progress import for_terminal
from harness.protocol import Protocol
from harness.records import EnergyMode
from harness.report.text import summary_lines
from harness.runner import execute, resume_spec
from harness.sweep import run_sweep, sweep_folder, sweep_lines

ENERGY_MODES = tuple(m.value for m in EnergyMode)
PROTOCOLS = tuple(p.value for p in Protocol)

# Options `--resume` takes again (the server may have moved); every other option of a resumed run
# is fixed by its manifest, so passing one is refused rather than silently ignored.
RESUME_OPTIONS = frozenset({"resume_dir", "base_url", "model", "api_key_file", "quiet"})


@dataclass(frozen=True)
class RunOptions:
    """`bench run`'s options as given (None: not given); validated by `run`."""

    variant: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_file: Path | None = None
    model_path: str | None = None
    dummy_weights: bool = False
    suite: str = "default"
    limit: int | None = None
    concurrency: str = "1"  # one level, or a comma-separated list (a sweep)
    warmup: int = 0
    samples: int = 1
    seed: int = 0
    results_dir: Path = Path("results")
    run_id: str | None = None
    resume_dir: Path | None = None
    energy: str = EnergyMode.AUTO.value
    power_trace: Path | None = None
    idle_s: float = 10.0
    idle_after_s: float | None = None
    protocol: str = Protocol.MEASURED.value
    sample_rate: float = 100.0
    prefill_weight: float = 1.0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    timeout_s: float | None = None
    max_retries: int = 2
    max_failure_share: float = 0.5
    request_rate: str | None = None  # one rate, or a comma-separated list (a sweep)
    burstiness: float = 1.0
    duration_s: float | None = None
    max_requests: int | None = None
    max_duration_s: float | None = None
    quiet: bool = False
    given: tuple[str, ...] = ()  # the options given on the command line (not left at their default)


def run(options: RunOptions) -> list[str]:
    o = options
    levels_c = parse_levels(o.concurrency, "--concurrency")
    if any(c != int(c) for c in levels_c):
        raise ConfigError(f"--concurrency must be whole numbers, not '{o.concurrency}'")
    levels_r = parse_levels(o.request_rate, "--request-rate") if o.request_rate is not None else ()
    api_key = read_api_key(o.api_key_file, os.environ)  # never from the command line (shell history)
    base_url = check_base_url(o.base_url) if o.base_url else None
    if o.resume_dir is not None:
        fixed = [name for name in o.given if name not in RESUME_OPTIONS]
        if fixed:
            names = ", ".join(f"--{name.replace('_', '-')}" for name in fixed)
            raise ConfigError(f"{names} cannot change on --resume: a resumed run keeps the options it "
                              f"started with (see its manifest.json); start a new run to change them")
        run_dir = execute(resume_spec(o.resume_dir, base_url=base_url, model=o.model, api_key=api_key),
                          for_terminal(o.quiet))
        return final_lines(run_dir)
    # --base-url attaches; with --variant too, the run records that variant's declared setup.
    v = load_variant(o.variant) if o.variant else (None if base_url else load_variant(DEFAULT_VARIANT))
    if v is not None and o.model_path:
        v = v.with_model(o.model_path)
    defaults = Sampling()
    sampling = Sampling(
        temperature=defaults.temperature if o.temperature is None else o.temperature,
        top_p=defaults.top_p if o.top_p is None else o.top_p, top_k=defaults.top_k if o.top_k is None else o.top_k,
        max_tokens=o.max_tokens, ignore_eos=o.ignore_eos,
    )
    name = v.name if v else "attached"
    settings = RunSettings(
        results_dir=o.results_dir, run_id=o.run_id or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", limit=o.limit,
        concurrency=int(levels_c[0]), warmup=o.warmup, seed=o.seed, samples=o.samples, sampling=sampling,
        request_timeout_s=o.timeout_s, max_retries=o.max_retries, max_failure_share=o.max_failure_share,
        energy=o.energy, power_trace=o.power_trace, idle_s=o.idle_s, idle_after_s=o.idle_after_s,
        sample_rate_hz=o.sample_rate,
        request_rate=levels_r[0] if levels_r else None, burstiness=o.burstiness, duration_s=o.duration_s,
        max_requests=o.max_requests, max_duration_s=o.max_duration_s,
    )
    try:
        weights = PhaseWeights(prefill=o.prefill_weight)
    except ValueError as exc:
        raise ConfigError(f"--prefill-weight: {exc}") from None
    if Protocol(o.protocol) is Protocol.COMPETITION:
        if v is None or base_url or o.samples != 1:
            raise ConfigError("--protocol competition launches the variant itself and sends every item once: "
                              "give --variant, not --base-url or --samples")
        folder = run_competition(CompetitionSpec(suite=load_suite_spec(o.suite), settings=settings, variant=v,
                                                 dummy_weights=o.dummy_weights), for_terminal())
        return [*competition_lines(folder), f"results: {folder}"]
    spec = RunSpec(suite=load_suite_spec(o.suite), settings=settings, variant=v, base_url=base_url, model=o.model,
                   api_key=api_key, dummy_weights=o.dummy_weights, weights=weights)
    levels = sweep_specs(settings.load(), levels_c, levels_r)
    if len(levels) > 1:
        rows = run_sweep(spec, levels, for_terminal(o.quiet))
        return [*(line for row in rows for line in final_lines(row.run_dir)), *sweep_lines(rows),
                f"sweep report: {sweep_folder(spec) / 'sweep.html'}"]
    run_dir = execute(spec, for_terminal(o.quiet))
    return final_lines(run_dir)


def final_lines(run_dir: Path) -> list[str]:
    """The lines `bench run` ends with: the run's figures, J/request and quality with their intervals."""
    run = open_run(run_dir)
    return summary_lines(run.summary, run_dir, row_from_run(run))
