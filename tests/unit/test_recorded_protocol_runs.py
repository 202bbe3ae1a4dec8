"""Runs recorded by benchmarks/gpu/measure.py on four H200s (2026-11-27, vLLM 0.23.0, E4B-shaped dummy
weights, 128 output tokens): the competition replay of bf16 on a fresh machine (cold and warm passes),
fp8-w8a8 one at a time and fp8 at 16 in flight, each after a cache reset and a warm-up at its level.
The protocol checks are recomputed from the stored journals, not read from the stored summaries."""

import shutil

import pytest

from harness.finalize import finalize_run
from harness.store import load_run
from tests.conftest import FIXTURES

RUNS = FIXTURES / "h200x4-20261127-protocol"
ALL = [RUNS / "bf16-competition" / "cold", RUNS / "bf16-competition" / "warm", RUNS / "fp8-w8a8-c1",
       RUNS / "fp8-c16"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Every recorded run, reanalysed by today's code."""
    out = {}
    for run in ALL:
        copy = tmp_path_factory.mktemp("run") / run.name
        shutil.copytree(run, copy)
        out[run] = (finalize_run(copy), load_run(copy))
    return out


@pytest.mark.parametrize("run", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_identities_hold(fresh, run):
    summary, stored = fresh[run]
    energy = summary.energy
    requests = stored.requests
    # Σ per-request + unattributed = the counter's total, over all attempts.
    assert requests["energy_j"].sum() + energy.unattributed_j == pytest.approx(energy.total_j, rel=1e-9)
    assert requests["energy_above_idle_j"].sum() + energy.unattributed_above_idle_j == pytest.approx(
        energy.above_idle_j, rel=1e-9)
    assert summary.latency.duration_s == pytest.approx(energy.window_s, rel=1e-12)
    assert abs(energy.counter_integral_rel_diff) < 0.031


def test_cold_pass_of_a_fresh_server_is_flagged_and_the_warm_pass_is_not(fresh):
    cold, _ = fresh[RUNS / "bf16-competition" / "cold"]
    warm, _ = fresh[RUNS / "bf16-competition" / "warm"]
    codes = {f.split(":")[0] for f in cold.all_flags}
    assert {"stall", "not_steady"} <= codes
    assert not {"stall", "not_steady", "idle_drift"} & {f.split(":")[0] for f in warm.all_flags}
    # The cold pass costs more for the same 168 first-seen items: what a fresh server really costs.
    assert cold.energy.total_j > 1.2 * warm.energy.total_j


def test_headline_is_first_seen_and_cache_hits_are_reported_apart(fresh):
    for run in ALL:
        energy = fresh[run][0].energy
        cache = energy.cache
        assert cache.reported and energy.headline_requests == "first-seen"
        assert energy.j_per_request_mean == pytest.approx(cache.first_seen_j_per_request_mean)
        # The default suite repeats some image + prompt pairs (12 of 168); they hit the prefix cache
        # even on a freshly reset server, and cost less than first-seen requests.
        if cache.cache_hit_requests:
            assert cache.cache_hit_j_per_request_mean < cache.first_seen_j_per_request_mean
        assert cache.cached_prompt_token_share < 0.1
    assert fresh[RUNS / "bf16-competition" / "cold"][0].energy.cache.cache_hit_requests == 12


def test_idle_measured_before_and_after_agrees_on_a_warm_gpu(fresh):
    for run in ALL:
        energy = fresh[run][0].energy
        assert energy.idle_after_power_w == pytest.approx(energy.idle_power_w, abs=5.0)


def test_warm_up_was_recorded_and_settled(fresh):
    for run in ALL[1:]:
        warmup = fresh[run][1].manifest.segments[0].warmup
        assert warmup.settled and warmup.requests >= 8


def test_protocol_flags_block_the_submission_unless_accepted_with_a_reason(tmp_path):
    import json

    from tests.conftest import bench, cli

    runs = {}
    for name in ("cold", "warm"):
        runs[name] = tmp_path / name
        shutil.copytree(RUNS / "bf16-competition" / name, runs[name])
        finalize_run(runs[name])  # today's checks on the recorded journals
    refused = bench("submit", runs["cold"], "--baseline", runs["warm"])
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "validity flags block the submission (not_steady, stall)" in refused.stderr
    assert not (runs["cold"] / "submission.json").exists()
    bad = cli("submit", runs["cold"], "--baseline", runs["warm"], "--accept-flag", "stall=")
    assert bad.returncode != 0 and "--accept-flag takes CODE=REASON" in bad.stderr
    accepted = cli("submit", runs["cold"], "--baseline", runs["warm"], "--accept-flag",
                   "stall=the organisers' server is as fresh as ours", "--accept-flag", "not_steady=same cause")
    assert accepted.returncode == 0, accepted.stderr
    doc = json.loads((runs["cold"] / "submission.json").read_text())
    assert doc["protocol"]["accepted"]["stall"] == "the organisers' server is as fresh as ours"
    assert {f.split(":")[0] for f in doc["protocol"]["flags"]} == {"stall", "not_steady"}
    assert not any(f.startswith("protocol validity") for f in doc["findings"])
    assert "Protocol flags accepted" in (runs["cold"] / "submission.html").read_text()
    # A reviewer's check re-derives the findings: dropping an acceptance brings the flag back.
    del doc["protocol"]["accepted"]["not_steady"]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    checked = cli("submit", "--check", edited)
    assert checked.returncode == 1 and "protocol validity: not_steady" in checked.stdout
