"""Synthetic load-test suites: distinct images drawn from a seed, written as an ordinary suite folder
(`bench synthetic-suite FOLDER`, then `bench run --suite FOLDER`), or handed over as suite items
(benchmarks/client_capacity.py)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.errors import ConfigError
from harness.suite import SuiteItem


@dataclass(frozen=True)
class SyntheticImages:
    """Load-test images: `count` distinct images of `width` x `height` in `fmt` (png | jpeg | webp)."""

    count: int
    width: int = 512
    height: int = 512
    fmt: str = "png"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1 or self.width < 1 or self.height < 1 or self.width * self.height > 64_000_000:
            raise ConfigError("synthetic images need a count ≥ 1 and a size between 1x1 and 64 megapixels")
        if self.fmt not in ("png", "jpeg", "webp"):
            raise ConfigError(f"synthetic image format must be png, jpeg or webp, not '{self.fmt}'")

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> SyntheticImages:
        """'COUNT[xWIDTHxHEIGHT][:FORMAT]', e.g. '100x640x480:jpeg'."""
        size, _, fmt = text.partition(":")
        try:
            numbers = [int(v) for v in size.lower().split("x")]
        except ValueError:
            raise ConfigError(f"synthetic images: '{text}' is not COUNT[xWIDTHxHEIGHT][:FORMAT]") from None
        if len(numbers) not in (1, 3):
            raise ConfigError(f"synthetic images: '{text}' is not COUNT[xWIDTHxHEIGHT][:FORMAT]")
        return cls(numbers[0], *numbers[1:], fmt=(fmt or "png").lower(), seed=seed)


def synthetic_image(spec: SyntheticImages, index: int) -> bytes:
    """Image `index`: smooth gradients plus per-image noise, so every image (and every tile a server
    might hash for its multimodal cache) differs, while PNG still compresses like a photo, not like noise."""
    rng = np.random.default_rng([spec.seed, index])
    y, x = np.mgrid[0:spec.height, 0:spec.width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    base = np.stack([127 + 100 * np.sin(x / (17 + 13 * c) + y / (29 + 7 * c) + phase[c]) for c in range(3)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format=spec.fmt.upper(), **({"quality": 90} if spec.fmt != "png" else {}))
    return out.getvalue()


def synthetic_suite_items(spec: SyntheticImages, prompt: str = "Describe this image in one sentence."):
    """SuiteItems for a load test (quality is not the point: each item's reference is a placeholder)."""
    mime = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}[spec.fmt]
    items = []
    for i in range(spec.count):
        data = synthetic_image(spec, i)
        items.append(SuiteItem(id=f"synthetic-{i:05d}-{hashlib.sha256(data).hexdigest()[:8]}", task="synthetic",
                               metric="contains", prompt=prompt, references=("",), image_bytes=data, image_mime=mime))
    return tuple(items)


def write_synthetic_suite(folder: Path, spec: SyntheticImages, max_tokens: int = 32) -> int:
    """A suite folder (suite.yaml + data.parquet) of synthetic images for load tests, loaded like any
    other suite (`bench run --suite FOLDER`, and `--resume` finds it again). Returns the item count."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = synthetic_suite_items(spec)
    pd.DataFrame([{"id": i.id, "task": i.task, "metric": i.metric, "question": i.prompt, "answers": list(i.references),
                   "image": {"bytes": i.image_bytes, "path": None}} for i in items]).to_parquet(folder / "data.parquet")
    (folder / "suite.yaml").write_text(
        f"name: synthetic-{spec.count}x{spec.width}x{spec.height}-{spec.fmt}\n"
        f"description: synthetic load-test images (seed {spec.seed}), distinct pixels per image\n"
        "data: {format: parquet, path: data.parquet}\n"
        "columns: {id: id, image: image, prompt: question, references: answers, task: task, metric: metric}\n"
        f"max_tokens: {max_tokens}\n")
    return len(items)
