"""`bench`: the command line. Parses options, builds a spec, calls one function; maps every
HarnessError to a one-line message and a non-zero exit (a traceback only with --debug)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from harness import __version__
from harness.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_THRESHOLD
from harness.errors import ConfigError, HarnessError
from harness.protocol import Protocol
from harness.records import EnergyMode

DEBUG = {"on": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bench")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """Energy benchmarking harness for vision-language model servers."""
    DEBUG["on"] = debug


@main.command("variants")
def variants_cmd() -> None:
    """List the server variants under benchmarks/variants/."""
    from harness.config import list_variants, load_variant

    for path in list_variants():
        v = load_variant(str(path))
        quant = v.vllm.get("quantization") or ("fp8 (checkpoint)" if v.dummy_model and v.dummy_model.layout == "fp8"
                                                else "-")
        click.echo(f"{v.name:<10} kv-cache {v.vllm.get('kv_cache_dtype', 'auto'):<5} quantization {quant:<17} "
                   f"{v.description}")


@main.command("suites")
@click.option("--suite", "names", multiple=True, help="Only these suites (name or path).")
def suites_cmd(names: tuple[str, ...]) -> None:
    """List suites: metric, max_tokens and data source (Hub suites are not downloaded); local
    suites also with item counts per task."""
    from harness.config import list_suites, load_suite_spec
    from harness.suite import describe, load_suite, open_table

    for source in names or [str(p) for p in list_suites()]:
        spec = load_suite_spec(source)
        line = f"{spec.name:<16} {spec.default_metric:<17} max_tokens {spec.max_tokens:<4} {describe(spec)}"
        if spec.data_format == "hub" and spec.local_copy:  # counting rows decodes no image
            line += f"  {open_table(spec).num_rows} rows"
        elif spec.data_format != "hub":
            suite = load_suite(spec)
            tasks = ", ".join(f"{task} {n}" for task, n in suite.task_counts().items())
            line += f"  {len(suite.items)} items ({tasks}) sha256 {suite.content_hash[:12]}"
        click.echo(line + (f"  [{spec.origin}]" if spec.origin else ""))


# Options `--resume` takes again (the server may have moved); every other option of a resumed run
# is fixed by its manifest, so passing one is refused rather than silently ignored.
RESUME_OPTIONS = {"resume_dir", "base_url", "model", "api_key_file", "quiet"}


@main.command("run")
@click.option("--variant", default=None, help="Variant name under benchmarks/variants/ or a YAML path "
              "[default: cpu-tiny when no --base-url].")
@click.option("--base-url", default=None, help="Attach to a running OpenAI-compatible server instead.")
@click.option("--model", default=None, help="Served model name when attaching [default: the first listed].")
@click.option("--api-key-file", type=click.Path(path_type=Path), default=None,
              help="File holding the API key of an attached server (else $BENCH_API_KEY / $OPENAI_API_KEY).")
@click.option("--model-path", default=None, help="Model weights folder or hub id, overriding the variant.")
@click.option("--dummy-weights", is_flag=True, help="Serve a generated model folder with random weights.")
@click.option("--suite", default="default", show_default=True, help="Suite name or path.")
@click.option("--limit", type=int, default=None, help="N items drawn seeded, keeping each task's share.")
@click.option("--concurrency", default="1", show_default=True,
              help="Requests in flight; a list (1,4,16,64) runs one level after another (a sweep).")
@click.option("--warmup", type=int, default=0, show_default=True,
              help="Warm-up requests (sent at --concurrency, not recorded).")
@click.option("--samples", type=int, default=1, show_default=True, help="Send every item K times (pass by pass).")
@click.option("--seed", type=int, default=0, show_default=True, help="Base of the per-request seeds.")
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--run-id", default=None, help="Folder name of this run [default: VARIANT-YYYYmmdd-HHMMSS].")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
              help="Finish an interrupted run (its folder).")
@click.option("--energy", type=click.Choice([m.value for m in EnergyMode]), default=EnergyMode.AUTO.value,
              show_default=True, help="Power source: NVML when present (auto), or a trace file.")
@click.option("--power-trace", type=click.Path(path_type=Path), default=None,
              help="External power trace (CSV/parquet) for --energy trace.")
@click.option("--idle-s", type=float, default=10.0, show_default=True, help="Idle power before the requests.")
@click.option("--idle-after-s", type=float, default=None,
              help="Idle window after the requests (after a short settle) [default: as --idle-s].")
@click.option("--protocol", type=click.Choice([p.value for p in Protocol]), default=Protocol.MEASURED.value,
              show_default=True, help="competition: a fresh server launched as the organisers do, every item "
              "once, suite energy cold and warm (see README).")
@click.option("--sample-rate", type=float, default=100.0, show_default=True, help="Power samples per second.")
@click.option("--prefill-weight", type=float, default=1.0, show_default=True,
              help="Weight of a request in prefill vs decode (1) when splitting power.")
@click.option("--temperature", type=float, default=None, help="Override the competition sampling (1.0).")
@click.option("--top-p", type=float, default=None, help="Override the competition sampling (0.95).")
@click.option("--top-k", type=int, default=None, help="Override the competition sampling (64).")
@click.option("--max-tokens", type=int, default=None, help="Override the suite's max_tokens.")
@click.option("--ignore-eos", is_flag=True, help="Generate exactly max_tokens (vLLM extension).")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Per-request timeout in seconds.")
@click.option("--max-retries", type=int, default=2, show_default=True, help="Retries of transient failures.")
@click.option("--max-failure-share", type=float, default=0.5, show_default=True,
              help="Stop the run when more than this share of requests fail.")
@click.option("--request-rate", default=None,
              help="Open-loop arrivals: mean requests/s (--concurrency stays an upper bound); a list sweeps "
              "the rate [default: closed loop].")
@click.option("--burstiness", type=float, default=1.0, show_default=True,
              help="Gamma shape of the arrival gaps with --request-rate (1: Poisson; <1 burstier).")
@click.option("--duration", "duration_s", type=float, default=None,
              help="Send no new request after this many seconds (the run is complete then).")
@click.option("--max-requests", type=int, default=None,
              help="Send exactly N requests, cycling through the suite (independent of --samples).")
@click.option("--max-duration-s", type=float, default=None,
              help="Wall-clock limit of the run; past it the run stops as interrupted (resumable).")
@click.option("--quiet", is_flag=True, help="No progress output; only the final lines.")
@click.pass_context
def run_cmd(ctx, variant, base_url, model, api_key_file, model_path, dummy_weights, suite, limit, concurrency,
            warmup, samples, seed, results_dir, run_id, resume_dir, energy, power_trace, idle_s, idle_after_s, protocol,
            sample_rate, prefill_weight, temperature, top_p, top_k, max_tokens, ignore_eos, timeout_s, max_retries,
            max_failure_share, request_rate, burstiness, duration_s, max_requests, max_duration_s, quiet) -> None:
    """Replay a suite against a vLLM server and measure every request."""
    from harness.config import (
        DEFAULT_VARIANT,
        RunSettings,
        Sampling,
        load_suite_spec,
        load_variant,
    )
    from harness.credentials import check_base_url, read_api_key
    from harness.energy.attribute import PhaseWeights
    from harness.load import parse_levels, sweep_specs
    from harness.progress import for_terminal
    from harness.runner import RunSpec, execute, resume_spec

    levels_c = parse_levels(concurrency, "--concurrency")
    if any(c != int(c) for c in levels_c):
        raise ConfigError(f"--concurrency must be whole numbers, not '{concurrency}'")
    levels_r = parse_levels(request_rate, "--request-rate") if request_rate is not None else ()
    api_key = read_api_key(api_key_file, os.environ)  # never from the command line (shell history)
    base_url = check_base_url(base_url) if base_url else None
    if resume_dir is not None:
        fixed = [f"--{name.replace('_', '-')}" for name in ctx.params if name not in RESUME_OPTIONS
                 and ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot change on --resume: a resumed run keeps the options it "
                              f"started with (see its manifest.json); start a new run to change them")
        spec = resume_spec(resume_dir, base_url=base_url, model=model, api_key=api_key)
    else:
        # --base-url attaches; with --variant too, the run records that variant's declared setup.
        v = load_variant(variant) if variant else (None if base_url else load_variant(DEFAULT_VARIANT))
        if v is not None and model_path:
            v = v.with_model(model_path)
        defaults = Sampling()
        sampling = Sampling(
            temperature=defaults.temperature if temperature is None else temperature,
            top_p=defaults.top_p if top_p is None else top_p, top_k=defaults.top_k if top_k is None else top_k,
            max_tokens=max_tokens, ignore_eos=ignore_eos,
        )
        name = v.name if v else "attached"
        settings = RunSettings(
            results_dir=results_dir, run_id=run_id or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", limit=limit,
            concurrency=int(levels_c[0]), warmup=warmup, seed=seed, samples=samples, sampling=sampling,
            request_timeout_s=timeout_s, max_retries=max_retries, max_failure_share=max_failure_share,
            energy=energy, power_trace=power_trace, idle_s=idle_s, idle_after_s=idle_after_s,
            sample_rate_hz=sample_rate,
            request_rate=levels_r[0] if levels_r else None, burstiness=burstiness, duration_s=duration_s,
            max_requests=max_requests, max_duration_s=max_duration_s,
        )
        try:
            weights = PhaseWeights(prefill=prefill_weight)
        except ValueError as exc:
            raise ConfigError(f"--prefill-weight: {exc}") from None
        if Protocol(protocol) is Protocol.COMPETITION:
            from harness.competition import CompetitionSpec, competition_lines, run_competition

            if v is None or base_url or samples != 1:
                raise ConfigError("--protocol competition launches the variant itself and sends every item once: "
                                  "give --variant, not --base-url or --samples")
            folder = run_competition(CompetitionSpec(suite=load_suite_spec(suite), settings=settings, variant=v,
                                                     dummy_weights=dummy_weights), for_terminal())
            for line in competition_lines(folder):
                click.echo(line)
            click.echo(f"results: {folder}")
            return
        spec = RunSpec(suite=load_suite_spec(suite), settings=settings, variant=v, base_url=base_url, model=model,
                       api_key=api_key, dummy_weights=dummy_weights, weights=weights)
    levels = sweep_specs(settings.load(), levels_c, levels_r) if resume_dir is None else [None]
    if len(levels) > 1:
        return _sweep(spec, levels, quiet)
    run_dir = execute(spec, for_terminal(quiet))
    _print_summary(run_dir)


def _sweep(spec, levels, quiet: bool) -> None:
    from harness.progress import for_terminal
    from harness.sweep import run_sweep, sweep_folder, sweep_lines

    rows = run_sweep(spec, levels, for_terminal(quiet))
    for row in rows:
        _print_summary(row.run_dir)
    for line in sweep_lines(rows):
        click.echo(line)
    click.echo(f"sweep report: {sweep_folder(spec) / 'sweep.html'}")


def _print_summary(run_dir: Path) -> None:
    from harness.finalize import open_run
    from harness.report.text import run_lines

    for line in run_lines(open_run(run_dir)):
        click.echo(line)
    click.echo(f"results: {run_dir}")


@main.command("synthetic-suite")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--images", default="100x512x512:png", show_default=True,
              help="COUNT[xWIDTHxHEIGHT][:png|jpeg|webp]; every image's pixels differ (no cache hits).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-tokens", type=int, default=32, show_default=True)
def synthetic_suite_cmd(folder: Path, images: str, seed: int, max_tokens: int) -> None:
    """Write a load-test suite of synthetic images (then: bench run --suite FOLDER)."""
    from harness.load import SyntheticImages, write_synthetic_suite

    n = write_synthetic_suite(folder, SyntheticImages.parse(images, seed=seed), max_tokens)
    click.echo(f"{n} synthetic item(s) in {folder}")


@main.command("score")
@click.argument("run_dir", type=click.Path(path_type=Path))
def score_cmd(run_dir: Path) -> None:
    """Recompute the scores of a stored run."""
    from harness.finalize import rescore

    summary = rescore(run_dir)
    quality = summary.quality
    if not quality.scored:
        raise HarnessError(f"{run_dir}: no request could be scored")
    click.echo(f"{summary.run_id}: quality {quality.overall:.3f} over {quality.items} items")
    for task, value in quality.by_task.items():
        click.echo(f"  {task:<12} {value:.3f}")


@main.command("reanalyze")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--power-trace", type=click.Path(path_type=Path), default=None,
              help="Use this external trace (CSV/parquet) instead of the run's own.")
def reanalyze_cmd(run_dir: Path, power_trace: Path | None) -> None:
    """Recompute every energy column of a stored run, without the server."""
    from harness.finalize import reanalyze

    reanalyze(run_dir, power_trace)
    _print_summary(run_dir)


@main.command("gate")
@click.option("--baseline", "baseline_dir", type=click.Path(path_type=Path), required=True, help="bf16 run folder.")
@click.option("--candidate", "candidate_dir", type=click.Path(path_type=Path), required=True,
              help="Candidate run folder.")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True, help="Quality ratio to reach.")
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True,
              help="Confidence of the interval.")
@click.option("--resamples", type=int, default=DEFAULT_RESAMPLES, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--force", is_flag=True, help="Gate incomplete runs or runs with different --samples anyway.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def gate_cmd(baseline_dir, candidate_dir, threshold, confidence, resamples, seed, force, as_json) -> None:
    """Quality gate: candidate ≥ threshold × baseline? Exit 0 PASS, 1 FAIL, 3 INCONCLUSIVE."""
    from harness.comparison import EXIT_CODES, gate_json, gate_paths
    from harness.report.text import gate_lines

    result, baseline, candidate = gate_paths(baseline_dir, candidate_dir, force=force, threshold=threshold,
                                             confidence=confidence, resamples=resamples, seed=seed)
    if as_json:
        click.echo(gate_json(result))
    else:
        for line in gate_lines(result, baseline.run_id, candidate.run_id):
            click.echo(line)
    sys.exit(EXIT_CODES[result.verdict])


@main.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder [default: the run folder].")
def report_cmd(run_dir: Path, out: Path | None) -> None:
    """Write report.md, report.html and plots of a stored run (sweep.md, sweep.html of a sweep folder)."""
    from harness.finalize import open_run
    from harness.report.render import run_report
    from harness.report.sweep_report import is_sweep

    if is_sweep(run_dir):
        from harness.sweep import report_sweep

        md, page = report_sweep(run_dir, out)
    else:
        md, page = run_report(open_run(run_dir), out)
    click.echo(f"wrote {md} and {page}")


@main.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder [default: compare-RUN1-vs-RUN2… beside the first run].")
@click.option("--force", is_flag=True, help="Compare runs over different suites or sampling (the report says so).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True)
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True)
def compare_cmd(run_dirs, out, force, threshold, confidence) -> None:
    """Compare runs side by side against the first (the baseline), with the quality gate."""
    from harness.comparison import compare

    md, page, gates = compare(list(run_dirs), out, force=force, threshold=threshold, confidence=confidence)
    for run_id, g in gates.items():
        click.echo(f"{run_id}: gate {g.verdict}")
    click.echo(f"wrote {md} and {page}")


@main.command("submit")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_dir", type=click.Path(path_type=Path), default=None, help="bf16 run folder.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder [default: the run folder].")
@click.option("--check", "check_file", type=click.Path(path_type=Path), default=None,
              help="Validate a submission file instead; exit 1 if a reviewer would reject it.")
@click.option("--accept-flag", "accept_flags", multiple=True, metavar="CODE=REASON",
              help="Submit despite a protocol flag (stall, not_steady, idle_drift), saying why; recorded.")
def submit_cmd(run_dir, baseline_dir, out, check_file, accept_flags) -> None:
    """Write the submission energy report (JSON + one page), or --check one."""
    from harness.report import submission

    if check_file is not None:
        _, findings = submission.check(check_file)
        for finding in findings:
            click.echo(f"finding: {finding}")
        click.echo(f"{check_file}: {'REJECT' if findings else 'OK'} ({len(findings)} finding(s))")
        sys.exit(1 if findings else 0)
    if run_dir is None or baseline_dir is None:
        raise ConfigError("submit needs RUN_DIR and --baseline RUN_DIR (or --check FILE)")
    doc, path, md, page = submission.write_submission(run_dir, baseline_dir, out, _accepted_flags(accept_flags))
    for finding in doc["findings"]:
        click.echo(f"finding: {finding}")
    click.echo(f"wrote {path}, {md} and {page}")


def _accepted_flags(values: tuple[str, ...]) -> dict[str, str]:
    from harness.energy.protocol_checks import PROTOCOL_FLAGS

    accepted = {}
    for value in values:
        code, _, reason = value.partition("=")
        if code.strip() not in PROTOCOL_FLAGS or not reason.strip():
            raise ConfigError(f"--accept-flag takes CODE=REASON with CODE one of {', '.join(PROTOCOL_FLAGS)} and a "
                              f"reason, not {value!r}")
        accepted[code.strip()] = reason.strip()
    return accepted


@main.command("nightly")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=Path("benchmarks/nightly.yaml"),
              show_default=True, help="Nightly configuration (YAML).")
@click.option("--night-id", default=None, help="Name of this night [default: today's UTC date].")
@click.option("--report-only", is_flag=True, help="Rebuild the verdicts and report of a night that ran (--night-id).")
def nightly_cmd(config_path: Path, night_id: str | None, report_only: bool) -> None:
    """Baseline + candidates, gates, history, regression alarms. Exit bits: 1 gate, 2 run failed, 4 regression."""
    from harness.nightly import conclude, load_night_config, run_night
    from harness.progress import for_terminal

    config = load_night_config(config_path)
    if report_only and not night_id:
        raise ConfigError("--report-only needs --night-id")
    result = conclude(config, night_id) if report_only else run_night(config, for_terminal(), night_id=night_id)
    for alarm in result.alarms:
        click.echo(alarm.describe())
    click.echo(f"night {result.night_id}: {sum(o.ok for o in result.outcomes)}/{len(result.outcomes)} runs ok; "
               f"report {result.report[1]}; exit {result.exit_code}")
    sys.exit(result.exit_code)


@main.group("history", invoke_without_command=True)
@click.option("--db", default=None, help="History database: SQLAlchemy URL or SQLite path "
              "[default: $BENCH_HISTORY or results/history.sqlite].")
@click.option("--variant", default=None, help="Only this variant.")
@click.option("--metric", default="j_per_request", show_default=True, help="Metric of the trend table.")
@click.option("--since", default=None, help="Only nights from this date (YYYY-MM-DD) on.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None, is_flag=False,
              flag_value=Path("results/history"),
              help="Write history.html + .md with trend plots to this folder [default: results/history].")
@click.option("--check", is_flag=True, help="Exit 4 when a regression is flagged as of the newest night.")
@click.pass_context
def history_cmd(ctx, db, variant, metric, since, html_out, check) -> None:
    """Trend table of past runs (one row per run); subcommand `import RUN_DIR...`."""
    from harness.history import METRICS, History, judge

    ctx.obj = db or os.environ.get("BENCH_HISTORY") or "results/history.sqlite"
    if ctx.invoked_subcommand is not None:
        return
    if metric not in METRICS:
        raise ConfigError(f"--metric: known metrics are {', '.join(METRICS)}")
    from harness.report.trends import history_page, trend_lines

    with History(ctx.obj, create=False) as history:
        rows = history.rows(variant=variant, since=since)
    alarms = judge(rows, [metric])
    for line in trend_lines(rows, metric):
        click.echo(line)
    for alarm in alarms:
        click.echo(alarm.describe())
    if html_out is not None:
        md, page = history_page(rows, [metric], alarms, html_out)
        click.echo(f"wrote {md} and {page}")
    if check and any(a.change.worse for a in alarms):
        sys.exit(4)


@history_cmd.command("import")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--night-id", default=None, help="Night of these runs [default: the date each run started].")
@click.option("--db", "db_here", default=None, help="History database (as `bench history --db`).")
@click.pass_obj
def history_import_cmd(db: str, run_dirs, night_id, db_here) -> None:
    """Add existing run folders to the history (a run already there is replaced)."""
    from harness.history import History, row_from_run
    from harness.store import load_run

    db = db_here or db
    rows = [row_from_run(load_run(d), night_id=night_id) for d in run_dirs]
    with History(db) as history:
        history.add(rows)
    click.echo(f"imported {len(rows)} run(s) into {db}")


def run() -> None:
    """Console-script entry point."""
    try:
        code = main.main(standalone_mode=False, prog_name="bench")
        if isinstance(code, int):
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("bench: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except HarnessError as exc:
        if DEBUG["on"]:
            raise
        click.echo(f"bench: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("bench: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    run()
