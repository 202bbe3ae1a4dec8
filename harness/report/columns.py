"""The summary figures that tables show, one definition each: a column's heading and how it is read
from a run's typed `Summary`. `bench compare` and `benchmarks/variant_table.py` choose from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.results import Summary


@dataclass(frozen=True)
class Column:
    heading: str
    get: Callable[[Summary], float | None]


J_PER_REQUEST = Column("J/request", lambda s: s.energy.j_per_request_mean)
J_PER_OUTPUT_TOKEN = Column("J/output token", lambda s: s.energy.j_per_output_token)
TOTAL_J = Column("total J", lambda s: s.energy.total_j)
ABOVE_IDLE_J = Column("above-idle J", lambda s: s.energy.above_idle_j)
ABOVE_IDLE_J_PER_REQUEST = Column("above-idle J/request", lambda s: s.energy.above_idle_j_per_request_mean)
J_PER_CORRECT_ANSWER = Column("J/correct answer", lambda s: s.energy.j_per_correct_answer)
IDLE_W = Column("idle W", lambda s: s.energy.idle_power_w)
MEAN_W = Column("mean W", lambda s: s.energy.mean_power_w)
E2E_P50_S = Column("e2e p50 s", lambda s: s.latency.e2e_s.p50)
TTFT_P50_S = Column("TTFT p50 s", lambda s: s.latency.ttft_s.p50)
OUTPUT_TOKENS_PER_S = Column("output tok/s", lambda s: s.latency.output_tokens_per_s)
QUALITY = Column("quality", lambda s: s.quality.overall)

# `bench compare`: each run against the baseline.
COMPARE = (J_PER_REQUEST, J_PER_OUTPUT_TOKEN, TOTAL_J, ABOVE_IDLE_J, J_PER_CORRECT_ANSWER, E2E_P50_S, TTFT_P50_S,
           QUALITY)
# bf16 vs FP8 over repeats (benchmarks/variant_table.py, benchmarks/RESULTS.md).
VARIANTS = (J_PER_REQUEST, J_PER_OUTPUT_TOKEN, ABOVE_IDLE_J_PER_REQUEST, IDLE_W, MEAN_W, E2E_P50_S, TTFT_P50_S,
            OUTPUT_TOKENS_PER_S)
