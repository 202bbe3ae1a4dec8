"""Scores on request tables: one `score` per final answer, and the run's quality block.

Retried attempts (a later attempt exists) carry no score; a request that finally failed scores
0, since it gave no answer. With `--samples K` every item is answered K times: the per-item mean
is the unit the gate resamples."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.results import QualitySummary, final_attempts
from harness.scoring.answers import truncated_share_by_task
from harness.scoring.metrics import score_answers


def score_requests(requests: pd.DataFrame) -> pd.DataFrame:
    out = requests.copy()
    out["score"] = np.nan
    if out.empty:
        return out
    final = out.index.isin(final_attempts(out).index)
    for metric, group in out[final].groupby("metric"):
        refs = [list(r) if r is not None else [] for r in group["references"]]
        texts, statuses = group["output_text"].fillna(""), group["status"]
        answers = [t if s == "ok" else "" for t, s in zip(texts, statuses, strict=True)]
        out.loc[group.index, "score"] = score_answers(str(metric), answers, refs)
    out.loc[final & (out["status"] != "ok"), "score"] = 0.0
    return out


def item_scores(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per item: task, mean score over its samples, spread, number of samples."""
    scored = requests[requests["score"].notna()]
    grouped = scored.groupby("item_id")
    return pd.DataFrame({
        "task": grouped["task"].first(), "mean": grouped["score"].mean(),
        "std": grouped["score"].std(ddof=1), "samples": grouped["score"].size(),
    })


def item_table(requests: pd.DataFrame) -> pd.DataFrame:
    """items.parquet: per item, the mean and spread of its score and energy over its samples."""
    final = final_attempts(requests)
    grouped = final.groupby("item_id")
    table = item_scores(requests).rename(columns={"mean": "score_mean", "std": "score_std"})
    if "energy_j" in final:
        table["energy_j_mean"] = grouped["energy_j"].mean()
        table["energy_j_std"] = grouped["energy_j"].std(ddof=1)
    return table


def quality_summary(requests: pd.DataFrame) -> QualitySummary:
    if "score" not in requests or requests["score"].isna().all():
        return QualitySummary()
    items = item_scores(requests)
    scored = requests[requests["score"].notna()]
    return QualitySummary(
        scored=int(len(scored)), items=int(len(items)), overall=float(items["mean"].mean()),
        by_task={t: float(g["mean"].mean()) for t, g in items.groupby("task")},
        metric_by_task={t: str(g["metric"].iloc[0]) for t, g in scored.groupby("task")},
        per_item_std_mean=float(items["std"].mean()) if items["samples"].max() > 1 else None,
        # answers cut by max_tokens (finish_reason "length"), per task: a loss caused by a setting
        truncated_share_by_task=truncated_share_by_task(list(scored["task"]), list(scored["finish_reason"]))
        if "finish_reason" in scored else {},
        score_sum=float(scored["score"].sum()),
    )
