"""Which runs compare, and what the gate refuses (comparison.py), on typed runs in memory."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from harness.comparison import differences, gate_refusals, run_gate
from harness.errors import ComparisonError
from harness.records import RunStatus
from harness.store import RunData
from tests.unit.test_store import manifest


def run(run_id="a", status=RunStatus.COMPLETE, samples=1, sent=None, scores=(1.0,) * 8) -> RunData:
    m = replace(manifest(run_id), status=status, settings={"samples": samples},
                sampling_sent=sent or {"temperature": 1.0})
    requests = pd.DataFrame({"item_id": [f"i{k}" for k in range(len(scores))], "task": "t", "score": scores,
                             "retried": False})
    return RunData(Path(run_id), m, requests, pd.DataFrame(), None)


def test_suite_and_sampling_differences_are_named():
    assert differences(run(), run("b")) == []
    assert differences(run(), run("b", sent={"temperature": 0.7})) == ["sampling differs: temperature 1.0 vs 0.7"]


def test_gate_refuses_unfinished_and_different_k_unless_forced():
    a, unfinished, k3 = run(), run("b", status=RunStatus.INCOMPLETE), run("c", samples=3)
    assert gate_refusals(a, unfinished) == ["run b is incomplete, not complete"]
    assert gate_refusals(a, k3) == ["samples per item differ: 1 vs 3"]
    for other in (unfinished, k3):
        with pytest.raises(ComparisonError, match="--force"):
            run_gate(a, other)
        assert run_gate(a, other, force=True).verdict == "PASS"


def test_gate_parameters_are_checked_once():
    with pytest.raises(ComparisonError, match="--resamples must be at least"):
        run_gate(run(), run("b"), resamples=1)
