"""A partial-copy development set built from real images only: details cut from the bundled real
artworks (`drawmatch/demo_data`, the same images as the shared xdomain-dev set), plus the set's
whole-drawing queries unchanged.

Two presets. `hard` (the default) imitates a child copying one figure of a painting on a sheet of
paper: a small detail (`--fractions`, default 15-30 % of the artwork's side, at least
`--min-crop` pixels) at a random, textured, usually off-centre position; its colours changed (hue
turned, saturation and contrast changed, so that global colour statistics no longer name the
artwork); drawn onto a plain paper-coloured sheet (50-80 % of the sheet's longer side, off-centre)
with some rotation (up to 20 degrees), scale and perspective; then passed through one of the style
effects of `drawmatch.augment.styles` (pencil, watercolour, oil, gray, or none); the photo's white backdrop becomes paper. `easy` is the first
version (larger details, 30-65 %, scaled to fill the image, some styled, colours kept): global
search already found most of them.

Source artworks are split in two halves by a seeded draw (`part`: `tune` or `test`), so settings
can be tuned on the details of one half and reported on the other (held out by source artwork).

Writes under OUT:
- `drawings/`: the detail images (`detail_000.jpg`, ...) and copies of the whole drawings;
- `pairs.csv` (all queries), `pairs_details.csv`, `pairs_details_tune.csv`,
  `pairs_details_test.csv`, `pairs_whole.csv`: `drawing_id, artwork_id`;
- `details.csv`: `id, artwork_id, part, fraction, style, x0, y0, x1, y1` (the detail's box in
  fractions of the source artwork) and, for `hard`, `angle` and `hue`.
The artworks are the data's own folder (`DATA/artworks`), used in place. Deterministic by seed.

    python benchmarks/make_partial_copies.py OUT [--preset hard] [--count 200] [--seed 0]
    drawmatch ingest out=RUN drawings_root=OUT/drawings artworks_root=drawmatch/demo_data/artworks
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from drawmatch.augment.styles import apply_style

STYLES = ("original", "pencil", "watercolor", "gray")
HARD_STYLES = ("pencil", "watercolor", "oil", "gray", "original")


def cut_detail(
    img: np.ndarray, fraction: float, rng: np.random.Generator, tries: int = 20
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A (fraction*h, fraction*w) crop of `img` at a random position with enough texture (the
    most textured of `tries` positions); returns it and its box (x0, y0, x1, y1) in fractions."""
    h, w = img.shape[:2]
    ch, cw = max(8, round(h * fraction)), max(8, round(w * fraction))
    best: tuple[float, int, int] = (-1.0, 0, 0)
    for _ in range(tries):
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y : y + ch, x : x + cw].astype(np.float32)
        texture = float(crop.std(axis=(0, 1)).mean())
        white = float((crop.min(axis=2) > 235).mean())
        score = texture * (1.0 - white)
        if score > best[0]:
            best = (score, y, x)
        if texture > 30 and white < 0.3:
            break
    _s, y, x = best
    return img[y : y + ch, x : x + cw], (x / w, y / h, (x + cw) / w, (y + ch) / h)


def recolour(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Turn the hue by 30-120 degrees either way, scale saturation (0.6-1.4) and contrast
    (0.7-1.2), shift brightness (-20..20): the same shapes in other colours, as a child's crayons
    give them. Returns the image and the hue turn in degrees."""
    import cv2

    turn = int(rng.integers(30, 121)) * int(rng.choice([-1, 1]))
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + turn / 2.0) % 180.0  # OpenCV hue is 0-179 (2 degrees a step)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    out = (out - 128.0) * rng.uniform(0.7, 1.2) + 128.0 + rng.uniform(-20, 20)
    return np.clip(out, 0, 255).astype(np.uint8), turn


def on_paper(
    crop: np.ndarray, side: int, rng: np.random.Generator, max_angle: float = 20.0
) -> tuple[np.ndarray, float]:
    """Draw `crop` on a plain paper-coloured sheet (longer side `side`, portrait or landscape)
    covering 50-80 % of the sheet's longer side, off-centre, rotated by up to `max_angle` degrees
    with a mild perspective (corners moved by up to 6 % of the detail's size). Near-white pixels
    of the crop (the photo's backdrop) become paper: only the figure is drawn. Returns the sheet
    and the angle."""
    import cv2

    aspect = rng.uniform(0.7, 1.0)
    w, h = (side, round(side * aspect)) if rng.random() < 0.5 else (round(side * aspect), side)
    paper = np.array([rng.uniform(232, 252), rng.uniform(228, 248), rng.uniform(210, 238)])
    sheet = np.empty((h, w, 3), np.float32)
    sheet[:] = paper
    sheet += rng.normal(0, 3, sheet.shape)  # the grain of the paper
    ch, cw = crop.shape[:2]
    scale = rng.uniform(0.5, 0.8) * min(w, h) / max(ch, cw)
    angle = float(rng.uniform(-max_angle, max_angle))
    corners = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    jitter = rng.uniform(-0.06, 0.06, (4, 2)) * np.array([cw, ch])
    rot = cv2.getRotationMatrix2D((cw / 2, ch / 2), angle, scale)
    moved = (corners + jitter) @ rot[:, :2].T + rot[:, 2]
    moved -= moved.min(axis=0)
    span = moved.max(axis=0)
    room = np.maximum(np.array([w, h]) - span, 1)
    moved += rng.uniform(0, 1, 2) * room  # anywhere on the sheet: off-centre as often as not
    matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    warped = cv2.warpPerspective(crop, matrix, (w, h), flags=cv2.INTER_CUBIC)
    figure = (crop.min(axis=2) < 235).astype(np.float32)
    mask = cv2.warpPerspective(figure, matrix, (w, h))[..., None]
    sheet = sheet * (1 - mask) + warped.astype(np.float32) * mask
    return np.clip(sheet, 0, 255).astype(np.uint8), angle


def split_sources(names: list[str], seed: int) -> dict[str, str]:
    """Half of the artworks `tune`, the other half `test` (seeded, independent of the details)."""
    order = np.random.default_rng(seed + 1000).permutation(sorted(names))
    return {str(a): ("tune" if i % 2 == 0 else "test") for i, a in enumerate(order)}


def make(
    data: Path,
    out: Path,
    count: int,
    seed: int,
    fractions: tuple[float, ...],
    side: int,
    min_side: int,
    preset: str = "hard",
    min_crop: int = 32,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    (out / "drawings").mkdir(parents=True, exist_ok=True)
    artworks = sorted((data / "artworks").glob("*.jpg"))
    sizes = {p: Image.open(p).size for p in artworks}
    part_of = split_sources([p.stem for p in artworks], seed)
    styles = STYLES if preset == "easy" else HARD_STYLES
    rows = []
    for i in range(count):
        fraction = fractions[i % len(fractions)]
        style = styles[(i // len(fractions)) % len(styles)]
        smallest = min_side if preset == "easy" else max(min_side, min_crop / fraction)
        sources = [p for p in artworks if min(sizes[p]) >= smallest]
        if not sources:
            raise ValueError(f"no artwork has a shorter side of {smallest:.0f} px or more")
        src = sources[int(rng.integers(len(sources)))]
        img = np.asarray(Image.open(src).convert("RGB"))
        crop, box = cut_detail(img, fraction, rng)
        angle, turn = 0.0, 0
        if preset == "easy":
            scale = side / max(crop.shape[:2])
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))
        else:
            coloured, turn = recolour(crop, rng)
            big, angle = on_paper(coloured, side, rng)
        if style != "original":
            big = apply_style(big, style)
        did = f"detail_{i:03d}"
        Image.fromarray(big).save(out / "drawings" / f"{did}.jpg", quality=85)
        rows.append(
            (did, src.stem, part_of[src.stem], fraction, style, *[round(v, 4) for v in box])
            + ((round(angle, 1), turn) if preset != "easy" else ())
        )
    columns = ["id", "artwork_id", "part", "fraction", "style", "x0", "y0", "x1", "y1"]
    details = pd.DataFrame(rows, columns=columns + (["angle", "hue"] if preset != "easy" else []))
    whole = pd.read_csv(data / "pairs.csv", dtype=str)[["drawing_id", "artwork_id"]]
    for drawing in sorted(set(whole["drawing_id"])):
        shutil.copyfile(data / "drawings" / f"{drawing}.jpg", out / "drawings" / f"{drawing}.jpg")
    detail_pairs = details.rename(columns={"id": "drawing_id"})
    details.to_csv(out / "details.csv", index=False)
    detail_pairs[["drawing_id", "artwork_id"]].to_csv(out / "pairs_details.csv", index=False)
    for part in ("tune", "test"):
        chosen = detail_pairs[detail_pairs["part"] == part][["drawing_id", "artwork_id"]]
        chosen.to_csv(out / f"pairs_details_{part}.csv", index=False)
    whole.to_csv(out / "pairs_whole.csv", index=False)
    pd.concat([detail_pairs[["drawing_id", "artwork_id"]], whole]).to_csv(
        out / "pairs.csv", index=False
    )
    return details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1] / "drawmatch/demo_data"
    )
    parser.add_argument("--preset", choices=("hard", "easy"), default="hard")
    parser.add_argument("--count", type=int, default=None, help="200 (hard) or 120 (easy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", type=float, nargs="+", default=None)
    parser.add_argument("--side", type=int, default=320)
    parser.add_argument("--min-side", type=int, default=96)
    parser.add_argument("--min-crop", type=int, default=32, help="hard: smallest detail, px")
    args = parser.parse_args(argv)
    hard = args.preset == "hard"
    count = args.count or (200 if hard else 120)
    fractions = args.fractions or ([0.15, 0.2, 0.25, 0.3] if hard else [0.3, 0.4, 0.5, 0.65])
    details = make(
        args.data,
        args.out,
        count,
        args.seed,
        tuple(fractions),
        args.side,
        args.min_side,
        args.preset,
        args.min_crop,
    )
    counts = details.groupby(["fraction", "style"]).size().unstack(fill_value=0)
    print(
        f"{len(details)} {args.preset} details of {details['artwork_id'].nunique()} artworks in "
        f"{args.out} (tune {int((details['part'] == 'tune').sum())}, test "
        f"{int((details['part'] == 'test').sum())})"
    )
    print(counts.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
