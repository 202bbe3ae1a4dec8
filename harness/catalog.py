"""What can be run: the variants and suites that `bench variants` and `bench suites` list, and the
synthetic load-test suites that `bench synthetic-suite` writes. Each returns the lines the CLI prints."""

from __future__ import annotations

from pathlib import Path

from harness.config import list_suites, list_variants, load_suite_spec, load_variant
from harness.suite import describe, load_suite, open_table
from harness.synthetic import SyntheticImages, write_synthetic_suite


def variant_lines() -> list[str]:
    lines = []
    for path in list_variants():
        v = load_variant(str(path))
        quant = v.vllm.get("quantization") or ("fp8 (checkpoint)" if v.dummy_model and v.dummy_model.layout == "fp8"
                                                else "-")
        lines.append(f"{v.name:<10} kv-cache {v.vllm.get('kv_cache_dtype', 'auto'):<5} quantization {quant:<17} "
                     f"{v.description}")
    return lines


def suite_lines(names: tuple[str, ...] = ()) -> list[str]:
    """Metric, max_tokens and data source of each suite (Hub suites are not downloaded); local suites
    also with item counts per task."""
    lines = []
    for source in names or [str(p) for p in list_suites()]:
        spec = load_suite_spec(source)
        line = f"{spec.name:<16} {spec.default_metric:<17} max_tokens {spec.max_tokens:<4} {describe(spec)}"
        if spec.data_format == "hub" and spec.local_copy:  # counting rows decodes no image
            line += f"  {open_table(spec).num_rows} rows"
        elif spec.data_format != "hub":
            suite = load_suite(spec)
            tasks = ", ".join(f"{task} {n}" for task, n in suite.task_counts().items())
            line += f"  {len(suite.items)} items ({tasks}) sha256 {suite.content_hash[:12]}"
        lines.append(line + (f"  [{spec.origin}]" if spec.origin else ""))
    return lines


def synthetic_suite_lines(folder: Path, images: str, seed: int = 0, max_tokens: int = 32) -> list[str]:
    """Write a synthetic suite (`images`: COUNT[xWIDTHxHEIGHT][:FORMAT]) into `folder`."""
    n = write_synthetic_suite(folder, SyntheticImages.parse(images, seed=seed), max_tokens)
    return [f"{n} synthetic item(s) in {folder}"]
