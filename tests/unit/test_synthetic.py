"""Synthetic load-test images: distinct, seeded, as asked."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from harness.errors import ConfigError
from harness.synthetic import SyntheticImages, synthetic_suite_items


def test_synthetic_images_are_distinct_and_as_asked():
    spec = SyntheticImages.parse("3x64x48:jpeg", seed=5)
    items = synthetic_suite_items(spec)
    assert len({i.image_bytes for i in items}) == 3 and len({i.id for i in items}) == 3
    image = Image.open(io.BytesIO(items[0].image_bytes))
    assert (image.format, image.size, items[0].image_mime) == ("JPEG", (64, 48), "image/jpeg")
    assert synthetic_suite_items(spec)[1].image_bytes == items[1].image_bytes  # seeded
    assert SyntheticImages.parse("10") == SyntheticImages(10)
    for bad in ("x", "3x4", "0", "2x8x8:gif"):
        with pytest.raises(ConfigError):
            SyntheticImages.parse(bad)
