"""The template values the workbench's pages show: artwork cards, drawing-artwork pairs with
their decision and region box, the search modes' names."""

from __future__ import annotations

from typing import Any

from drawmatch.data.annotations import Decision
from drawmatch.reporting.sheets import whole_image
from drawmatch.serve.data import RegionHit, Workbench

MODE_NAMES = {
    "global": "whole image",
    "region": "best region",
    "fused": "whole image + regions",
    "verified": "fused + keypoint check",
}


def box_view(hit: RegionHit | None) -> dict[str, Any]:
    """The template values of a region hit's box: CSS percentages of the artwork's thumbnail
    (`box`: left, top, width, height; None where the score came from the whole image, which
    needs no frame) and the evidence behind it (the keypoint count only where there is one)."""
    if hit is None:
        return {"box": None, "inliers": None, "verified": False}
    box = None
    if hit.box is not None and not whole_image(hit.box):
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in hit.box)
        box = {
            "left": round(100 * x0, 2),
            "top": round(100 * y0, 2),
            "width": round(100 * (x1 - x0), 2),
            "height": round(100 * (y1 - y0), 2),
        }
    return {"box": box, "inliers": hit.inliers, "verified": hit.verified}


def artwork_card(wb: Workbench, artwork: str) -> dict[str, Any]:
    """An artwork's id, artist and title."""
    row = wb.row(artwork)
    return {"id": artwork, "artist": row.get("artist", ""), "title": row.get("title", "")}


def pair_view(
    wb: Workbench,
    drawing: str,
    artwork: str,
    rank: int | None,
    dist: float | None,
    tag: str,
    current: Decision | None,
    history: int,
    hit: RegionHit | None = None,
) -> dict[str, Any]:
    """A drawing-artwork pair as `_pair.html` shows it: the artwork, where a model ranked it,
    its current decision and how many decisions it has had."""
    view = artwork_card(wb, artwork)
    view.update(
        drawing=drawing, rank=rank, distance=dist, model=tag, current=current, history=history
    )
    view.update(box_view(hit))
    return view


def history_counts(history: list[Decision]) -> dict[str, int]:
    """Decisions per artwork."""
    counts: dict[str, int] = {}
    for d in history:
        counts[d.artwork_id] = counts.get(d.artwork_id, 0) + 1
    return counts
