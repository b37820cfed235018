"""Safe image decoding shared by ingest, augment and embed.

Every decoder returns RGB `uint8` arrays of shape (H, W, 3) or raises `ImageError` with a short,
stable reason (`zero-byte file`, `truncated`, `not an image`, `decompression bomb`, ...), so a stage
can record the reason in the catalogue and carry on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from drawmatch.core import storage

DEFAULT_MAX_PIXELS = 200_000_000


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short stable text for the catalogue."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha is composited on white, 16-bit scaled to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr8, mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBa":
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def open_image(
    path: str | Path,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> Image.Image:
    """Open, fully decode and normalise one image file to an upright RGB PIL image.

    `draft_size`: for JPEGs, decode at the smallest DCT scale whose shorter side is still
    >= `draft_size` pixels (1/2, 1/4, 1/8), much faster than a full decode of a large scan.
    `data`: the file's contents when the caller has read them already (not read again).
    """
    try:
        size = len(data) if data is not None else storage.size(path)
    except OSError as exc:
        raise ImageError("unreadable file", str(exc)) from exc
    if size == 0:
        raise ImageError("zero-byte file")
    previous = Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            source = io.BytesIO(data) if data is not None else storage.open_input(path)
            with source as fh, Image.open(fh) as img:
                if draft_size is not None and img.format == "JPEG":
                    w, h = img.size
                    scale = max(1.0, min(w, h) / float(draft_size))
                    img.draft("RGB", (int(w / scale), int(h / scale)))
                img.load()
                upright = ImageOps.exif_transpose(img)
                return _to_rgb(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("decompression bomb", str(exc)) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError("not an image", str(exc)) from exc
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        raise ImageError("unreadable file", str(exc)) from exc
    except OSError as exc:
        text = str(exc)
        low = text.lower()
        if "truncated" in low or "broken data stream" in low or "premature end" in low:
            raise ImageError("truncated", text) from exc
        raise ImageError("unreadable image", text) from exc
    except ImageError:
        raise
    except Exception as exc:  # any other decoder failure (bad EXIF, odd mode) is a reason too
        raise ImageError("unreadable image", f"{type(exc).__name__}: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
