"""Scores on request tables (scoring/quality.py): only final attempts score; a final failure scores 0."""

import pandas as pd

from harness.results import mark_retried
from harness.scoring.quality import item_table, quality_summary, score_requests


def test_only_final_attempts_score_and_failures_score_zero():
    rows = pd.DataFrame({
        "item_id": ["a", "a", "b", "c"], "sample_index": 0, "task": "t", "metric": "exact_match",
        "output_text": ["wrong", "yes", "yes", ""], "references": [["yes"]] * 4,
        "status": ["http_5xx", "ok", "ok", "timeout"], "segment": 0, "seq": [0, 1, 2, 3],
    })
    scored = score_requests(mark_retried(rows))
    assert scored["score"].isna().tolist() == [True, False, False, False]
    assert scored["score"].dropna().tolist() == [1.0, 1.0, 0.0]
    q = quality_summary(scored)
    assert q.items == 3 and q.overall == 2 / 3 and q.score_sum == 2.0
    assert set(item_table(scored).index) == {"a", "b", "c"}
