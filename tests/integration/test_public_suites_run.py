"""Public suites replayed with `bench run` against the mock server answering like Gemma 4 does."""

import json
import urllib.request

import pandas as pd
import pytest

from harness.client import build_request
from harness.config import Sampling, load_suite_spec
from harness.scoring.metrics import score_answers
from harness.suite import load_suite
from tests.conftest import bench
from tests.public_suites import PUBLISHED, write_hub_cache

# DocVQA stand-in rows ask "What is the date {x} on form i?" with answers "1i May" / "May 1i".
GEMMA_DOCVQA = [
    {"match": "form 0?", "content": "<|channel>thought\n<channel|>**10 May**"},  # empty thought block: 1
    {"match": "form 1?", "reasoning": "The header says the date is June 3", "content": "May 11."},  # 1
    {"match": "form 2?", "reasoning": "12 May", "content": "The form is dated in the spring"},  # 0: reasoning unscored
    {"match": "form 3?", "content": "<|channel>thought\nThe date must be 13 May", "finish": "length"},  # cut: 0
]


def test_docvqa_answers_like_gemma_are_scored_on_the_answer_only(mock_server, tmp_path):
    cache = tmp_path / "cache"
    write_hub_cache(cache, "docvqa", rows=4)
    server = mock_server()
    server.control(mode="gemma", script=GEMMA_DOCVQA)
    result = bench("run", "--base-url", server.url, "--results-dir", tmp_path, "--idle-s", "0", "--suite", "docvqa",
                   "--run-id", "doc", env={"BENCH_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    requests = pd.read_parquet(tmp_path / "doc" / "requests.parquet").set_index("item_id")
    assert requests.loc[["q0", "q1", "q2", "q3"], "score"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert requests.loc["q3", "finish_reason"] == "length"
    assert "June" not in requests.loc["q1", "output_text"]  # reasoning is not the answer
    summary = json.loads((tmp_path / "doc" / "summary.json").read_text())
    assert summary["quality"]["by_task"] == {"docvqa": 0.5}
    assert summary["quality"]["truncated_share_by_task"] == {"docvqa": 0.25}
    body = server.received()[0]
    assert body["max_tokens"] == 32 and body["messages"][0]["role"] == "user"
    assert body["messages"][0]["content"][1]["text"].endswith("\nAnswer the question using a single word or phrase.")


def sse_answer(url: str, request: dict) -> str:
    """The streamed content of one chat request: the body the harness builds, sent as is."""
    body = {k: v for k, v in request.items() if k != "extra_body"} | request.get("extra_body", {})
    post = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"}, method="POST")
    parts = []
    with urllib.request.urlopen(post, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("data: {"):
                parts += [c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"]]
    return "".join(parts)


def test_every_public_suite_replays_and_scores_through_the_hub_path(mock_server, tmp_path, monkeypatch):
    """Every stand-in loaded through the Hub path, two items each built into requests by the
    harness, sent to the mock server (a real process), and the answers scored."""
    monkeypatch.setenv("BENCH_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server = mock_server("--answer", "A")
    for name in sorted(PUBLISHED):
        write_hub_cache(tmp_path / "cache", name, rows=6)
        suite = load_suite(load_suite_spec(name), limit=2)
        answers = [sse_answer(server.url, build_request(item, "mock", Sampling(), suite.spec.max_tokens, seed=1))
                   for item in suite.items]
        assert answers == ["A", "A"], name
        scores = score_answers(suite.items[0].metric, answers, [i.references for i in suite.items])
        for item, score in zip(suite.items, scores, strict=True):
            if item.metric == "multiple_choice":  # "A" is right exactly when A is the answer
                assert score == float(item.references[0] == "A"), name
            else:  # "A" answers none of the others (captions: "a" is in every reference, so idf 0)
                assert score == 0.0, (name, score)
    bodies = server.received()
    assert len(bodies) == 2 * len(PUBLISHED) and {b["max_tokens"] for b in bodies} == {16, 32, 64, 128}


@pytest.mark.parametrize("suite", ["docvqa"])
def test_a_renamed_column_stops_bench_run_with_one_line(suite, mock_server, tmp_path):
    cache = tmp_path / "cache"
    write_hub_cache(cache, suite, rename={"question": "query"})
    server = mock_server()
    result = bench("run", "--base-url", server.url, "--results-dir", tmp_path, "--idle-s", "0", "--suite", suite,
                   env={"BENCH_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'question' is not a column of the dataset (it has: questionId, query," in result.stderr
