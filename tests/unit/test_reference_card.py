"""benchmarks/models/train_reference.py `card`: the model card's score tables come from the
harness's typed results (a killed run's summary rebuilt from its journals), never from raw keys."""

import importlib.util
import json
import shutil

from harness.finalize import open_run
from tests.conftest import ROOT

NIGHT = ROOT / "tests/fixtures/h200x2-20261128-nightly"
spec = importlib.util.spec_from_file_location("train_reference", ROOT / "benchmarks/models/train_reference.py")
train_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_reference)


def test_score_tables_follow_the_stored_summary_and_a_killed_run_is_rebuilt(tmp_path):
    recorded = NIGHT / "2026-11-28-g1-00-bf16-c16"
    killed = tmp_path / "killed"
    shutil.copytree(recorded, killed)
    (killed / "summary.json").unlink()
    lines = train_reference.score_lines([recorded, killed])
    quality = open_run(recorded).summary.quality
    assert lines.count("| task | metric | score |") == 2
    for task, score in quality.by_task.items():
        assert lines.count(f"| {task} | {quality.metric_by_task[task]} | {score:.3f} |") == 2
    assert f"({quality.items} items, {quality.scored} answers, vLLM 0.23.0, " in lines[0]
    assert lines[0].endswith(f"run `{recorded.name}`:") and "run `killed`:" in "\n".join(lines)
    assert sum(line.startswith("Below 0.2") for line in lines) == 2  # random weights: every task


def test_the_card_holds_the_tables_or_says_nothing_was_measured(tmp_path):
    record = json.loads((ROOT / "benchmarks/models/reference/training.json").read_text())
    train_reference.write_card(tmp_path, record, [NIGHT / "2026-11-28-g1-00-bf16-c16"])
    card = (tmp_path / "README.md").read_text()
    assert "| **overall** | mean over items | **0.000** |" in card and "Not measured yet." not in card
    train_reference.write_card(tmp_path, record, [])
    assert "Not measured yet." in (tmp_path / "README.md").read_text()
