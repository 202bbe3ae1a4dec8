"""The work loop's pure parts (loop.py): pass-by-pass order, what is left to send, warm-up plans."""

from dataclasses import replace

import pandas as pd

from harness.config import RunSettings, load_suite_spec
from harness.loop import RunSpec, finished_keys, request_seed, warmup_plan, work_units
from harness.results import mark_retried
from harness.suite import Suite, SuiteItem


def item(i: int) -> SuiteItem:
    return SuiteItem(id=f"i{i}", task="t", metric="exact_match", prompt="p", references=("x",), image_bytes=b"",
                     image_mime="image/png")


SUITE = Suite(spec=None, items=tuple(item(i) for i in range(3)), content_hash="h")


def test_passes_run_item_complete_and_done_pairs_are_skipped():
    units = work_units(SUITE, 2, done={("i1", 0)})
    assert [u.key for u in units] == [("i0", 0), ("i2", 0), ("i0", 1), ("i1", 1), ("i2", 1)]
    assert len({request_seed(7, u) for u in units}) == len(units)


def test_transient_final_attempts_are_sent_again():
    rows = pd.DataFrame({"item_id": ["i0", "i1", "i1"], "sample_index": 0, "status": ["ok", "ok", "timeout"],
                         "segment": 0, "seq": [0, 1, 2]})
    assert finished_keys(mark_retried(rows)) == {("i0", 0)}


def test_warmup_plan_cycles_the_callers_items_up_to_n():
    spec = RunSpec(suite=load_suite_spec("default"), settings=RunSettings(results_dir=".", run_id="r", warmup=5))
    items, source = warmup_plan(replace(spec, warmup_items=[item(9), item(8)]), SUITE)
    assert source == "spec" and [i.id for i in items] == ["i9", "i8", "i9", "i8", "i9"]
