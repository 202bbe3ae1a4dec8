"""Which stored runs can be compared, and the orchestration of `bench gate` and `bench compare`.
Runs are comparable when they replayed the same suite content with the same sampling; the gate
also wants both runs complete and with the same number of samples per item (unless forced)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.errors import ComparisonError
from harness.finalize import open_run
from harness.report.render import compare_report
from harness.report.text import gate_lines
from harness.results import jsonable
from harness.scoring.gate import (  # the CLI takes the gate's defaults and exit codes from here
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_THRESHOLD,
    EXIT_CODES,
    GateResult,
    check_parameters,
    gate,
    paired_items,
)
from harness.store import RunData, output_dir

__all__ = ["DEFAULT_CONFIDENCE", "DEFAULT_RESAMPLES", "DEFAULT_THRESHOLD", "EXIT_CODES", "compare", "compare_command",
           "differences", "gate_command", "gate_json", "gate_paths", "gate_refusals", "load_comparable", "run_gate"]


def differences(a: RunData, b: RunData) -> list[str]:
    found = []
    sa, sb = a.manifest.suite, b.manifest.suite
    if sa.hash != sb.hash:
        found.append(f"suite differs ({sa.name} {sa.hash[:12]} vs {sb.name} {sb.hash[:12]})")
    pa, pb = a.manifest.sampling_sent, b.manifest.sampling_sent
    for key in sorted(set(pa) | set(pb)):
        if pa.get(key) != pb.get(key):
            found.append(f"sampling differs: {key} {pa.get(key)} vs {pb.get(key)}")
    return found


def gate_refusals(a: RunData, b: RunData) -> list[str]:
    """What makes a gate between two runs unfair beyond `differences`: an unfinished run
    (the gate would see only the items both reached), or a different K per item."""
    found = [f"run {run.run_id} is {run.manifest.status.value}, not complete" for run in (a, b)
             if not run.manifest.complete]
    if a.manifest.samples != b.manifest.samples:
        found.append(f"samples per item differ: {a.manifest.samples} vs {b.manifest.samples}")
    return found


def _refuse(problems: list[str]) -> None:
    raise ComparisonError(problems[0] + ("" if len(problems) == 1 else f" (and {len(problems) - 1} more)")
                          + "; pass --force to go on anyway")


def load_comparable(paths: list[Path], force: bool = False) -> tuple[list[RunData], list[str]]:
    """Load runs; refuse (unless `force`) any that differ from the first in suite or sampling."""
    runs = [open_run(Path(p)) for p in paths]
    problems = [f"{runs[0].run_id} vs {run.run_id}: {diff}" for run in runs[1:] for diff in differences(runs[0], run)]
    if problems and not force:
        _refuse(problems)
    return runs, problems


def run_gate(baseline: RunData, candidate: RunData, *, threshold: float = DEFAULT_THRESHOLD,
             confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             force: bool = False) -> GateResult:
    try:
        check_parameters(threshold, confidence, resamples)
    except ValueError as exc:
        raise ComparisonError(str(exc)) from None
    for run in (baseline, candidate):
        if "score" not in run.requests or run.requests["score"].notna().sum() == 0:
            raise ComparisonError(f"run {run.run_id} has no scores (run `bench score {run.dir}`)")
    refusals = gate_refusals(baseline, candidate)
    if refusals and not force:
        _refuse(refusals)
    pairs = paired_items(baseline.requests, candidate.requests)
    if pairs.empty:
        raise ComparisonError(f"runs {baseline.run_id} and {candidate.run_id} share no scored item")
    return gate(pairs, threshold=threshold, confidence=confidence, resamples=resamples, seed=seed)


def gate_paths(baseline: Path, candidate: Path, *, force: bool = False,
               **parameters) -> tuple[GateResult, RunData, RunData]:
    """`bench gate`: load both runs, refuse what is not comparable, gate."""
    (base, cand), _ = load_comparable([baseline, candidate], force=force)
    return run_gate(base, cand, force=force, **parameters), base, cand


def gate_json(result: GateResult) -> str:
    """The gate's result as strict JSON (an undefined bound is null, never NaN)."""
    return json.dumps(jsonable(result.to_dict()), indent=2, allow_nan=False)


def default_compare_dir(runs: list[RunData]) -> Path:
    """Named after the runs compared, beside the first one, so two comparisons never overwrite
    each other."""
    name = "compare-" + "-vs-".join(re.sub(r"[^A-Za-z0-9._-]", "_", r.run_id) for r in runs)
    return runs[0].dir.parent / name[:200]


def compare(paths: list[Path], out: Path | None = None, *, force: bool = False, threshold: float = DEFAULT_THRESHOLD,
            confidence: float = DEFAULT_CONFIDENCE) -> tuple[Path, Path, dict[str, GateResult]]:
    """`bench compare`: the runs side by side against the first, with the gate at `threshold`."""
    if len(paths) < 2:
        raise ComparisonError("compare needs at least two run folders")
    runs, problems = load_comparable(list(paths), force=force)
    gates = {}
    for run in runs[1:]:
        if "score" in run.requests and run.requests["score"].notna().any():
            gates[run.run_id] = run_gate(runs[0], run, threshold=threshold, confidence=confidence, force=True)
            problems += [f"{runs[0].run_id} vs {run.run_id}: {p}" for p in gate_refusals(runs[0], run)]
    target = output_dir(out if out is not None else default_compare_dir(runs))
    md, page = compare_report(runs, gates, problems, target, threshold=threshold)
    return md, page, gates


def gate_command(baseline: Path, candidate: Path, *, as_json: bool = False, force: bool = False,
                 **parameters) -> tuple[list[str], int]:
    """`bench gate`: (lines, exit code: 0 PASS, 1 FAIL, 3 INCONCLUSIVE)."""
    result, base, cand = gate_paths(baseline, candidate, force=force, **parameters)
    lines = [gate_json(result)] if as_json else gate_lines(result, base.run_id, cand.run_id)
    return lines, EXIT_CODES[result.verdict]


def compare_command(paths: list[Path], out: Path | None = None, **options) -> list[str]:
    """`bench compare`: each candidate's gate verdict, then the files written."""
    md, page, gates = compare(paths, out, **options)
    return [*(f"{run_id}: gate {g.verdict}" for run_id, g in gates.items()), f"wrote {md} and {page}"]
