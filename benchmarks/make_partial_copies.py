"""A partial-copy development set built from real images only: details cut from the bundled real
artworks (`drawmatch/demo_data`, the same images as the shared xdomain-dev set), plus the set's
whole-drawing queries unchanged.

Each detail is a rectangle of an artwork at one of several sizes (a fraction of the artwork's side,
`--fractions`) and a random position, rejected and redrawn when it is mostly flat background; it is
scaled up so that its longer side is `--side` pixels (a drawing is never a 60-pixel thumbnail) and
some are passed through the style effects of `drawmatch.styles` (pencil, watercolour, gray) to look
drawn. Sources are drawn at random among every artwork whose shorter side is at least `--min-side`.

Writes under OUT:
- `drawings/`: the detail images (`detail_000.jpg`, ...) and copies of the whole drawings;
- `pairs.csv` (all queries), `pairs_details.csv`, `pairs_whole.csv`: `drawing_id, artwork_id`;
- `details.csv`: `id, artwork_id, fraction, style, x0, y0, x1, y1` (box in fractions of the source).
The artworks are the data's own folder (`DATA/artworks`), used in place. Deterministic by seed.

    python benchmarks/make_partial_copies.py OUT [--count 120] [--seed 0]
    drawmatch ingest out=RUN drawings_root=OUT/drawings artworks_root=drawmatch/demo_data/artworks
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from drawmatch.styles import apply_style

STYLES = ("original", "pencil", "watercolor", "gray")


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


def make(
    data: Path,
    out: Path,
    count: int,
    seed: int,
    fractions: tuple[float, ...],
    side: int,
    min_side: int,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    (out / "drawings").mkdir(parents=True, exist_ok=True)
    artworks = sorted((data / "artworks").glob("*.jpg"))
    sizes = {p: Image.open(p).size for p in artworks}
    sources = [p for p in artworks if min(sizes[p]) >= min_side]
    rows = []
    for i in range(count):
        src = sources[int(rng.integers(len(sources)))]
        fraction = fractions[i % len(fractions)]
        style = STYLES[(i // len(fractions)) % len(STYLES)]
        img = np.asarray(Image.open(src).convert("RGB"))
        crop, box = cut_detail(img, fraction, rng)
        scale = side / max(crop.shape[:2])
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))
        if style != "original":
            big = apply_style(big, style)
        did = f"detail_{i:03d}"
        Image.fromarray(big).save(out / "drawings" / f"{did}.jpg", quality=90)
        rows.append((did, src.stem, fraction, style, *[round(v, 4) for v in box]))
    details = pd.DataFrame(
        rows, columns=["id", "artwork_id", "fraction", "style", "x0", "y0", "x1", "y1"]
    )
    whole = pd.read_csv(data / "pairs.csv", dtype=str)[["drawing_id", "artwork_id"]]
    for drawing in sorted(set(whole["drawing_id"])):
        shutil.copyfile(data / "drawings" / f"{drawing}.jpg", out / "drawings" / f"{drawing}.jpg")
    detail_pairs = details.rename(columns={"id": "drawing_id"})[["drawing_id", "artwork_id"]]
    details.to_csv(out / "details.csv", index=False)
    detail_pairs.to_csv(out / "pairs_details.csv", index=False)
    whole.to_csv(out / "pairs_whole.csv", index=False)
    pd.concat([detail_pairs, whole]).to_csv(out / "pairs.csv", index=False)
    return details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1] / "drawmatch/demo_data"
    )
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.65])
    parser.add_argument("--side", type=int, default=320)
    parser.add_argument("--min-side", type=int, default=96)
    args = parser.parse_args(argv)
    details = make(
        args.data, args.out, args.count, args.seed, tuple(args.fractions), args.side, args.min_side
    )
    counts = details.groupby(["fraction", "style"]).size().unstack(fill_value=0)
    print(f"{len(details)} details of {details['artwork_id'].nunique()} artworks in {args.out}")
    print(counts.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
