"""Contact sheets: a drawing, its styled copies and its top-k artworks, as one image."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from drawmatch import storage
from drawmatch.images import ImageError, open_image

THUMB = 160
LABEL = 28
GAP = 8
RELEVANT = (40, 160, 60)
OTHER = (200, 200, 200)


@dataclass(frozen=True)
class Tile:
    path: str
    label: str  # up to two lines, split by "\n"
    relevant: bool = False


def _thumb(tile: Tile) -> Image.Image:
    canvas = Image.new("RGB", (THUMB, THUMB + LABEL), "white")
    try:
        img = open_image(tile.path, draft_size=THUMB)
        img = ImageOps.contain(img, (THUMB - 8, THUMB - 8))
        canvas.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
    except ImageError as exc:
        ImageDraw.Draw(canvas).text((8, THUMB // 2), exc.reason, fill="red")
    draw = ImageDraw.Draw(canvas)
    colour = RELEVANT if tile.relevant else OTHER
    draw.rectangle([0, 0, THUMB - 1, THUMB - 1], outline=colour, width=4 if tile.relevant else 1)
    for i, line in enumerate(tile.label.split("\n")[:2]):
        draw.text((4, THUMB + 2 + 12 * i), line[:26], fill="black")
    return canvas


def contact_sheet(rows: list[list[Tile]], target: str | Path) -> str:
    """Write one row of thumbnails per list of tiles (relevant tiles framed in green)."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    width = max(len(r) for r in rows) * (THUMB + GAP) + GAP
    height = len(rows) * (THUMB + LABEL + GAP) + GAP
    sheet = Image.new("RGB", (width, height), (245, 245, 245))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(_thumb(tile), (GAP + c * (THUMB + GAP), GAP + r * (THUMB + LABEL + GAP)))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=90)
    storage.write_bytes(target, buffer.getvalue())
    return str(target)
