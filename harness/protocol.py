"""The measurement protocol: what state the server is in when requests are measured.

The competition starts a fresh server, sends every item of a secret suite once, and sums the
energy. A benchmark that re-sends the same prompts (repeats, `--samples K`, a warm-up over suite
items) measures prefix-cache and multimodal-cache hits instead: those requests skip most of the
prefill and the vision encoder and look cheaper than anything the competition will charge. And a
server that has never run a batch stalls on its first ones (kernel JIT, e.g. the top-k/top-p
sampling kernel), while the GPU idles. So:

* warm-up items are *noise twins* of suite items -- same prompt text, same image size and format,
  random pixels -- so they exercise the same shapes without putting any suite content into a cache;
* the warm-up runs at the run's concurrency, in rounds, until per-request latency has settled;
* between passes over the same items the server's prefix, multimodal and encoder caches are reset
  (vLLM exposes POST /reset_prefix_cache, /reset_mm_cache, /reset_encoder_cache when started with
  VLLM_SERVER_DEV_MODE=1; verified in vLLM 0.23.0 and 0.32.0), and every request records how many
  prompt tokens came from the cache (`--enable-prompt-tokens-details`).
"""

from __future__ import annotations

import asyncio
import enum
import io
import json
import statistics
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from harness import proxies
from harness.suite import SuiteItem


class Protocol(enum.Enum):
    """`measured`: a launched server with the cache instrumentation below, warm-up at the run's
    concurrency, caches reset between passes. `competition`: the server launched as the organisers do
    (`vllm serve MODEL --config vllm_config.yaml`), every item once on a fresh server (cold), then the
    same suite again after a warm-up and a cache reset (warm); both totals are reported."""

    MEASURED = "measured"
    COMPETITION = "competition"


# Instrumentation added to a launched server. Neither changes what the server computes: the flag adds
# `prompt_tokens_details.cached_tokens` to the usage report, the variable exposes the cache-reset routes.
# Both go on the command line / environment, so vllm_config.yaml stays the team's file byte for byte.
INSTRUMENTATION_FLAGS = ("--enable-prompt-tokens-details",)
INSTRUMENTATION_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
CACHE_RESET_ROUTES = ("reset_prefix_cache", "reset_mm_cache", "reset_encoder_cache")


def noise_twin(item: SuiteItem, seed: int) -> SuiteItem:
    """The item with its image replaced by seeded uniform noise of the same size, mode and format.

    Same prompt and image-token count, so the warm-up compiles and captures what the measured
    requests will use; pixels no cache has seen, so no measured request hits a warm-up's cache entry."""
    with Image.open(io.BytesIO(item.image_bytes)) as image:
        size, mode, fmt = image.size, image.mode, (image.format or "PNG")
    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands()) if mode not in ("1", "P") else 1
    pixels = rng.integers(0, 256, size=(size[1], size[0], bands), dtype=np.uint8)
    noise = Image.fromarray(pixels[:, :, 0] if bands == 1 else pixels, "L" if bands == 1 else None)
    if noise.mode != mode and mode not in ("1", "P"):
        noise = noise.convert(mode)
    out = io.BytesIO()
    noise.save(out, format=fmt)
    return replace(item, id=f"warmup-{seed}-{item.id}", image_bytes=out.getvalue(), references=())


def warmup_items(items: Sequence[SuiteItem], n: int, seed: int = 0) -> list[SuiteItem]:
    """`n` noise twins, cycling through the suite's items in order (the suite interleaves its tasks,
    so any prefix covers every task's prompt shape)."""
    if not items:
        return []
    return [noise_twin(items[i % len(items)], seed * 1_000_003 + i) for i in range(n)]


@dataclass(frozen=True)
class CacheReset:
    """What one reset call achieved, per route: True (reset), False (refused, e.g. blocks in use),
    None (no such route: the server does not expose it)."""

    routes: dict[str, bool | None]

    @property
    def complete(self) -> bool:
        return all(self.routes.get(r) for r in ("reset_prefix_cache", "reset_mm_cache"))

    def describe(self) -> str:
        return ", ".join(f"{r}: {'ok' if v else 'refused' if v is False else 'not offered'}"
                         for r, v in self.routes.items())


def reset_caches(base_url: str, api_key: str | None = None, timeout_s: float = 30.0) -> CacheReset:
    """POST the cache-reset routes of a vLLM server (`base_url` with or without /v1)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    routes: dict[str, bool | None] = {}
    for route in CACHE_RESET_ROUTES:
        request = urllib.request.Request(f"{root}/{route}", data=b"", method="POST", headers=headers)
        try:
            with proxies.urlopen(request, timeout=timeout_s) as response:
                body = response.read()
            # reset_prefix_cache answers {"success": bool} (false while blocks are in use); the others 200.
            answer = json.loads(body) if body.strip() else {}
            routes[route] = bool(answer.get("success", True)) if isinstance(answer, dict) else True
        except urllib.error.HTTPError as exc:
            routes[route] = None if exc.code in (404, 405) else False
        except (OSError, ValueError):
            routes[route] = False
    return CacheReset(routes)


MIN_ROUND_REQUESTS = 4  # one at a time, a round of one request would judge latency on a single sample


@dataclass(frozen=True)
class SettleRule:
    """Warm-up rounds of `concurrency` requests until the median latency of a round is within
    `tolerance` of the previous round's, at least `min_rounds` rounds, at most `max_requests`."""

    tolerance: float = 0.10
    min_rounds: int = 2

    def describe(self) -> str:
        return (f"rounds of max(concurrency, {MIN_ROUND_REQUESTS}) requests, at most <concurrency> in flight; "
                f"settled when a round's median end-to-end latency is within {self.tolerance:.0%} of the "
                f"previous round's (at least {self.min_rounds} rounds)")


@dataclass
class WarmupReport:
    requests: int = 0
    rounds: int = 0
    round_median_e2e_s: list[float] = field(default_factory=list)
    failed: int = 0
    settled: bool = False
    rule: str = ""

    def to_dict(self) -> dict:
        return {"requests": self.requests, "rounds": self.rounds, "round_median_e2e_s": self.round_median_e2e_s,
                "failed": self.failed, "settled": self.settled, "rule": self.rule}


def settled(medians: Sequence[float], rule: SettleRule) -> bool:
    """Pure: has the latency settled, judging by the per-round medians so far?"""
    if len(medians) < max(rule.min_rounds, 2):
        return False
    previous, last = medians[-2], medians[-1]
    return previous > 0 and abs(last - previous) / previous <= rule.tolerance


async def warm_up(send: Callable[[SuiteItem], Awaitable[tuple[bool, float]]], items: Sequence[SuiteItem],
                  concurrency: int, rule: SettleRule = SettleRule()) -> WarmupReport:
    """Send `items` in rounds of `concurrency` concurrent requests until latency settles or the items run
    out. `send(item)` returns (ok, end-to-end seconds); nothing of the warm-up is recorded as measured."""
    report = WarmupReport(rule=rule.describe())
    size = max(MIN_ROUND_REQUESTS, concurrency)
    in_flight = asyncio.Semaphore(max(1, concurrency))

    async def limited(item: SuiteItem) -> tuple[bool, float]:
        async with in_flight:
            return await send(item)

    for start in range(0, len(items), size):
        results = await asyncio.gather(*(limited(item) for item in items[start:start + size]))
        report.requests += len(results)
        report.rounds += 1
        report.failed += sum(not ok for ok, _ in results)
        latencies = [e2e for ok, e2e in results if ok]
        if latencies:
            report.round_median_e2e_s.append(statistics.median(latencies))
        if settled(report.round_median_e2e_s, rule):
            report.settled = True
            break
    return report
