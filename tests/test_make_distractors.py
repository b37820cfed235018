"""The distractor builder on a tiny folder of real image files (no apt): deterministic by seed,
duplicates (the same picture at another size) written once, excluded source paths and contents
never taken, large images cut into distinct tiles, SOURCES.csv's columns and licences."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_distractors.py"
spec = importlib.util.spec_from_file_location("make_distractors", SCRIPT)
assert spec and spec.loader
md = importlib.util.module_from_spec(spec)
sys.modules["make_distractors"] = md  # its dataclass looks its module up
spec.loader.exec_module(md)


def pattern(path: Path, seed: int, size: tuple[int, int] = (300, 200)) -> Path:
    """A textured picture (random blocks, upscaled) that no other seed repeats."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(path)
    return path


@pytest.fixture()
def source(tmp_path: Path) -> tuple[list[tuple[str, str]], Path]:
    src = tmp_path / "pkg"
    src.mkdir()
    files = [pattern(src / f"img{i}.png", i) for i in range(8)]
    # the same picture as img0 at twice the size, as a JPEG: a duplicate by content
    Image.open(files[0]).resize((600, 400), Image.Resampling.NEAREST).save(src / "img0_big.jpg")
    make_image(src / "tiny.jpg", (40, 30), seed=3)  # under min_side
    Image.new("RGB", (300, 300), (200, 200, 200)).save(src / "blank.png")
    pattern(src / "wall.png", 99, (1100, 1100))  # large: cut into 2 x 2 tiles of 550 px
    names = sorted(p.name for p in src.iterdir())
    return [("pkg", str(src / n)) for n in names], src


def read_sources(folder: Path) -> list[dict[str, str]]:
    with open(folder / "SOURCES.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_deterministic_by_seed(tmp_path: Path, source: tuple[list, Path]) -> None:
    files, _src = source
    a = md.build(tmp_path / "a", 6, "artworks", 1, files, min_side=64, tile_side=1024)
    b = md.build(tmp_path / "b", 6, "artworks", 1, files, min_side=64, tile_side=1024)
    c = md.build(tmp_path / "c", 6, "artworks", 2, files, min_side=64, tile_side=1024)
    assert a == b and a["written"] == 6 == c["written"]
    rows_a, rows_b = read_sources(tmp_path / "a"), read_sources(tmp_path / "b")
    assert rows_a == rows_b
    for row in rows_a:
        assert (tmp_path / "a" / row["file"]).read_bytes() == (
            tmp_path / "b" / row["file"]
        ).read_bytes()
    assert [r["source_path"] for r in read_sources(tmp_path / "c")] != [
        r["source_path"] for r in rows_a
    ]


def test_duplicates_small_blank_skipped_and_tiles_distinct(
    tmp_path: Path, source: tuple[list, Path]
) -> None:
    files, src = source
    counts = md.build(tmp_path / "o", 100, "artworks", 0, files, min_side=64, tile_side=1024)
    rows = read_sources(tmp_path / "o")
    paths = [r["source_path"] for r in rows]
    # 8 patterns (img0 or its big copy, whichever comes first) + 4 tiles of the wall
    assert counts["written"] == len(rows) == 8 + 4
    assert counts["duplicate"] == 1 and counts["small"] == 1 and counts["blank"] == 1
    assert sum(p.endswith(("img0.png", "img0_big.jpg")) for p in paths) == 1
    tiles = sorted(p.split("#tile=")[1] for p in paths if "#tile=" in p)
    assert tiles == sorted(f"{r},{c}" for r in range(2) for c in range(2))
    assert str(src / "wall.png") not in paths  # a large image is used as tiles only
    hashes = {md.content_hash(Image.open(tmp_path / "o" / r["file"])) for r in rows}
    assert len(hashes) == len(rows)
    for r in rows:
        img = Image.open(tmp_path / "o" / r["file"])
        assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= 512


def test_excluded_paths_and_contents_never_taken(tmp_path: Path, source: tuple[list, Path]) -> None:
    files, src = source
    listing = tmp_path / "demo.csv"
    listing.write_text(f"id,source_path\nx,{str(src / 'img1.png').lstrip('/')}\n")
    exclude = md.excluded_paths([listing])
    assert exclude == {str(src / "img1.png")}
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    Image.open(src / "img2.png").save(bundled / "copy_of_img2.jpg", quality=95)
    hashes = md.excluded_hashes([bundled])
    counts = md.build(
        tmp_path / "o", 100, "artworks", 0, files, exclude, hashes, min_side=64, tile_side=4096
    )
    paths = [r["source_path"] for r in read_sources(tmp_path / "o")]
    assert counts["excluded"] == 1
    assert str(src / "img1.png") not in paths and str(src / "img2.png") not in paths
    assert str(src / "img3.png") in paths


def test_sources_columns_and_licence(tmp_path: Path, source: tuple[list, Path]) -> None:
    files, _src = source
    md.build(tmp_path / "o", 2, "drawings", 0, files, min_side=64)
    with open(tmp_path / "o" / "SOURCES.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["file", "source_package", "source_path", "licence"]
    assert all(r["file"].startswith("dxd_") for r in read_sources(tmp_path / "o"))
    doc = tmp_path / "doc"
    (doc / "dep5").mkdir(parents=True)
    (doc / "dep5" / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: debian/*\nCopyright: x\nLicense: GPL-2+\n\n"
        "Files: *\nCopyright: y\nLicense: CC-BY-SA-3.0\n"
    )
    (doc / "old").mkdir()
    (doc / "old" / "copyright").write_text("Released under the GNU GPL-2 or later.\n")
    assert md.licence_of("dep5", doc) == "CC-BY-SA-3.0"
    assert md.licence_of("old", doc) == "GPL-2"
    (doc / "empty").mkdir()  # a bare `License:` line, the text below it
    (doc / "empty" / "copyright").write_text(
        "Copyright (C) 2003 by someone\nLicense:\n  see /usr/share/common-licenses/GPL-2\n"
    )
    assert md.licence_of("empty", doc) == "GPL-2"
    assert md.licence_of("absent", doc) == "unknown"
