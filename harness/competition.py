"""The competition replay (`bench run --protocol competition`): one freshly started server, launched as
the organisers do (`vllm serve MODEL --config vllm_config.yaml`), every suite item once.

Two passes over one server start, each an ordinary run folder inside the replay's folder:
  cold/  the fresh server, no warm-up: what the organisers' meter will really see;
  warm/  after the server's caches are reset and a warm-up of noise twins at the run's concurrency
         (harness.protocol): the server's steady cost for the same first-seen items.
`competition.json` gives both suite totals in J and Wh and their difference."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunSettings, SuiteSpec, Variant
from harness.errors import ConfigError, ServerError
from harness.protocol import Protocol, reset_caches
from harness.results import CompetitionResult, PassTotals
from harness.runner import Progress, RunSpec, execute, resolve_model_path
from harness.server import LaunchedServer, ServerHandle
from harness.store import read_competition, read_summary, write_competition

DEFAULT_WARMUP_REQUESTS = 64  # an upper bound: the warm-up stops once latency has settled


@dataclass(frozen=True)
class CompetitionSpec:
    suite: SuiteSpec
    settings: RunSettings  # results_dir/run_id name the replay's folder; concurrency, idle, sampling as usual
    variant: Variant
    dummy_weights: bool = False


def _pass(spec: CompetitionSpec, server: ServerHandle, folder: Path, name: str, warmup: int,
          progress: Progress) -> Path:
    settings = dataclasses.replace(spec.settings, results_dir=folder, run_id=name, warmup=warmup, samples=1)
    run = RunSpec(suite=spec.suite, settings=settings, variant=spec.variant, base_url=server.base_url,
                  model=server.model, dummy_weights=spec.dummy_weights)
    return execute(run, progress)


def competition_passes(spec: CompetitionSpec, server: ServerHandle, folder: Path,
                       progress: Progress) -> CompetitionResult:
    """Cold pass, cache reset, warm pass against a server that has served nothing yet; writes and
    returns competition.json."""
    progress.message("competition replay: cold pass (fresh server, no warm-up)")
    cold = _pass(spec, server, folder, "cold", 0, progress)
    reset = reset_caches(server.base_url)
    if not reset.complete:
        raise ServerError(f"the server's caches could not be reset ({reset.describe()}); the warm pass would "
                          f"re-send cached prompts")
    progress.message("competition replay: warm pass (caches reset, warm-up at the run's concurrency)")
    warm = _pass(spec, server, folder, "warm", spec.settings.warmup or DEFAULT_WARMUP_REQUESTS, progress)
    result = CompetitionResult(
        protocol=Protocol.COMPETITION.value, variant=spec.variant.name, suite=spec.suite.name,
        concurrency=spec.settings.concurrency, server_command=server.command,
        server_env_overrides=server.env_overrides, cache_reset_between_passes=reset.routes,
        cold=_totals(cold), warm=_totals(warm))
    write_competition(folder, result)
    return result


def _totals(run_dir: Path) -> PassTotals:
    return PassTotals.of(run_dir.name, read_summary(run_dir))


def run_competition(spec: CompetitionSpec, progress: Progress) -> Path:
    """Launch the variant fresh, replay the suite cold and warm; returns the replay's folder."""
    folder = spec.settings.results_dir / spec.settings.run_id
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists already; pick another --run-id")
    folder.mkdir(parents=True, exist_ok=True)
    model_path, dummy = resolve_model_path(spec.variant, spec.dummy_weights, progress)
    progress.message(f"starting vLLM for variant '{spec.variant.name}' as the organisers do (log: {folder}/server.log)")
    with LaunchedServer(spec.variant, model_path, folder, load_format_dummy=dummy) as server:
        competition_passes(spec, server, folder, progress)
    return folder


def competition_lines(folder: Path) -> list[str]:
    result = read_competition(folder)
    lines = [f"competition replay of {result.variant} on {result.suite} at concurrency {result.concurrency}:"]
    for name, t in (("cold", result.cold), ("warm", result.warm)):
        if t.total_j is None:
            lines.append(f"  {name}: {t.requests} requests, energy unavailable ({t.unavailable_reason})")
        else:
            lines.append(f"  {name}: {t.requests} requests, {t.total_j:.1f} J = {t.total_wh:.4f} Wh "
                         f"in {t.duration_s:.1f} s")
    if result.cold_minus_warm_j is not None:
        ratio = "" if result.cold_over_warm is None else f" ({result.cold_over_warm - 1:+.1%})"
        lines.append(f"  cold - warm: {result.cold_minus_warm_j:+.1f} J{ratio}")
    return lines
