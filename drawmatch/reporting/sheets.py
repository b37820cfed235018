"""Contact sheets: rows of labelled thumbnails as one image (the demo's `contact_sheet.jpg`).

Labels are wrapped to the tile's width and never cut, so a full id always shows; a legend above
the rows says what the frames and numbers mean. A tile of a region-mode result (partial copies)
carries the matched box: a magenta frame, lined with white so that it shows on dark and light
artworks alike, drawn around that part of the artwork without covering it, and one legend line
saying what it means. Also makes the thumbnails the report embeds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from drawmatch.core import storage
from drawmatch.core.images import ImageError, open_image

THUMB = 180
GAP = 10
PAD = 4
FONT_SIZE = 12
LINE = FONT_SIZE + 3
ANNOTATED = (30, 140, 60)
OTHER = (190, 190, 190)
QUERY = (40, 80, 160)
MATCH_BOX = (212, 20, 140)
BOX_LEGEND = (
    "Magenta frame on an artwork: the part of it that matches the drawing (region search: the "
    "artwork's window closest to the drawing; verified: where the drawing's matched keypoints "
    "lie); no frame: the artwork as a whole matches best. It shows where to look, not an exact "
    "outline."
)


@dataclass(frozen=True)
class Tile:
    """One thumbnail: `label` lines (split by "\\n") are each wrapped to the tile width.
    `kind`: `annotated` (framed green), `query` (framed blue) or `other`."""

    path: str
    label: str
    kind: str = "other"
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1: fractions of the image


@lru_cache(maxsize=4)
def font(size: int = FONT_SIZE) -> Any:
    return ImageFont.load_default(size=size)


def wrap(text: str, width: int, size: int = FONT_SIZE) -> list[str]:
    """Lines of `text` that each fit `width` pixels: broken at spaces, `_` and `-` where it can
    and inside a word where it must; every character is kept."""
    f = font(size)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for ch in paragraph:
            if f.getlength(line + ch) <= width or not line:
                line += ch
                continue
            cut = max(line.rfind(" "), line.rfind("_"), line.rfind("-"))
            if cut >= len(line) // 3:
                lines.append(line[: cut + 1].rstrip())
                line = line[cut + 1 :].lstrip() + ch
            else:
                lines.append(line)
                line = ch
        lines.append(line)
    return lines


def thumbnail(path: str, size: int, upscale: bool = True) -> Image.Image:
    """The image at `path` fitted in a `size` square (aspect kept; a smaller image is enlarged
    only if `upscale`); a grey card naming the problem if it cannot be read."""
    try:
        img = open_image(path, draft_size=size)
        if not upscale and max(img.size) <= size:
            return img
        return ImageOps.contain(img, (size, size))
    except ImageError as exc:
        card = Image.new("RGB", (size, size), (235, 235, 235))
        ImageDraw.Draw(card).text((6, size // 2), exc.reason, fill="red", font=font())
        return card


def whole_image(box: tuple[float, ...], slack: float = 0.02) -> bool:
    """Whether a matched box is the whole image (its best window is the artwork itself): such a
    box is not drawn, the artwork as a whole is the match."""
    x0, y0, x1, y1 = box
    return x0 <= slack and y0 <= slack and x1 >= 1 - slack and y1 >= 1 - slack


def box_pixels(
    box: tuple[float, float, float, float], width: int, height: int, left: int = 0, top: int = 0
) -> tuple[int, int, int, int]:
    """The pixel rectangle (x0, y0, x1, y1, inclusive) of a box given in fractions of an image of
    `width` x `height` pasted at (`left`, `top`); clipped to the image, at least 5 px a side."""
    fx0, fy0, fx1, fy1 = (min(max(float(v), 0.0), 1.0) for v in box)
    x0, x1 = left + round(fx0 * width), left + round(fx1 * width) - 1
    y0, y1 = top + round(fy0 * height), top + round(fy1 * height) - 1
    x1, y1 = max(x1, x0 + 4), max(y1, y0 + 4)
    return x0, y0, min(x1, left + width - 1), min(y1, top + height - 1)


def _tile_image(tile: Tile, label_lines: int) -> Image.Image:
    lines = wrap(tile.label, THUMB - 2 * PAD)
    canvas = Image.new("RGB", (THUMB, THUMB + PAD + label_lines * LINE), "white")
    img = thumbnail(tile.path, THUMB - 12)
    left, top = (THUMB - img.width) // 2, (THUMB - img.height) // 2
    canvas.paste(img, (left, top))
    draw = ImageDraw.Draw(canvas)
    if tile.box is not None:
        x0, y0, x1, y1 = box_pixels(tile.box, img.width, img.height, left, top)
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline="white", width=1)
        draw.rectangle([x0, y0, x1, y1], outline=MATCH_BOX, width=2)
        draw.rectangle([x0 + 2, y0 + 2, x1 - 2, y1 - 2], outline="white", width=1)
    colour = {"annotated": ANNOTATED, "query": QUERY}.get(tile.kind, OTHER)
    draw.rectangle(
        [0, 0, THUMB - 1, THUMB - 1], outline=colour, width=1 if tile.kind == "other" else 5
    )
    for i, line in enumerate(lines):
        draw.text((PAD, THUMB + PAD + LINE * i), line, fill="black", font=font())
    return canvas


def _legend(lines: list[str], width: int) -> Image.Image:
    wrapped = [w for line in lines for w in wrap(line, width - 2 * GAP - 40, FONT_SIZE + 1)]
    img = Image.new("RGB", (width, GAP * 2 + (LINE + 1) * len(wrapped)), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    y = GAP
    for line in wrapped:
        draw.text((GAP, y), line, fill="black", font=font(FONT_SIZE + 1))
        y += LINE + 1
    return img


def contact_sheet(
    rows: list[list[Tile]], target: str | Path, legend: list[str] | None = None
) -> str:
    """Write one row of thumbnails per list of tiles, under a legend (lines of text), as JPEG; with
    the line saying what the magenta frame means when a tile carries a matched box."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    if any(t.box is not None for row in rows for t in row):
        legend = [*(legend or []), BOX_LEGEND]
    width = max(len(r) for r in rows) * (THUMB + GAP) + GAP
    row_lines = [max(len(wrap(t.label, THUMB - 2 * PAD)) for t in row) for row in rows]
    head = _legend(legend, width) if legend else None
    top = head.height if head else 0
    heights = [THUMB + PAD + n * LINE for n in row_lines]
    sheet = Image.new("RGB", (width, top + sum(heights) + GAP * (len(rows) + 1)), (245, 245, 245))
    if head:
        sheet.paste(head, (0, 0))
    y = top + GAP
    for row, lines, height in zip(rows, row_lines, heights):
        for c, tile in enumerate(row):
            sheet.paste(_tile_image(tile, lines), (GAP + c * (THUMB + GAP), y))
        y += height + GAP
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=90)
    storage.write_bytes(target, buffer.getvalue())
    return str(target)


def result_tiles(
    query_path: str, query_label: str, results: Any, paths: dict[str, str]
) -> list[Tile]:
    """One row of tiles for a search result: the query (blue frame), then each ranked artwork
    (`results`: a table with `rank`, `artwork_id`, `distance` and, from a region mode, `inliers`
    and `box_x0`..`box_y1`), with its matched box when it has one."""
    import math

    row = [Tile(query_path, f"query\n{query_label}", "query")]
    for r in results.to_dict("records"):
        label = f"#{r['rank']} · distance {r['distance']:.3f}"
        if int(r.get("inliers", -1) or -1) >= 0:
            label += f" · {int(r['inliers'])} keypoints"
        label += f"\n{r['artwork_id']}"
        box = tuple(float(r.get(c, math.nan)) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        ok = not any(math.isnan(v) for v in box) and not whole_image(box)
        row.append(Tile(paths[str(r["artwork_id"])], label, box=box if ok else None))  # type: ignore[arg-type]
    return row
