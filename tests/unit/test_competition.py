"""competition.json: written and read through the store as a typed result; the lines `bench run
--protocol competition` prints come from it."""

from __future__ import annotations

import json

import pytest

from harness.competition import competition_lines
from harness.results import CompetitionResult, PassTotals
from harness.store import read_competition, write_competition


def _result(warm_j: float | None) -> CompetitionResult:
    return CompetitionResult(variant="fp8", suite="default", concurrency=16,
                             cold=PassTotals("cold", 168, 168, 40.0, 7200.0, flags=("stall: 2 request(s)",)),
                             warm=PassTotals("warm", 168, 168, 30.0, warm_j, unavailable_reason=None),
                             server_command=["vllm", "serve", "m", "--config", "c.yaml"],
                             cache_reset_between_passes={"reset_prefix_cache": True})


def test_the_file_keeps_its_format_and_reads_back_equal(tmp_path):
    result = _result(3600.0)
    write_competition(tmp_path, result)
    stored = json.loads((tmp_path / "competition.json").read_text())
    assert stored["cold"]["total_wh"] == 2.0 and stored["warm"]["total_wh"] == 1.0
    assert stored["cold_minus_warm_j"] == 3600.0 and stored["cold_over_warm"] == 2.0
    assert stored["protocol"] == "competition" and stored["cold"]["flags"] == ["stall: 2 request(s)"]
    assert read_competition(tmp_path) == result
    assert competition_lines(tmp_path) == [
        "competition replay of fp8 on default at concurrency 16:",
        "  cold: 168 requests, 7200.0 J = 2.0000 Wh in 40.0 s",
        "  warm: 168 requests, 3600.0 J = 1.0000 Wh in 30.0 s",
        "  cold - warm: +3600.0 J (+100.0%)",
    ]


@pytest.mark.parametrize("warm_j", [None, 0.0])
def test_no_difference_without_both_totals_and_no_ratio_over_zero(tmp_path, warm_j):
    write_competition(tmp_path, _result(warm_j))
    stored = json.loads((tmp_path / "competition.json").read_text())
    assert "cold_over_warm" not in stored
    assert ("cold_minus_warm_j" in stored) == (warm_j is not None)
    lines = competition_lines(tmp_path)
    assert lines[-1] == ("  cold - warm: +7200.0 J" if warm_j is not None else
                         "  warm: 168 requests, energy unavailable (None)")
