"""Image-to-text suites: a Hugging Face `datasets` dataset plus the column mapping of its YAML.

Images travel as the dataset's original bytes. PNG, JPEG and WebP are sent as they are; any
other format is converted to PNG once, here, and the item records what it was converted from."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.config import SuiteSpec
from harness.errors import SuiteError
from harness.scoring.metrics import METRICS

SENDABLE = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class SuiteItem:
    id: str
    task: str
    metric: str
    prompt: str  # the rendered prompt (template applied)
    references: tuple[str, ...]
    image_bytes: bytes
    image_mime: str
    converted_from: str | None = None


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    items: tuple[SuiteItem, ...]
    content_hash: str  # sha256 over ids, prompts, references, metrics and image bytes

    def task_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.task for i in self.items).items()))


def _inside(root: Path, relative: str) -> Path:
    """Suite data paths stay inside the suite's folder (no '../' escapes, no absolute paths)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise SuiteError(f"{relative}: path escapes the suite folder {root}")
    return path


def _load_dataset(spec: SuiteSpec):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # runs never download; a hub suite must be cached
    import datasets

    datasets.disable_progress_bars()
    try:
        if spec.data_format == "parquet":
            path = _inside(spec.root, spec.data_path)
            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            if not files or not all(f.is_file() for f in files):
                raise SuiteError(f"{spec.source}: data file {path} not found")
            return datasets.Dataset.from_parquet([str(f) for f in files])
        if spec.data_format == "disk":
            loaded = datasets.load_from_disk(str(_inside(spec.root, spec.data_path)))
            return loaded[spec.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(spec.data_path, split=spec.split)
    except SuiteError:
        raise
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ConnectionError...
        raise SuiteError(f"{spec.source}: cannot load dataset '{spec.data_path}': {exc}".splitlines()[0]) from None


def _image_bytes(value, item_id: str, spec: SuiteSpec) -> tuple[bytes, str, str | None]:
    """Original bytes and MIME type; non-sendable formats converted to PNG once."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, dict):
        raw = value.get("bytes")
        if raw is None and value.get("path"):
            raw = _inside(spec.root, value["path"]).read_bytes()
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise SuiteError(f"item {item_id}: image column holds {type(value).__name__}, not image bytes")
    if not raw:
        raise SuiteError(f"item {item_id}: image is empty")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            fmt = img.format
            width, height = img.size
            if width * height > spec.max_image_pixels:
                raise SuiteError(f"item {item_id}: image is {width}x{height}, over the suite's limit of "
                                 f"{spec.max_image_pixels} pixels")
            img.load()  # decodes the whole image: catches truncated files before they are sent
            if fmt in SENDABLE:
                return raw, SENDABLE[fmt], None
            out = io.BytesIO()
            img.convert("RGBA" if "A" in img.getbands() else "RGB").save(out, format="PNG")
            return out.getvalue(), "image/png", fmt
    except SuiteError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise SuiteError(f"item {item_id}: image cannot be decoded ({exc})") from None


def load_suite(spec: SuiteSpec, limit: int | None = None) -> Suite:
    """Load and check every item (or the first `limit`) of a suite."""
    from datasets import Image as ImageFeature

    ds = _load_dataset(spec)
    cols = spec.columns
    wanted = [c for c in (cols.id, cols.image, cols.prompt, cols.references, cols.task, cols.metric) if c]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise SuiteError(f"{spec.source}: columns: '{missing[0]}' is not a column of the dataset "
                         f"(it has: {', '.join(ds.column_names)})")
    if isinstance(ds.features.get(cols.image), ImageFeature):
        ds = ds.cast_column(cols.image, ImageFeature(decode=False))  # keep the original bytes
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise SuiteError(f"{spec.source}: the dataset has no items")

    items, seen, digest = [], set(), hashlib.sha256()
    for row in ds:
        item_id = str(row[cols.id])
        if item_id in seen:
            raise SuiteError(f"{spec.source}: item id '{item_id}' appears twice")
        seen.add(item_id)
        refs = row[cols.references] if cols.references else []
        refs = (refs,) if isinstance(refs, str) else tuple(str(r) for r in (refs or []))
        image, mime, converted = _image_bytes(row[cols.image], item_id, spec)
        item = SuiteItem(
            id=item_id, task=str(row[cols.task]) if cols.task else spec.default_task,
            metric=str(row[cols.metric]) if cols.metric else spec.default_metric,
            prompt=spec.prompt_template.format(prompt=row[cols.prompt]), references=refs,
            image_bytes=image, image_mime=mime, converted_from=converted,
        )
        if item.metric not in METRICS:
            raise SuiteError(f"item {item_id}: unknown metric '{item.metric}' (known: {', '.join(METRICS)})")
        if not item.references:
            raise SuiteError(f"item {item_id}: no reference answer, but metric '{item.metric}' needs one")
        digest.update(json.dumps([item.id, item.task, item.metric, item.prompt, item.references]).encode())
        digest.update(hashlib.sha256(image).digest())
        items.append(item)
    return Suite(spec=spec, items=tuple(items), content_hash=digest.hexdigest())
