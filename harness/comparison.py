"""Which stored runs can be compared, and the shared loading of runs for gate/compare/submit.
Runs are comparable when they replayed the same suite content with the same sampling."""

from __future__ import annotations

from pathlib import Path

from harness.errors import ComparisonError
from harness.scoring.gate import GateResult, gate, paired_items
from harness.store import RunData, load_run


def differences(a: RunData, b: RunData) -> list[str]:
    found = []
    sa, sb = a.manifest.get("suite", {}), b.manifest.get("suite", {})
    if sa.get("hash") != sb.get("hash"):
        found.append(f"suite differs ({sa.get('name')} {str(sa.get('hash'))[:12]} vs "
                     f"{sb.get('name')} {str(sb.get('hash'))[:12]})")
    pa, pb = a.manifest.get("sampling_sent", {}), b.manifest.get("sampling_sent", {})
    for key in sorted(set(pa) | set(pb)):
        if pa.get(key) != pb.get(key):
            found.append(f"sampling differs: {key} {pa.get(key)} vs {pb.get(key)}")
    return found


def load_comparable(paths: list[Path], force: bool = False) -> tuple[list[RunData], list[str]]:
    """Load runs; refuse (unless `force`) any that differ from the first in suite or sampling."""
    runs = [load_run(Path(p)) for p in paths]
    problems = []
    for run in runs[1:]:
        for diff in differences(runs[0], run):
            problems.append(f"{runs[0].run_id} vs {run.run_id}: {diff}")
    if problems and not force:
        raise ComparisonError(problems[0] + ("" if len(problems) == 1 else f" (and {len(problems) - 1} more)"))
    return runs, problems


def run_gate(baseline: RunData, candidate: RunData, *, threshold: float, confidence: float, resamples: int = 10_000,
             seed: int = 0) -> GateResult:
    for run in (baseline, candidate):
        if "score" not in run.requests or run.requests["score"].notna().sum() == 0:
            raise ComparisonError(f"run {run.run_id} has no scores (run `bench score {run.dir}`)")
    if not 0 < threshold <= 1:
        raise ComparisonError(f"--threshold must be in (0, 1], got {threshold}")
    if not 0 < confidence < 1:
        raise ComparisonError(f"--confidence must be in (0, 1), got {confidence}")
    pairs = paired_items(baseline.requests, candidate.requests)
    if pairs.empty:
        raise ComparisonError(f"runs {baseline.run_id} and {candidate.run_id} share no scored item")
    return gate(pairs, threshold=threshold, confidence=confidence, resamples=resamples, seed=seed)
