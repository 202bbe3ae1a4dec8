"""`bench`: the command line. Parses options, builds a spec, calls one function per command and
prints the lines it returns; maps every HarnessError to a one-line message and a non-zero exit (a
traceback only with --debug)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness import __version__, catalog, finalize, nightly, run_command
from harness.comparison import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_THRESHOLD,
    compare_command,
    gate_command,
)
from harness.errors import HarnessError
from harness.submission import submit_command

DEBUG = {"on": False}


def _echo(lines: list[str], exit_code: int | None = None) -> None:
    for line in lines:
        click.echo(line)
    if exit_code is not None:
        sys.exit(exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bench")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """Energy benchmarking harness for vision-language model servers."""
    DEBUG["on"] = debug


@main.command("variants")
def variants_cmd() -> None:
    """List the server variants under benchmarks/variants/."""
    _echo(catalog.variant_lines())


@main.command("suites")
@click.option("--suite", "names", multiple=True, help="Only these suites (name or path).")
def suites_cmd(names: tuple[str, ...]) -> None:
    """List suites: metric, max_tokens and data source (Hub suites are not downloaded); local
    suites also with item counts per task."""
    _echo(catalog.suite_lines(names))


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
@click.option("--energy", type=click.Choice(run_command.ENERGY_MODES), default=run_command.RunOptions.energy,
              show_default=True, help="Power source: NVML when present (auto), or a trace file.")
@click.option("--power-trace", type=click.Path(path_type=Path), default=None,
              help="External power trace (CSV/parquet) for --energy trace.")
@click.option("--idle-s", type=float, default=10.0, show_default=True, help="Idle power before the requests.")
@click.option("--idle-after-s", type=float, default=None,
              help="Idle window after the requests (after a short settle) [default: as --idle-s].")
@click.option("--protocol", type=click.Choice(run_command.PROTOCOLS), default=run_command.RunOptions.protocol,
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
def run_cmd(ctx, **options) -> None:
    """Replay a suite against a vLLM server and measure every request."""
    given = tuple(name for name in ctx.params
                  if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT)
    _echo(run_command.run(run_command.RunOptions(**options, given=given)))


@main.command("synthetic-suite")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--images", default="100x512x512:png", show_default=True,
              help="COUNT[xWIDTHxHEIGHT][:png|jpeg|webp]; every image's pixels differ (no cache hits).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-tokens", type=int, default=32, show_default=True)
def synthetic_suite_cmd(folder: Path, images: str, seed: int, max_tokens: int) -> None:
    """Write a load-test suite of synthetic images (then: bench run --suite FOLDER)."""
    _echo(catalog.synthetic_suite_lines(folder, images, seed, max_tokens))


@main.command("score")
@click.argument("run_dir", type=click.Path(path_type=Path))
def score_cmd(run_dir: Path) -> None:
    """Recompute the scores of a stored run."""
    _echo(finalize.score_command(run_dir))


@main.command("reanalyze")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--power-trace", type=click.Path(path_type=Path), default=None,
              help="Use this external trace (CSV/parquet) instead of the run's own.")
def reanalyze_cmd(run_dir: Path, power_trace: Path | None) -> None:
    """Recompute every energy column of a stored run, without the server."""
    _echo(finalize.reanalyze_command(run_dir, power_trace))


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
def gate_cmd(baseline_dir, candidate_dir, **options) -> None:
    """Quality gate: candidate ≥ threshold × baseline? Exit 0 PASS, 1 FAIL, 3 INCONCLUSIVE."""
    _echo(*gate_command(baseline_dir, candidate_dir, **options))


@main.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder [default: the run folder].")
def report_cmd(run_dir: Path, out: Path | None) -> None:
    """Write report.md, report.html and plots of a stored run."""
    _echo(finalize.report_command(run_dir, out))


@main.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder [default: compare-RUN1-vs-RUN2… beside the first run].")
@click.option("--force", is_flag=True, help="Compare runs over different suites or sampling (the report says so).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True)
@click.option("--confidence", type=float, default=DEFAULT_CONFIDENCE, show_default=True)
def compare_cmd(run_dirs, out, force, threshold, confidence) -> None:
    """Compare runs side by side against the first (the baseline), with the quality gate."""
    _echo(compare_command(list(run_dirs), out, force=force, threshold=threshold, confidence=confidence))


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
    lines, code = submit_command(run_dir, baseline_dir, out, check_file, accept_flags)
    _echo(lines, code if check_file is not None else None)


@main.command("nightly")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=Path("benchmarks/nightly.yaml"),
              show_default=True, help="Nightly configuration (YAML).")
@click.option("--night-id", default=None, help="Name of this night [default: today's UTC date].")
@click.option("--report-only", is_flag=True, help="Rebuild the verdicts and report of a night that ran (--night-id).")
def nightly_cmd(config_path: Path, night_id: str | None, report_only: bool) -> None:
    """Baseline + candidates, gates, history, regression alarms. Exit bits: 1 gate, 2 run failed, 4 regression."""
    _echo(*nightly.night_command(config_path, night_id, report_only))


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
def history_cmd(ctx, db, **options) -> None:
    """Trend table of past runs (one row per run); subcommand `import RUN_DIR...`."""
    ctx.obj = nightly.history_location(db)
    if ctx.invoked_subcommand is None:
        lines, code = nightly.history_command(ctx.obj, **options)
        _echo(lines, code or None)


@history_cmd.command("import")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--night-id", default=None, help="Night of these runs [default: the date each run started].")
@click.option("--db", "db_here", default=None, help="History database (as `bench history --db`).")
@click.pass_obj
def history_import_cmd(db: str, run_dirs, night_id, db_here) -> None:
    """Add existing run folders to the history (a run already there is replaced)."""
    _echo(nightly.history_import_command(db_here or db, list(run_dirs), night_id))


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
