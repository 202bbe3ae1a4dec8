"""The submission energy report: a versioned JSON document (schema beside this file), validated
on write and by `bench submit --check`, plus a one-page Markdown/HTML rendering.

`findings` lists what a reviewer would reject; `bench submit --check` fails when there are any."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import jsonschema

from harness import __version__
from harness.config import COMPETITION_SAMPLING
from harness.errors import ResultsError
from harness.report.document import Document, write
from harness.report.render import fmt
from harness.scoring.gate import PASS, GateResult
from harness.store import RunData

SCHEMA = json.loads((Path(__file__).with_name("submission.schema.json")).read_text())
SUMMARISED_FILES = ("manifest.json", "summary.json", "requests.parquet", "power.parquet")


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
    if doc["run"]["status"] != "complete":
        found.append(f"the run is {doc['run']['status']}, not complete")
    if doc["gate"]["verdict"] != PASS:
        found.append(f"quality gate not passed ({doc['gate']['verdict']})")
    sampling = doc["sampling"]
    for key, want in COMPETITION_SAMPLING.items():
        if sampling.get(key) != want:
            found.append(f"sampling {key}={sampling.get(key)} is not the competition's {want}")
    return found


def build(run: RunData, baseline: RunData, gate: GateResult) -> dict:
    m, s = run.manifest, run.summary
    e, lat = s["energy"], s["latency"]
    meter = m.get("meter", {})
    variant = m.get("variant", {})
    doc = {
        "format": "energy-harness/submission", "format_version": 1,
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": {"run_id": run.run_id, "status": m.get("status"), "variant": variant.get("name"),
                "model": variant.get("model") or m.get("server", {}).get("model"),
                "server_flags": variant.get("vllm") or {}, "server_env": variant.get("env") or {},
                "requests": lat["requests"], "failed": lat["failed"]},
        "hardware": {"gpus": meter.get("gpus", []), "driver": meter.get("driver_version"),
                     "power_source": meter.get("power_source"), "host": m.get("host", {})},
        "software": {"harness": __version__, "vllm": m.get("server", {}).get("vllm_version")},
        "suite": {"name": m["suite"]["name"], "sha256": m["suite"]["hash"], "items": m["suite"]["items"]},
        "sampling": m.get("sampling_sent", {}),
        "energy": {
            "available": e["available"], "unavailable_reason": e.get("unavailable_reason"),
            "total_j": e.get("total_j"), "total_wh": e["total_j"] / 3600 if e.get("total_j") is not None else None,
            "above_idle_j": e.get("above_idle_j"), "idle_power_w": e.get("idle_power_w"), "source": e.get("source"),
            "counter_integral_rel_diff": e.get("counter_integral_rel_diff"), "window_s": e.get("window_s"),
            "sensor_period_s": e.get("sensor_period_s"),
            "j_per_request": {k: e.get(f"j_per_request_{k}") for k in ("mean", "median", "p90")},
            "j_per_output_token": e.get("j_per_output_token"), "j_per_correct_answer": e.get("j_per_correct_answer"),
            "flags": e.get("flags", []),
        },
        "gate": {"baseline_run_id": baseline.run_id, "verdict": gate.verdict, "ratio": gate.overall.ratio,
                 "low": gate.overall.low, "high": gate.overall.high, "threshold": gate.threshold,
                 "confidence": gate.confidence, "items": gate.overall.items,
                 "baseline_quality": gate.overall.baseline_mean, "candidate_quality": gate.overall.candidate_mean},
        "files": {name: sha256(run.dir / name) for name in SUMMARISED_FILES if (run.dir / name).exists()},
    }
    doc["findings"] = reviewer_findings(doc)
    validate(doc)
    return doc


def validate(doc: dict) -> None:
    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ResultsError(f"submission does not match its schema at {where}: {exc.message}") from None


def check(path: Path) -> tuple[dict, list[str]]:
    """Validate a submission file and re-derive its findings (never trust the stored list)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    validate(doc)
    return doc, reviewer_findings(doc)


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
    page.heading("Files summarised (SHA-256)")
    page.table(["file", "sha256"], [[k, v] for k, v in doc["files"].items()])
    return write(page, out, "submission")
