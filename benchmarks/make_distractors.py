"""A distractor gallery of real images made by other people, from Debian packages: photo- and
painting-like images (`--kind artworks`: wallpapers, backgrounds, game art and textures, sky
photographs) or drawn images that copy nothing (`--kind drawings`: clip art and stamps).

Writes `N` images into OUT (`<prefix>_00000.jpg`, ...: RGB JPEG, quality 90, longest side at most
512 px, never enlarged, transparency composited onto white) and `OUT/SOURCES.csv` with `file,
source_package, source_path, licence` (the licence as a short form read from the package's
`/usr/share/doc/<package>/copyright`).

- Deterministic by seed: the candidates (every image file the packages install, sorted) are
  shuffled by `--seed` and taken in that order.
- No two images of the same content: each image's difference hash (64 bits of a 9x8 gray
  thumbnail of the decoded pixels) is kept once, so the same picture at another resolution or
  format is skipped too; nearly blank images (gray standard deviation under 8) and small ones
  (shorter side under `--min-side`) are skipped.
- None taken from a source path of the bundled demo or dev sets (`drawmatch/demo_data/*.csv`
  name each image's path inside its package; `--exclude-csv` adds more) nor with the content of
  one of their images (`--exclude-dir`, default the bundled `artworks/` and `drawings/`).
- Large images (`--tile-side`, default 1024: both sides at least that) are cut into
  non-overlapping tiles of at least 512 px, and only the tiles are used (`source_path` ends with
  `#tile=ROW,COL`): a large wallpaper gives several distinct pictures, none contained in another.

When run as root the packages are installed with apt-get; otherwise the missing ones are named.

    python benchmarks/make_distractors.py OUT --count 2000 --kind artworks [--seed 0]
    python benchmarks/make_distractors.py OUT --count 1000 --kind drawings [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ARTWORK_PACKAGES = (
    "plasma-workspace-wallpapers",
    "gnome-backgrounds",
    "mate-backgrounds",
    "ukui-wallpapers",
    "desktop-base",
    "sway-backgrounds",
    "lomiri-wallpapers",
    "mypaint-data-extras",
    "kdegames-mahjongg-data-kf5",
    "wesnoth-1.16-data",
    "supertuxkart-data",
    "freedroidrpg-data",
    "megaglest-data",
    "hedgewars-data",
    "fillets-ng-data",
    "naev-data",
    "endless-sky-data",
    "stellarium-data",
)
DRAWING_PACKAGES = ("openclipart-png", "tuxpaint-stamps-default")
PACKAGES = {"artworks": ARTWORK_PACKAGES, "drawings": DRAWING_PACKAGES}
RASTER = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tga")
MAX_SIDE = 512
MIN_STD = 8.0
DEMO = Path(__file__).resolve().parents[1] / "drawmatch" / "demo_data"
SOURCE_COLUMNS = ("file", "source_package", "source_path", "licence")


@dataclass(frozen=True)
class Candidate:
    """One picture to take: a file of a package, whole (tile None) or one tile of it."""

    package: str
    path: str
    tile: tuple[int, int, int, int] | None = None  # row, col, rows, cols

    @property
    def source_path(self) -> str:
        if self.tile is None:
            return self.path
        return f"{self.path}#tile={self.tile[0]},{self.tile[1]}"


def installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "install ok installed" in done.stdout


def ensure_packages(packages: tuple[str, ...]) -> list[str]:
    """Install the missing packages when root; returns those still missing."""
    missing = [p for p in packages if not installed(p)]
    if missing and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
        subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL)
        missing = [p for p in packages if not installed(p)]
    return missing


def package_files(package: str, svg: bool) -> list[str]:
    """The image files a package installs, sorted."""
    listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    ends = RASTER + ((".svg",) if svg else ())
    files = [line for line in listed.stdout.splitlines() if line.lower().endswith(ends)]
    return sorted(f for f in files if os.path.isfile(f) and not os.path.islink(f))


def licence_of(package: str, doc_root: Path = Path("/usr/share/doc")) -> str:
    """A short form of the package's licence: the `License:` of its `Files: *` stanza (DEP-5),
    else its first `License:` line, else the first known licence name in the text."""
    path = doc_root / package / "copyright"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "unknown"
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, re.M):
            found = re.search(r"^License:[ \t]*(\S.*)$", stanza, re.M)
            if found:
                return found.group(1).strip()
    found = re.search(r"^License:[ \t]*(\S.*)$", text, re.M)
    if found:
        return found.group(1).strip()
    names = r"(LGPL-?[0-9.+]*|GPL-?[0-9.+]*|CC-BY-SA[0-9. -]*|CC-BY[0-9. -]*|CC0|public domain)"
    found = re.search(names, text, re.I)
    return found.group(1).strip() if found else "unknown"


@functools.lru_cache(maxsize=2)  # the tiles of a large image are taken one after another
def open_rgb(path: str) -> Image.Image:
    """The decoded image as RGB, transparency composited onto white; SVG rasterised with
    rsvg-convert (1024 px wide)."""
    if path.lower().endswith(".svg"):
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "a.png")
            subprocess.run(
                ["rsvg-convert", "-w", "1024", "-o", png, path], check=True, capture_output=True
            )
            return open_rgb(png)
    img = Image.open(path)
    img.load()
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def content_hash(img: Image.Image) -> int:
    """Difference hash: 64 bits, each whether a pixel of the 9x8 gray thumbnail is brighter
    than its right neighbour (the same picture at another size or format hashes the same)."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def tiles(size: tuple[int, int], tile_side: int) -> tuple[int, int]:
    """Rows and columns of non-overlapping tiles (each at least `tile_side // 2` px) of an image
    whose sides are both `tile_side` or more; (1, 1) for a smaller image (used whole)."""
    w, h = size
    if min(w, h) < tile_side:
        return 1, 1
    cell = tile_side // 2
    return max(1, h // cell), max(1, w // cell)


def cut(img: Image.Image, tile: tuple[int, int, int, int] | None) -> Image.Image:
    if tile is None:
        return img
    row, col, rows, cols = tile
    w, h = img.size
    box = (col * w // cols, row * h // rows, (col + 1) * w // cols, (row + 1) * h // rows)
    return img.crop(box)


def fit(img: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Downscale (never enlarge) so that the longer side is at most `max_side`."""
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def excluded_paths(csvs: list[Path]) -> set[str]:
    """Source paths (absolute) named in the `source_path` column of the given CSV files."""
    paths: set[str] = set()
    for path in csvs:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("source_path"):
                    paths.add("/" + row["source_path"].lstrip("/"))
    return paths


def excluded_hashes(dirs: list[Path]) -> set[int]:
    """Content hashes of every image in the given folders."""
    hashes = set()
    for folder in dirs:
        for path in sorted(folder.glob("*")):
            if path.suffix.lower() in RASTER:
                hashes.add(content_hash(open_rgb(str(path))))
    return hashes


def candidates(files: list[tuple[str, str]], seed: int, tile_side: int) -> Iterator[Candidate]:
    """(package, path) files in a seeded order; a large image yields its tiles in a seeded order
    in its place (its size is read from the header only)."""
    rng = np.random.default_rng(seed)
    for i in rng.permutation(len(files)):
        package, path = files[int(i)]
        try:
            size = Image.open(path).size if not path.lower().endswith(".svg") else (0, 0)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        rows, cols = tiles(size, tile_side)
        if rows * cols == 1:
            yield Candidate(package, path)
            continue
        for t in rng.permutation(rows * cols):
            yield Candidate(package, path, (int(t) // cols, int(t) % cols, rows, cols))


def build(
    out: Path,
    count: int,
    kind: str,
    seed: int = 0,
    files: list[tuple[str, str]] | None = None,
    exclude: set[str] | None = None,
    exclude_hashes: set[int] | None = None,
    min_side: int = 128,
    tile_side: int = 1024,
) -> dict[str, int]:
    """Write up to `count` images and SOURCES.csv; returns the counts (`written`, `candidates`
    seen, and skipped `excluded`, `duplicate`, `small`, `blank`, `failed`)."""
    out.mkdir(parents=True, exist_ok=True)
    every = files or []
    files = [f for f in every if f[1] not in (exclude or set())]
    seen = set(exclude_hashes or set())
    counts = dict.fromkeys(("written", "candidates", "duplicate", "small", "blank", "failed"), 0)
    counts["excluded"] = len(every) - len(files)
    prefix = "dxa" if kind == "artworks" else "dxd"
    licences: dict[str, str] = {}
    with open(out / "SOURCES.csv", "w", newline="") as sources:
        writer = csv.writer(sources)
        writer.writerow(SOURCE_COLUMNS)
        for cand in candidates(files, seed, tile_side):
            if counts["written"] >= count:
                break
            row = take(cand, out, f"{prefix}_{counts['written']:05d}.jpg", seen, counts, min_side)
            if row is not None:
                if cand.package not in licences:
                    licences[cand.package] = licence_of(cand.package)
                writer.writerow((*row, licences[cand.package]))
                sources.flush()  # a long run killed half-way keeps what it wrote
    return counts


def take(
    cand: Candidate, out: Path, name: str, seen: set[int], counts: dict[str, int], min_side: int
) -> tuple[str, str, str] | None:
    """Write the candidate as `name` unless it fails, is small, blank or already seen (counted
    in `counts`); returns its (file, package, source path) row."""
    counts["candidates"] += 1
    try:
        img = cut(open_rgb(cand.path), cand.tile)
    except (OSError, ValueError, subprocess.CalledProcessError, Image.DecompressionBombError):
        counts["failed"] += 1
        return None
    if min(img.size) < min_side:
        counts["small"] += 1
        return None
    if float(np.asarray(img.convert("L"), np.float32).std()) < MIN_STD:
        counts["blank"] += 1
        return None
    key = content_hash(img)
    if key in seen:
        counts["duplicate"] += 1
        return None
    seen.add(key)
    fit(img).save(out / name, quality=90)
    counts["written"] += 1
    return name, cand.package, cand.source_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--kind", choices=tuple(PACKAGES), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-side", type=int, default=None, help="128 (artworks), 64 (drawings)")
    parser.add_argument("--tile-side", type=int, default=1024)
    parser.add_argument("--exclude-csv", type=Path, nargs="*", default=[])
    parser.add_argument(
        "--exclude-dir", type=Path, nargs="*", default=[DEMO / "artworks", DEMO / "drawings"]
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        print("--count: must be 1 or more", file=sys.stderr)
        return 2
    packages = PACKAGES[args.kind]
    missing = ensure_packages(packages)
    if missing:
        print(f"not installed (apt-get install {' '.join(missing)}); using the others")
    svg = args.kind == "drawings" and shutil.which("rsvg-convert") is not None
    files = [(p, f) for p in packages if p not in missing for f in package_files(p, svg)]
    exclude = excluded_paths(sorted(DEMO.glob("*.csv")) + list(args.exclude_csv))
    counts = build(
        args.out,
        args.count,
        args.kind,
        args.seed,
        files,
        exclude,
        excluded_hashes(list(args.exclude_dir)),
        args.min_side or (128 if args.kind == "artworks" else 64),
        args.tile_side,
    )
    print(
        f"{counts['written']} {args.kind} in {args.out} from {len(files)} files of "
        f"{len(packages) - len(missing)} packages; skipped: {counts['excluded']} excluded paths, "
        f"{counts['duplicate']} duplicates, {counts['small']} small, {counts['blank']} blank, "
        f"{counts['failed']} failed to decode"
    )
    if counts["written"] < args.count:
        print(f"only {counts['written']} of {args.count} available", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
