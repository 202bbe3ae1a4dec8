"""The 80 % gate on a model that answers: the reference Gemma 4 (benchmarks/models/reference,
trained on the default suite's generator; 0.914 on the full suite, model card) served by the real
vLLM CPU engine.

- reference vs itself, `--samples 3`, another sampling seed → PASS, exit 0, ratio near 1: the
  model's answers are stable under the competition's T 1.0 sampling (mean per-item spread over
  the samples 0.013), so the gate passes what it should without a shared seed;
- reference vs a copy with Gaussian noise (1 x RMS) on every weight matrix
  (benchmarks/models/degrade_reference.py) → FAIL, exit 1, ratio near 0.

The expected ranges come from full-suite runs. Each run is 504 requests of ~0.15 s; with the
three server starts, ~6 minutes in all on 2 CPU cores."""

import json
import subprocess
from pathlib import Path

import pytest

from harness.config import default_engine_venv, load_variant
from tests.conftest import bench

ENGINE_PYTHON = default_engine_venv() / "bin" / "python"
needs_engine = pytest.mark.skipif(not ENGINE_PYTHON.exists(), reason="vLLM CPU engine not built (nox -s engine)")
ITEMS = 168  # the whole default suite (~0.1 s a request)
NOISE = "1.0"  # degraded copy: noise std = 1 x each weight matrix's RMS
REFERENCE = load_variant("reference").model


def test_reference_variant_points_at_the_committed_folder():
    """`model: ../models/reference` resolves beside the variant file, wherever bench runs from."""
    for name in ("reference", "reference-bf16", "reference-fp8"):
        folder = load_variant(name).model
        assert folder.startswith("/"), folder
        config = json.loads((Path(folder) / "config.json").read_text())
        assert config["architectures"] == ["Gemma4ForConditionalGeneration"]
    card = (Path(REFERENCE) / "README.md").read_text()
    assert "## Scores" in card and "overall" in card


@needs_engine
@pytest.mark.engine
def test_fp8_copy_is_the_model_card_layout_of_the_reference_weights():
    """reference-fp8 (GPU only) is checked offline: compressed-tensors config, FP8 E4M3 per-tensor
    weights on exactly the text decoder's Linear layers, everything else unchanged, and the
    dequantized weights within FP8 rounding of the reference's."""
    fp8 = load_variant("reference-fp8").model
    check = subprocess.run([str(ENGINE_PYTHON), "benchmarks/models/convert_fp8.py", REFERENCE, fp8, "--check"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr[-2000:]
    assert "FP8 tensors" in check.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three CPU-engine runs over the same items: reference twice (sampling seeds 1 and 2) and the
    degraded copy (seed 1)."""
    root = tmp_path_factory.mktemp("reference-gate")
    degraded = root / "degraded-model"
    made = subprocess.run([str(ENGINE_PYTHON), "benchmarks/models/degrade_reference.py", REFERENCE, str(degraded),
                           "--noise", NOISE], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    common = ("--variant", "reference", "--samples", "3", "--concurrency", "4", "--results-dir", root)
    for run_id, extra in (("base", ("--seed", "1")), ("again", ("--seed", "2")),
                          ("degraded", ("--seed", "1", "--model-path", degraded))):
        result = bench("run", *common, "--run-id", run_id, *extra, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def gate(root, candidate):
    result = bench("gate", "--baseline", root / "base", "--candidate", root / candidate, "--json")
    return result.returncode, json.loads(result.stdout)


@needs_engine
@pytest.mark.engine
def test_reference_answers_every_task(runs):
    quality = json.loads((runs / "base" / "summary.json").read_text())["quality"]
    assert quality["items"] == ITEMS and quality["scored"] == 3 * ITEMS
    # The full suite scores 0.914 (model card); every task type is mostly answered right.
    assert 0.85 <= quality["overall"] <= 0.97, quality
    assert min(quality["by_task"].values()) >= 0.6, quality["by_task"]


@needs_engine
@pytest.mark.engine
def test_gate_passes_reference_against_itself(runs):
    code, result = gate(runs, "again")
    overall = result["overall"]
    assert (code, overall["verdict"]) == (0, "PASS"), overall
    assert abs(overall["ratio"] - 1) < 0.03 and overall["low"] >= 0.9, overall


@needs_engine
@pytest.mark.engine
def test_gate_fails_a_degraded_reference(runs):
    code, result = gate(runs, "degraded")
    overall = result["overall"]
    assert (code, overall["verdict"]) == (1, "FAIL"), overall
    # Noise of 1 x RMS on every matrix leaves next to nothing of the 0.914.
    assert overall["ratio"] <= 0.2 and overall["high"] < 0.8, overall
