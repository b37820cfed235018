"""Make a scan-like collection for benchmarks: the bundled real dev images (drawmatch/demo_data
drawings and artworks), scaled up and placed on paper-coloured, slightly noisy off-white canvases of
several megapixels, saved as archival-style JPEGs named like IMAJ files
`YEAR_AGEGROUP_UID_COUNTRY_SIDE_QUALITY.jpg` (rectos `R` and a few versos `V`, qualities `C`/`A`).

    python benchmarks/make_scans.py OUT_DIR --count 24 [--megapixels 7.5] [--seed 0]

Deterministic for a given seed. By default canvases are 3750x2500 (9.4 MP; a quarter of them
portrait, 2500x3750); `--megapixels M` makes 3:2 canvases of about M megapixels instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO = Path(__file__).resolve().parents[1] / "drawmatch" / "demo_data"
AGE_GROUPS = ("3-5", "6-9", "10-13", "14-17", "18-25", "MS")
COUNTRIES = ("BLG", "FRA", "JPN", "BRA", "IND", "KEN", "POL", "MEX", "VNM", "EGY")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def source_images() -> list[Path]:
    """Bundled real images, drawings and artworks interleaved, in a fixed order."""
    drawings = sorted(p for p in (DEMO / "drawings").iterdir() if p.suffix.lower() in IMAGE_EXTS)
    artworks = sorted(p for p in (DEMO / "artworks").iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not drawings and not artworks:
        raise FileNotFoundError(f"no bundled images under {DEMO}")
    out: list[Path] = []
    for i in range(max(len(drawings), len(artworks))):
        if i < len(drawings):
            out.append(drawings[i])
        if i < len(artworks):
            out.append(artworks[i])
    return out


DEFAULT_SIZE = (3750, 2500)


def canvas_size(megapixels: float | None, portrait: bool) -> tuple[int, int]:
    """(width, height) of a 3:2 canvas: 3750x2500 (9.4 MP, the size of the decode figures in
    docs/design.md) when `megapixels` is None, else about `megapixels` (7.5 -> 3354x2236)."""
    if megapixels is None:
        w, h = DEFAULT_SIZE
    else:
        h = round(math.sqrt(megapixels * 1e6 / 1.5))
        w = round(h * 1.5)
    return (h, w) if portrait else (w, h)


def paper(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Off-white paper (H, W, 3) uint8: a warm tint, slow shading and fine grain."""
    w, h = size
    tint = np.array([238, 232, 216], np.float32) + np.float32(rng.normal(0, 4))
    tint += rng.normal(0, 1.5, 3).astype(np.float32)
    shade = rng.normal(0, 5, (6, 9)).astype(np.float32)
    shade_img = np.asarray(
        Image.fromarray(shade, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32
    )
    grain = rng.integers(-5, 6, size=(h, w, 1), dtype=np.int16).astype(np.float32)
    arr = tint[None, None, :] + shade_img[:, :, None] + grain
    return np.clip(arr, 0, 255).astype(np.uint8)


def recto(src: Path, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    canvas = Image.fromarray(paper(size, rng))
    with Image.open(src) as im:
        art = im.convert("RGB")
    w, h = size
    fill = rng.uniform(0.7, 0.88)
    scale = min(w * fill / art.width, h * fill / art.height)
    art = art.resize(
        (max(1, int(art.width * scale)), max(1, int(art.height * scale))), Image.BICUBIC
    )
    x = int(rng.integers(w // 40, max(w // 40 + 1, w - art.width - w // 40)))
    y = int(rng.integers(h // 40, max(h // 40 + 1, h - art.height - h // 40)))
    canvas.paste(art, (x, y))
    return canvas


def verso(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """The back of a sheet: paper with a few lines of illegible pen strokes (no real text)."""
    canvas = Image.fromarray(paper(size, rng))
    draw = ImageDraw.Draw(canvas)
    w, h = size
    ink = (40, 45, 90)
    for line in range(int(rng.integers(4, 9))):
        y = h // 10 + line * h // 14
        x = w // 12
        while x < w * 0.7:
            seg = int(rng.integers(w // 60, w // 15))
            pts = [(x + k * seg / 8, y + float(rng.normal(0, h / 300))) for k in range(9)]
            draw.line(pts, fill=ink, width=max(2, w // 900))
            x += seg + int(rng.integers(w // 120, w // 50))
    return canvas


def make_scans(
    out_dir: str | Path, count: int, megapixels: float | None = None, seed: int = 0
) -> list[Path]:
    """Write `count` scan-like JPEGs (quality 90) to `out_dir`; returns their paths.
    Every sixth file is the verso of the preceding recto's sheet (same name but the side);
    qualities are C or A."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = source_images()
    order = rng.permutation(len(sources))
    written: list[Path] = []
    uid = 1000 + int(rng.integers(0, 9000))
    name_parts: tuple[int, str, str] = (2004, "10-13", "FRA")
    quality = "C"
    for i in range(count):
        is_verso = i % 6 == 5
        portrait = i % 4 == 3
        size = canvas_size(megapixels, portrait)
        if is_verso:
            year, age, country = name_parts
            image = verso(size, rng)
            side = "V"
        else:
            uid += int(rng.integers(1, 40))
            year = int(rng.integers(1994, 2021))
            age = AGE_GROUPS[int(rng.integers(0, len(AGE_GROUPS)))]
            country = COUNTRIES[int(rng.integers(0, len(COUNTRIES)))]
            name_parts = (year, age, country)
            image = recto(sources[int(order[i % len(order)])], size, rng)
            side = "R"
        if not is_verso:
            quality = "C" if i % 3 else "A"
        path = out / f"{year}_{age}_{uid}_{country}_{side}_{quality}.jpg"
        image.save(path, format="JPEG", quality=90)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument(
        "--megapixels",
        type=float,
        default=None,
        help="canvas size in megapixels, 3:2 (default: 3750x2500, 9.4 MP)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_scans(args.out_dir, args.count, args.megapixels, args.seed)
    print(f"wrote {len(paths)} scans to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
