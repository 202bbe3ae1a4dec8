#!/usr/bin/env python3
"""Tables of the protocol-truth measurements (benchmarks/gpu/measure.py): the first-seen concurrency
sweep per variant, the competition replay cold vs warm, and the protocol checks of every run.

    python benchmarks/protocol_table.py ROOT [ROOT …]   # folders holding measure.py's output

Each ROOT is one sitting (`sitting` column: its folder name); a run's card is the GPU UUID in its
manifest, so the same variant on several cards shows the card-to-card spread."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness.finalize import compute
from harness.results import J_PER_WH
from harness.store import find_runs, load_run, read_requests


def runs(root: Path):
    for folder in find_runs(root):
        yield root.name, load_run(folder)


def facts(sitting: str, run) -> dict:
    """One run's figures, analysed afresh by today's code (the stored summary may predate a check)."""
    m = run.manifest
    requests, _, summary = compute(m, read_requests(run.dir), run.power)
    e = summary.energy
    final = requests[~requests["retried"].astype(bool)]
    ok = final[final["status"] == "ok"]
    name = run.dir.name
    kind = f"competition-{name}" if run.dir.parent.name == "competition" else name
    warmup = m.segments[0].warmup if m.segments else None
    return {"sitting": sitting, "variant": m.variant.name, "card": m.meter.gpus[0].uuid[-8:],
            "kind": kind, "concurrency": m.concurrency, "requests": len(ok),
            "total_j": e.total_j, "j_first_seen": e.cache.first_seen_j_per_request_mean,
            "above_first_seen": e.cache.first_seen_above_idle_j_per_request_mean,
            "cache_hits": e.cache.cache_hit_requests, "cached_share": e.cache.cached_prompt_token_share,
            "e2e_p50": summary.latency.e2e_s.p50, "ttft_max": float(ok["ttft_s"].max()),
            "idle_w": e.idle_power_w, "idle_after_w": e.idle_after_power_w,
            "warmup": warmup.requests if warmup else 0,
            "flags": [f.split(":")[0] for f in summary.all_flags]}


def sweep_table(rows: list[dict]) -> list[str]:
    by = defaultdict(list)
    for r in rows:
        if r["kind"].startswith("sweep-"):
            by[(r["concurrency"], r["variant"])].append(r)
    variants = sorted({v for _, v in by}, key=lambda v: (v != "bf16", v))
    out = ["| in flight | " + " | ".join(f"{v} J/req (cards)" for v in variants)
           + " | " + " | ".join(f"{v} vs bf16" for v in variants[1:]) + " | "
           + " | ".join(f"{v} above idle J/req" for v in variants) + " | "
           + " | ".join(f"{v} e2e p50 s" for v in variants) + " |",
           "|---" * (1 + 4 * len(variants) - 1) + "|"]
    for level in sorted({c for c, _ in by}):
        means = {v: np.mean([r["j_first_seen"] for r in by[(level, v)]]) for v in variants if by[(level, v)]}
        cells = [f"{means[v]:.1f} ({', '.join(format(r['j_first_seen'], '.1f') for r in by[(level, v)])})"
                 if v in means else "–" for v in variants]
        deltas = [f"{means[v] / means['bf16'] - 1:+.1%}" if v in means and "bf16" in means else "–"
                  for v in variants[1:]]
        above = [f"{np.mean([r['above_first_seen'] for r in by[(level, v)]]):.1f}" if v in means else "–"
                 for v in variants]
        e2e = [f"{np.mean([r['e2e_p50'] for r in by[(level, v)]]):.2f}" if v in means else "–" for v in variants]
        out.append(f"| {level} | " + " | ".join(cells + deltas + above + e2e) + " |")
    return out


def competition_table(rows: list[dict]) -> list[str]:
    pairs = defaultdict(dict)
    for r in rows:
        if r["kind"].startswith("competition-"):
            pairs[(r["sitting"], r["variant"], r["card"])][r["kind"].split("-", 1)[1]] = r
    out = ["| sitting | variant | card | cold J (Wh) | warm J (Wh) | cold vs warm | cold TTFT max s "
           "| warm-up requests |", "|---|---|---|---|---|---|---|---|"]
    for (sitting, variant, card), p in sorted(pairs.items(), key=lambda kv: (kv[0][0], kv[0][1] != "bf16", kv[0])):
        if {"cold", "warm"} <= p.keys():
            cold, warm = p["cold"]["total_j"], p["warm"]["total_j"]
            out.append(f"| {sitting} | {variant} | …{card} | {cold:.0f} ({cold / J_PER_WH:.3f}) | {warm:.0f} "
                       f"({warm / J_PER_WH:.3f}) | {cold / warm - 1:+.1%} | {p['cold']['ttft_max']:.1f} | "
                       f"{p['warm']['warmup']} |")
    return out


def checks_table(rows: list[dict]) -> list[str]:
    out = ["| sitting | variant | card | run | requests | cache hits | cached prompt share | idle before / after W "
           "| flags |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['sitting']} | {r['variant']} | …{r['card']} | {r['kind']} | {r['requests']} | "
                   f"{r['cache_hits']} | {r['cached_share']:.1%} | {r['idle_w']:.0f} / {r['idle_after_w']:.0f} | "
                   f"{', '.join(r['flags']) or '–'} |")
    return out


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: protocol_table.py ROOT [ROOT …]")
    rows = [facts(sitting, run) for root in sys.argv[1:] for sitting, run in runs(Path(root))]
    for title, lines in (("First-seen concurrency sweep (warm server, caches reset, warm-up at each level)",
                          sweep_table(rows)),
                         ("Competition replay at 16 in flight: every item once, cold vs warm", competition_table(rows)),
                         ("Protocol checks of every run", checks_table(rows))):
        print(f"\n### {title}\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
