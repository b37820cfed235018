"""Image renditions for people: JPEG thumbnails and view-size copies of catalogue images, cached
under `out/thumbnails/<size>/<sha256[:2]>/<sha256>.jpg` (named by content hash, so a changed image
gets a new rendition and no file name ever comes from user input).

The thumbnails job writes them in bulk; the workbench reads them and makes a missing one on demand.
Decoding goes through `drawmatch.core.images.open_image` (reduced-size JPEG decode, bomb guard).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from drawmatch.core import storage
from drawmatch.core.images import DEFAULT_MAX_PIXELS, open_image

THUMBNAILS_DIR = "thumbnails"
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def rendition_path(out: str | Path, sha256: str, size: int) -> str:
    """Where the `size`-pixel rendition of the image with content hash `sha256` is cached."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return storage.join(out, THUMBNAILS_DIR, str(int(size)), sha256[:2], f"{sha256}.jpg")


def make_rendition(
    path: str | Path,
    size: int,
    quality: int = 85,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> bytes:
    """JPEG bytes of the image at `path` (or `data`) scaled so its longer side is at most `size`."""
    img = open_image(path, draft_size=size, max_pixels=max_pixels, data=data)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def ensure_rendition(
    out: str | Path,
    source: str | Path,
    sha256: str,
    size: int,
    quality: int = 85,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, bool]:
    """The cached rendition's bytes, made and cached first if missing; (bytes, made now)."""
    target = rendition_path(out, sha256, size)
    try:
        return storage.read_bytes(target), False
    except FileNotFoundError:
        pass
    data = make_rendition(source, size, quality, max_pixels)
    storage.write_bytes(target, data)
    return data, True
