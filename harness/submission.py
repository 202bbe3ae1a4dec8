"""The submission energy report: a versioned JSON document (schema: report/submission.schema.json), validated
on write and by `bench submit --check`, plus a one-page Markdown/HTML rendering.

`findings` lists what a reviewer would reject; `bench submit --check` fails when there are any."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import jsonschema

from harness import __version__
from harness.comparison import load_comparable, run_gate
from harness.config import COMPETITION_SAMPLING, Sampling
from harness.energy.protocol_checks import PROTOCOL_FLAGS, flag_code, protocol_flags
from harness.errors import ConfigError, ResultsError
from harness.report.document import Document, write
from harness.report.render import fmt
from harness.results import J_PER_WH, jsonable
from harness.scoring.gate import INCONCLUSIVE, PASS, GateResult, verdict_for
from harness.store import RESULT_FILES, RunData, output_dir, read_json, write_json

SCHEMA = json.loads((Path(__file__).parent / "report" / "submission.schema.json").read_text())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reviewer_findings(doc: dict) -> list[str]:
    """What a reviewer would reject, in plain words."""
    found = []
    energy = doc["energy"]
    if not energy["available"]:
        found.append(f"no energy measurement: {energy.get('unavailable_reason')}")
    elif energy["source"] != "counter":
        found.append("total energy is not from the hardware energy counter (power integral only)")
    for flag in energy.get("flags", []):
        if flag.startswith(("short_window", "counter_mismatch")):
            found.append(f"energy validity: {flag}")
    protocol = doc.get("protocol") or {"flags": [], "accepted": {}}
    found += [f"protocol validity: {flag}" for flag in protocol["flags"]
              if flag_code(flag) not in protocol["accepted"]]
    if doc["run"]["status"] != "complete":
        found.append(f"the run is {doc['run']['status']}, not complete")
    if doc["gate"]["verdict"] != PASS:
        found.append(f"quality gate not passed ({doc['gate']['verdict']})")
    sampling = doc["sampling"]
    try:
        competition = Sampling(**{k: sampling.get(k) for k in COMPETITION_SAMPLING}).is_competition()
    except TypeError:
        competition = False
    if not competition:  # name each setting that differs
        found += [f"sampling {k}={sampling.get(k)} is not the competition's {want}"
                  for k, want in COMPETITION_SAMPLING.items() if sampling.get(k) != want]
    g = doc["gate"]
    if g["low"] is None or g["high"] is None:
        expected = INCONCLUSIVE
    else:
        expected = verdict_for(g["low"], g["high"], g["threshold"])
    if g["verdict"] != expected:
        found.append(f"gate verdict {g['verdict']} does not follow from the interval [{g['low']}, {g['high']}] "
                     f"and threshold {g['threshold']} (that gives {expected})")
    return found


def file_findings(doc: dict, folder: Path) -> list[str]:
    """The files the submission summarises, checked against their recorded SHA-256 when the run
    folder is beside the submission file."""
    found = []
    for name, digest in doc.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            continue
        if sha256(path) != digest:
            found.append(f"{name} changed since the submission was written (sha256 differs)")
    return found


def build(run: RunData, baseline: RunData, gate: GateResult, accepted: dict[str, str] | None = None) -> dict:
    """`accepted`: protocol flag code → the reason it is accepted (recorded in the submission)."""
    m, s = run.manifest, run.summary
    e, lat = s.energy, s.latency
    meter, variant, server = m.meter, m.variant, m.server
    doc = {
        "format": "energy-harness/submission", "format_version": 1,
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": {"run_id": run.run_id, "status": m.status.value, "variant": variant.name if variant else None,
                "model": (variant.model if variant else None) or (server.model if server else None),
                "server_flags": dict(variant.vllm) if variant else {},
                "server_env": dict(variant.env) if variant else {},
                "requests": lat.requests, "failed": lat.failed},
        "hardware": {"gpus": [asdict(g) for g in meter.gpus] if meter else [],
                     "driver": meter.driver_version if meter else None,
                     "power_source": meter.power_source if meter else None, "host": asdict(m.host)},
        "software": {"harness": __version__, "vllm": server.vllm_version if server else None},
        "suite": {"name": m.suite.name, "sha256": m.suite.hash, "items": m.suite.items},
        "sampling": m.sampling_sent,
        "energy": {
            "available": e.available, "unavailable_reason": e.unavailable_reason,
            "total_j": e.total_j, "total_wh": e.total_j / J_PER_WH if e.total_j is not None else None,
            "above_idle_j": e.above_idle_j, "idle_power_w": e.idle_power_w, "source": e.source,
            "counter_integral_rel_diff": e.counter_integral_rel_diff, "window_s": e.window_s,
            "sensor_period_s": e.sensor_period_s,
            "j_per_request": {"mean": e.j_per_request_mean, "median": e.j_per_request_median,
                              "p90": e.j_per_request_p90},
            "j_per_output_token": e.j_per_output_token, "j_per_correct_answer": e.j_per_correct_answer,
            "flags": list(e.flags),
        },
        "gate": {"baseline_run_id": baseline.run_id, "verdict": gate.verdict, "ratio": gate.overall.ratio,
                 "low": gate.overall.low, "high": gate.overall.high, "threshold": gate.threshold,
                 "confidence": gate.confidence, "items": gate.overall.items,
                 "baseline_quality": gate.overall.baseline_mean, "candidate_quality": gate.overall.candidate_mean},
        "files": {name: sha256(run.dir / name) for name in RESULT_FILES if (run.dir / name).exists()},
        "protocol": {"flags": protocol_flags([*e.flags, *s.flags]), "accepted": dict(accepted or {})},
    }
    doc = jsonable(doc)
    doc["findings"] = reviewer_findings(doc)
    validate(doc)
    return doc


def write_submission(run_dir: Path, baseline_dir: Path, out: Path | None = None,
                     accepted: dict[str, str] | None = None) -> tuple[dict, Path, Path, Path]:
    """`bench submit`: gate the run against the baseline, write submission.json and its page.
    A run with protocol flags (harness.energy.protocol_checks) is refused, nothing written, unless
    every such flag is accepted with a reason."""
    (baseline, run), _ = load_comparable([baseline_dir, run_dir])
    doc = build(run, baseline, run_gate(baseline, run, force=True), accepted)
    blocking = sorted({flag_code(f) for f in doc["protocol"]["flags"]} - set(doc["protocol"]["accepted"]))
    if blocking:
        raise ConfigError(f"{run.dir}: validity flags block the submission ({', '.join(blocking)}): measure again "
                          f"after a warm-up at the run's concurrency, or accept each with --accept-flag "
                          f"{blocking[0]}='why it does not matter'")
    target = output_dir(out or run.dir)
    write_json(target / "submission.json", doc)
    md, page = render(doc, target)
    return doc, target / "submission.json", md, page


def accepted_flags(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--accept-flag CODE=REASON` values → {code: reason}; a code must be a protocol flag's."""
    accepted = {}
    for value in values:
        code, _, reason = value.partition("=")
        if code.strip() not in PROTOCOL_FLAGS or not reason.strip():
            raise ConfigError(f"--accept-flag takes CODE=REASON with CODE one of {', '.join(PROTOCOL_FLAGS)} and a "
                              f"reason, not {value!r}")
        accepted[code.strip()] = reason.strip()
    return accepted


def submit_command(run_dir: Path | None, baseline_dir: Path | None, out: Path | None = None,
                   check_file: Path | None = None, accept: tuple[str, ...] = ()) -> tuple[list[str], int]:
    """`bench submit`: (lines, exit code). With `check_file`, exit 1 when a reviewer would reject it."""
    if check_file is not None:
        _, findings = check(check_file)
        return ([*(f"finding: {f}" for f in findings),
                 f"{check_file}: {'REJECT' if findings else 'OK'} ({len(findings)} finding(s))"], 1 if findings else 0)
    if run_dir is None or baseline_dir is None:
        raise ConfigError("submit needs RUN_DIR and --baseline RUN_DIR (or --check FILE)")
    doc, path, md, page = write_submission(run_dir, baseline_dir, out, accepted_flags(accept))
    return [*(f"finding: {f}" for f in doc["findings"]), f"wrote {path}, {md} and {page}"], 0


def validate(doc: dict) -> None:
    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ResultsError(f"submission does not match its schema at {where}: {exc.message}") from None


def check(path: Path) -> tuple[dict, list[str]]:
    """Validate a submission file and re-derive its findings (never trust the stored list),
    including the SHA-256 of every summarised file found beside it."""
    path = Path(path)
    doc = read_json(path)
    validate(doc)
    return doc, reviewer_findings(doc) + file_findings(doc, path.parent)


def render(doc: dict, out: Path) -> tuple[Path, Path]:
    e, g = doc["energy"], doc["gate"]
    page = Document(f"Submission energy report: {doc['run']['run_id']}")
    page.table(["", ""], [
        ["variant / model", f"{doc['run']['variant']} / {doc['run']['model']}"],
        ["suite", f"{doc['suite']['name']} ({doc['suite']['items']} items, sha256 {doc['suite']['sha256'][:16]})"],
        ["hardware", ", ".join(x["name"] for x in doc["hardware"]["gpus"]) or "none"],
        ["software", f"energy-harness {doc['software']['harness']}, vLLM {doc['software']['vllm']}"],
        ["sampling", ", ".join(f"{k}={v}" for k, v in doc["sampling"].items())],
        ["total energy", f"{fmt(e['total_j'], 'J')} = {fmt(e['total_wh'], 'Wh')} ({e['source']})"],
        ["J/request mean / median / p90", " / ".join(fmt(v) for v in e["j_per_request"].values())],
        ["J/output token, J/correct answer", f"{fmt(e['j_per_output_token'])}, {fmt(e['j_per_correct_answer'])}"],
        ["quality gate", f"{g['verdict']}: ratio {fmt(g['ratio'])} [{fmt(g['low'])}, {fmt(g['high'])}] vs "
                         f"threshold {g['threshold']} (baseline {g['baseline_run_id']})"],
    ])
    page.heading("Reviewer findings")
    page.bullets(doc["findings"] or ["none"], css="flag" if doc["findings"] else None)
    accepted = (doc.get("protocol") or {}).get("accepted") or {}
    if accepted:
        page.heading("Protocol flags accepted by the submitter")
        page.bullets([f"{code}: {reason}" for code, reason in accepted.items()], css="flag")
    page.heading("Files summarised (SHA-256)")
    page.table(["file", "sha256"], [[k, v] for k, v in doc["files"].items()])
    return write(page, out, "submission")
