"""The run folder on disk: torn journal tails, strict JSON, atomic writes, attempt order, typed
manifest round trips (store.py, results.py)."""

import errno
import json
import math

import pandas as pd
import pytest

from harness import store
from harness.records import RunStatus
from harness.results import Manifest, Segment, SuiteInfo, mark_retried
from harness.store import RunStore, read_request_journal, repair_tail, write_json


def manifest(run_id="r", **changes) -> Manifest:
    return Manifest(run_id=run_id, status=RunStatus.INCOMPLETE, suite=SuiteInfo("s", "src", "h" * 64, 3), **changes)


def row(item, start_ns, segment=None, seq=None, status="ok", **extra):
    return {"run_id": "r", "item_id": item, "sample_index": 0, "attempt": 1, "task": "t", "metric": "exact_match",
            "seed": 0, "start_ns": start_ns, "end_ns": start_ns + 10, "first_token_ns": start_ns + 1,
            "start_wall_s": 0.0, "end_wall_s": 0.0, "ttft_s": 0.1, "e2e_s": 0.2, "itl_mean_s": None,
            "itl_p50_s": None, "itl_p90_s": None, "itl_max_s": None, "prompt_tokens": 3, "completion_tokens": 2,
            "finish_reason": "stop", "output_text": "x", "references": ["x"], "status": status,
            "segment": segment, "seq": seq, **extra}


def test_torn_tail_is_cut_back_to_the_last_complete_line(tmp_path):
    """Issue 10 item 1: the next append must not be glued to half a line."""
    run = tmp_path / "r"
    run.mkdir()
    RunStore(run).write_manifest(manifest())
    journal = run / "requests.jsonl"
    whole = json.dumps(row("a", 1)) + "\n"
    journal.write_text(whole + whole[:37])
    opened = RunStore.open_resume(run)
    try:
        assert opened.repaired == {"requests.jsonl": 37}
        assert journal.read_text() == whole
    finally:
        opened.close()
    assert repair_tail(journal) == 0


def test_strict_json_and_no_tmp_left_on_a_full_disk(tmp_path, monkeypatch):
    """Issue 10 items 2 and 3: NaN is written as null; a failed write leaves no .tmp file."""
    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == \
        {"x": None, "y": [None, 1.0]}

    real_open = open

    def full(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            def write(_):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OSError) as info:
        write_json(tmp_path / "b.json", {"x": 1})
    assert store.is_disk_full(info.value)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_attempts_are_ordered_by_segment_and_sequence_not_by_the_clock():
    """Issue 10 item 4: after a reboot the monotonic clock restarts; the later segment's attempt
    is still the final one."""
    rows = pd.DataFrame([row("a", 9_000_000_000, segment=0, seq=0, status="timeout"),
                         row("a", 5_000, segment=1, seq=1)])
    marked = mark_retried(rows)
    final = marked[~marked["retried"]]
    assert list(final["status"]) == ["ok"] and list(final["segment"]) == [1]


def test_odd_values_from_a_server_are_kept_and_named(tmp_path):
    """Issue 10 item 3: a lone surrogate, non-string content, non-integer usage: stored, readable,
    writable to parquet, and marked in `anomaly`."""
    journal = tmp_path / "requests.jsonl"
    lines = [row("a", 1, output_text="ok \ud83d"), row("b", 2, output_text={"parts": [1]}),
             row("c", 3, completion_tokens=2.5, prompt_tokens="7")]
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines))
    frame = read_request_journal(tmp_path)
    frame.to_parquet(tmp_path / "t.parquet")  # must not raise
    assert frame.loc[0, "output_text"] == "ok \ufffd" and "surrogate" in frame.loc[0, "anomaly"]
    assert json.loads(frame.loc[1, "output_text"]) == {"parts": [1]} and "non-string" in frame.loc[1, "anomaly"]
    assert pd.isna(frame.loc[2, "completion_tokens"]) and frame.loc[2, "prompt_tokens"] == 7
    assert "completion_tokens=2.5" in frame.loc[2, "anomaly"]


def test_manifest_round_trip_and_segment_journal():
    m = manifest(segments=(Segment(0, 1.0, 5, idle_window_ns=(1, 2)),))
    m = m.with_segment(Segment(1, 2.0, 6, journal_repaired_bytes={"requests.jsonl": 3}))
    again = Manifest.from_json(json.loads(json.dumps(m.to_json())))
    assert again == m and again.segments[0].idle_window_ns == (1, 2)


def test_a_newer_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest().to_json(), "schema_version": 99}))
    with pytest.raises(Exception, match="schema 99"):
        store.read_manifest(tmp_path)
    assert not math.isnan(0.0)


def test_journal_lines_are_ascii_json_of_the_record_whatever_the_text(tmp_path):
    """The fast path (orjson) and the fallback (json.dumps, ensure_ascii) write the same values; every line is
    ASCII, so a reader in any locale reads it."""
    from harness.records import RequestRecord
    from harness.results import jsonable

    store_ = RunStore.__new__(RunStore)
    store_._seq = 0
    for text in ("plain answer", "café ☕ 😀", "lone \ud83d surrogate", "nan"):
        record = RequestRecord(**{**row("a", 1), "references": ("x",), "output_text": text, "itl_mean_s": math.nan})
        numbered, line = store_.journal_line(record)
        assert line.isascii() and line.endswith("\n")
        assert json.loads(line) == jsonable(numbered.to_dict())  # NaN as null, tuples as lists, text unchanged
