#!/usr/bin/env python3
"""bf16-vs-FP8 table from run folders: J/request, J/output-token, above-idle J/request,
latency and throughput per (variant, concurrency), mean ± standard deviation over repeats.

    python benchmarks/variant_table.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.finalize import open_run as load_run
from harness.report.columns import VARIANTS as COLUMNS


def main(paths: list[Path]) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    gpu = set()
    for path in paths:
        run = load_run(path)
        if not run.summary.energy.available:
            continue
        key = (run.manifest.variant.name if run.manifest.variant else "?", run.manifest.concurrency)
        groups[key].append(run.summary)
        gpu.update(g.name for g in (run.manifest.meter.gpus if run.manifest.meter else ()))
    print(f"GPU: {', '.join(sorted(gpu)) or 'n/a'}")
    print("| variant | in flight | runs | " + " | ".join(column.heading for column in COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for (variant, concurrency), summaries in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for column in COLUMNS:
            values = np.array([v for v in map(column.get, summaries) if v is not None], dtype=float)
            cells.append("n/a" if len(values) == 0 else
                         f"{values.mean():.3g} ± {values.std(ddof=1):.2g}" if len(values) > 1 else f"{values[0]:.3g}")
        print(f"| {variant} | {concurrency} | {len(summaries)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main([Path(p) for p in sys.argv[1:]])
