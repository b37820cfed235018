"""Pseudo-pairs: "drawn" renditions of the artworks themselves, for a self-supervised stage of
fine-tuning before the real drawing-artwork pairs (the offline counterpart of the thesis' extra
pairs from a related task).

Every gallery artwork yields renditions of itself and of its details: one effect (the five style
effects of `drawmatch.augment.styles`, a line drawing `edges`, a colour quantisation `quantise`), applied
to the whole image or to a crop of a detail, then a small perspective warp. The rendition is an
anchor whose only positive is its parent artwork; no annotation is used, so the stage can run on
the whole artwork collection.

A `Rendition` is a plan (parent, effect, crop box, warp offsets) drawn from a seeded generator, so a
rendition can be logged, drawn again and tested; `render` turns it into pixels (RGB `uint8`
(H, W, 3) in and out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from drawmatch.augment.styles import STYLE_FUNCTIONS, StyleParams

# Effects that turn an artwork into a "drawn" pseudo-anchor: the five styles, line drawings and
# colour quantisation.
PSEUDO_EFFECTS = ("oil", "watercolor", "texture", "gray", "pencil", "edges", "quantise")
DEFAULT_PARAMS = StyleParams()


@dataclass(frozen=True)
class Rendition:
    """One pseudo-anchor: `effect` applied to the `crop` box (x0, y0, x1, y1, fractions of the
    parent's width and height) of artwork `parent_id`, then the four corners moved by `warp`
    (8 fractions of the crop's width/height: dx, dy of top-left, top-right, bottom-right,
    bottom-left). `index` numbers the renditions of one parent."""

    parent_id: str
    index: int
    effect: str
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    warp: tuple[float, ...] = (0.0,) * 8

    @property
    def id(self) -> str:
        return f"{self.parent_id}~pseudo-{self.effect}-{self.index}"

    @property
    def is_detail(self) -> bool:
        return self.crop != (0.0, 0.0, 1.0, 1.0)


def plan_renditions(
    parent_ids: Sequence[str],
    per_artwork: int,
    rng: np.random.Generator,
    effects: Sequence[str] = PSEUDO_EFFECTS,
    detail_share: float = 0.3,
    min_crop: float = 0.4,
    warp: float = 0.08,
) -> list[Rendition]:
    """`per_artwork` renditions of every parent, in parent order: an effect drawn uniformly from
    `effects`; with probability `detail_share` a detail, a crop whose sides are fractions drawn in
    [`min_crop`, 1) of the parent's at a uniform position (else the whole image); corner offsets
    drawn uniformly in [-`warp`, `warp`]."""
    unknown = [e for e in effects if e not in PSEUDO_EFFECTS]
    if unknown or not effects:
        raise ValueError(f"unknown pseudo effect(s) {unknown}; choose from {PSEUDO_EFFECTS}")
    if per_artwork < 1:
        raise ValueError(f"per_artwork must be >= 1, got {per_artwork}")
    out = []
    for parent in parent_ids:
        for k in range(per_artwork):
            effect = str(effects[int(rng.integers(len(effects)))])
            crop = (0.0, 0.0, 1.0, 1.0)
            if rng.random() < detail_share:
                w, h = rng.uniform(min_crop, 1.0, size=2)
                x0, y0 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
                crop = (float(x0), float(y0), float(x0 + w), float(y0 + h))
            offsets = tuple(float(v) for v in rng.uniform(-warp, warp, size=8)) if warp else None
            out.append(Rendition(str(parent), k, effect, crop, offsets or (0.0,) * 8))
    return out


def renditions_frame(renditions: Sequence[Rendition]) -> pd.DataFrame:
    """One row per rendition: `id`, `parent_id`, `effect`, `detail` (a crop or not), `crop`."""
    return pd.DataFrame(
        {
            "id": [r.id for r in renditions],
            "parent_id": [r.parent_id for r in renditions],
            "effect": [r.effect for r in renditions],
            "detail": [r.is_detail for r in renditions],
            "crop": [r.crop for r in renditions],
        }
    )


def edges(img: np.ndarray) -> np.ndarray:
    """A line drawing: Canny edges of the blurred luma (thresholds 0.66 and 1.33 x its median),
    thickened by one 2x2 dilation, as black lines on white, three equal channels."""
    gray = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (5, 5), 0)
    median = float(np.median(gray))
    lines = cv2.Canny(gray, int(max(0, 0.66 * median)), int(min(255, 1.33 * median) or 255))
    lines = cv2.dilate(lines, np.ones((2, 2), np.uint8))
    return cv2.cvtColor(255 - lines, cv2.COLOR_GRAY2RGB)


def quantise(img: np.ndarray, levels: int = 4) -> np.ndarray:
    """Flat colours: a 5x5 median filter, then each channel cut into `levels` equal bins, each
    bin painted with its centre value (e.g. levels=4: 0-63 -> 32, 64-127 -> 96, ...)."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    smooth = cv2.medianBlur(img, 5)
    width = 256.0 / levels
    bins = np.minimum((smooth / width).astype(np.int32), levels - 1)
    return np.clip((bins + 0.5) * width, 0, 255).astype(np.uint8)


def apply_effect(img: np.ndarray, effect: str, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """One pseudo effect on an RGB uint8 (H, W, 3) image -> RGB uint8 of the same shape."""
    if effect == "edges":
        return edges(img)
    if effect == "quantise":
        return quantise(img)
    if effect in STYLE_FUNCTIONS:
        return STYLE_FUNCTIONS[effect](img, params)
    raise ValueError(f"unknown pseudo effect {effect!r}; choose from {PSEUDO_EFFECTS}")


def render(
    img: np.ndarray, rendition: Rendition, params: StyleParams = DEFAULT_PARAMS
) -> np.ndarray:
    """The pixels of `rendition` from its parent's pixels `img` (RGB uint8 (H, W, 3)): crop, effect,
    warp (the area the warp uncovers is white, like paper). Returns RGB uint8 (h, w, 3), the crop's
    size."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {img.dtype} {img.shape}")
    height, width = img.shape[:2]
    x0, y0, x1, y1 = rendition.crop
    left, top = int(round(x0 * width)), int(round(y0 * height))
    right = max(left + 1, int(round(x1 * width)))
    bottom = max(top + 1, int(round(y1 * height)))
    part = np.ascontiguousarray(img[top:bottom, left:right])
    out = apply_effect(part, rendition.effect, params)
    if any(rendition.warp):
        h, w = out.shape[:2]
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        shift = np.array(rendition.warp, dtype=np.float32).reshape(4, 2)
        moved = (corners + shift * np.array([w, h], dtype=np.float32)).astype(np.float32)
        matrix = cv2.getPerspectiveTransform(corners, moved)
        out = cv2.warpPerspective(
            out, matrix, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255)
        )
    return out
