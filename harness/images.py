"""Suite images as servers will decode them (pure: bytes in, bytes out).

Images travel as the dataset's original bytes when a server decodes them to the same pixels:
PNG, JPEG and WebP in 1/L/LA/P/RGB/RGBA modes without an EXIF rotation. Anything else is converted
once, here, to PNG (lossless), and the item records what was done (`converted_from`): other
formats (BMP, TIFF, ...), CMYK or 16-bit images (to 8-bit RGB / L: PIL's own conversion would clip
16-bit values), EXIF orientation (applied: servers decode pixels without it), and images above
the suite's `max_image_pixels` when `large_images: downscale` (Lanczos, aspect ratio kept;
the default policy `refuse` stops with a one-line error instead)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from harness.errors import SuiteError

SENDABLE = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
PLAIN_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}  # decoded by servers (PIL .convert("RGB")) as they are


def _to_8bit(img):
    """16/32-bit grey levels to 8 bits by their range (PIL's convert('L') clips at 255)."""
    array = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(np.rint(array * 255.0 / top), 0, 255).astype(np.uint8), mode="L")


def prepare_image(raw: bytes, item_id: str, max_pixels: int, large: str) -> tuple[bytes, str, str | None]:
    """The bytes to send, their MIME type, and what was done to them (None: the original)."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            fmt, mode, (width, height) = img.format, img.mode, img.size
            too_large = width * height > max_pixels
            if too_large and large == "refuse":
                raise SuiteError(f"item {item_id}: image is {width}x{height}, over the suite's limit of "
                                 f"{max_pixels} pixels (large_images: refuse)")
            img.load()  # decodes the whole image: catches truncated files before they are sent
            orientation = img.getexif().get(0x0112, 1)
            if fmt in SENDABLE and mode in PLAIN_MODES and orientation in (0, 1) and not too_large:
                return raw, SENDABLE[fmt], None
            notes, out = [], img
            if mode not in PLAIN_MODES:
                out = _to_8bit(out) if mode.startswith("I") or mode == "F" else out.convert(
                    "RGBA" if "A" in out.getbands() else "RGB")
                notes.append(f"{mode} → {out.mode}")
            if orientation not in (0, 1):
                out = ImageOps.exif_transpose(out)
                notes.append(f"EXIF orientation {orientation} applied")
            if too_large:
                scale = math.sqrt(max_pixels / (width * height))
                size = (max(1, int(width * scale)), max(1, int(height * scale)))
                out = out.resize(size, Image.Resampling.LANCZOS)
                notes.append(f"downscaled {width}x{height} → {size[0]}x{size[1]}")
            buffer = io.BytesIO()
            out.save(buffer, format="PNG")
            return buffer.getvalue(), "image/png", f"{fmt}: {'; '.join(notes)}" if notes else fmt
    except SuiteError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SuiteError(f"item {item_id}: image cannot be decoded ({exc})") from None
