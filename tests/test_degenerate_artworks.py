"""Artworks that give no local features (blank, one colour, one pixel wide, a thin strip) are valid
artworks: extracted, written and read back with zero keypoints; an unreadable one is an error row
with its reason. Through the real embed, index and regions jobs, counts add up and verified search
answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.jobs import embed, evaluate, index, regions, search
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.regions import RegionsConfig, write_features_part
from drawmatch.jobs.search import SearchConfig
from drawmatch.models.local_features import LocalFeatureExtractor, extract, read_features
from tests.conftest import hand_catalogue


def _blocks(seed: int, cells: int = 16, cell: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 256, (cells, cells, 3)), np.ones((cell, cell, 1), np.int64))
    return blocks.astype(np.uint8)


# (height, width, value): None is random blocks (keypoints); a number fills the image with it
DEGENERATE = {
    "blank": (300, 300, 255),
    "black": (300, 300, 0),
    "onecolour": (200, 260, 131),
    "onepixelwide": (400, 1, None),
    "onepixeltall": (1, 400, None),
    "strip": (8, 4000, None),
    "tower": (4000, 8, None),
    "dot": (1, 1, None),
}


def _write(folder: Path, name: str, h: int, w: int, value: int | None, seed: int = 0) -> Path:
    if value is None:
        pixels = np.resize(_blocks(seed, 8, 8), (h, w, 3))
    else:
        pixels = np.full((h, w, 3), value, np.uint8)
    path = folder / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return path


def _extract_and_write(
    folder: Path, names: list[str], kind: str, out_dir: Path, max_pixels: int = 10**8
) -> dict:
    """One extractor batch of `names` (files in `folder`) written as one part; the write's rows."""
    batch = {
        "id": np.asarray(names, dtype=object),
        "root": np.asarray(["r"] * len(names), dtype=object),
        "path": np.asarray([f"{n}.png" for n in names], dtype=object),
        "sha256": np.asarray([f"sha-{n}" for n in names], dtype=object),
    }
    extracted = LocalFeatureExtractor({"r": str(folder)}, kind, 200, 300, max_pixels)(batch)
    return write_features_part(extracted, str(out_dir))


@pytest.mark.parametrize("kind", ["sift", "orb"])
def test_artworks_without_keypoints_are_written_and_read_back(tmp_path, kind):
    for name, (h, w, value) in DEGENERATE.items():
        _write(tmp_path, name, h, w, value)
    Image.fromarray(_blocks(1)).save(tmp_path / "textured.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    names = [*DEGENERATE, "textured", "broken"]
    store = tmp_path / "out" / "local_features" / f"{kind}-200"
    rows = _extract_and_write(tmp_path, names, kind, store)
    # every artwork went in and came out: written, or an error row with its reason
    assert rows["id"].tolist() == names
    assert rows["ok"].tolist() == [True] * (len(names) - 1) + [False]
    assert rows["error"][-1] == "not an image"
    stored = read_features(tmp_path / "out", kind, 200)
    assert sorted(stored) == sorted(names[:-1])
    assert all(len(stored[n].keypoints) == 0 for n in DEGENERATE)
    assert len(stored["textured"].keypoints) > 10
    dim = 128 if kind == "sift" else 32
    assert stored["blank"].descriptors.shape == (0, dim)


def test_an_image_over_the_pixel_limit_is_an_error_row(tmp_path):
    Image.fromarray(_blocks(2)).save(tmp_path / "large.png")  # 256 x 256
    Image.fromarray(_blocks(3)[:100, :100]).save(tmp_path / "small.png")
    store = tmp_path / "local_features" / "sift-200"
    rows = _extract_and_write(tmp_path, ["large", "small"], "sift", store, 150 * 150)
    assert rows["ok"].tolist() == [False, True]
    assert rows["error"].tolist() == ["decompression bomb", ""]
    assert list(read_features(tmp_path, "sift", 200)) == ["small"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    h=st.integers(1, 600),
    w=st.integers(1, 600),
    value=st.one_of(st.none(), st.integers(0, 255)),
    kind=st.sampled_from(["sift", "orb"]),
    seed=st.integers(0, 3),
)
def test_any_image_size_and_content_round_trips_through_the_store(
    tmp_path, h, w, value, kind, seed
):
    folder = tmp_path / f"{kind}-{h}x{w}-{value}-{seed}"
    folder.mkdir()
    path = _write(folder, "art", h, w, value, seed)
    want = extract(Image.open(path).convert("RGB"), kind, 200, 300)
    rows = _extract_and_write(folder, ["art"], kind, folder / "local_features" / f"{kind}-200")
    assert rows["ok"].tolist() == [True]
    got = read_features(folder, kind, 200)["art"]
    np.testing.assert_array_equal(got.keypoints, want.keypoints)
    np.testing.assert_array_equal(got.descriptors, want.descriptors)
    assert (got.width, got.height) == (want.width, want.height)
    assert max(got.width, got.height) == 200 and min(got.width, got.height) >= 1


def test_the_jobs_finish_on_degenerate_artworks_and_verified_search_answers(
    ray_local, tmp_path, capsys
):
    arts, draws = tmp_path / "a", tmp_path / "d"
    arts.mkdir()
    draws.mkdir()
    art_files = [_write(arts, n, h, w, v) for n, (h, w, v) in DEGENERATE.items()]
    for i in range(3):
        big = _blocks(10 + i)
        Image.fromarray(big).save(arts / f"art{i}.png")
        art_files.append(arts / f"art{i}.png")
    Image.fromarray(_blocks(11)[:128, :128]).save(draws / "detail1.png")
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(draws / "empty.png")
    out = tmp_path / "out"
    hand_catalogue(
        out, {"drawing": [draws / "detail1.png", draws / "empty.png"], "artwork": art_files}
    )
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    embedded = embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny]))
    assert embedded.embedded == len(art_files) + 2 and not embedded.errors
    index.run(IndexConfig(out=str(out)))
    (arts / "art2.png").write_bytes(b"broken since it was embedded")
    result = regions.run(RegionsConfig(out=str(out), region_size=64, levels=(1, 2), overlap=0.0))
    n = len(art_files)
    # every artwork went in; all but the broken one came out, which is counted in each stage
    assert result.selected == n and result.embedded == n - 1 and result.features_extracted == n - 1
    assert result.errors == {"not an image": 2}
    assert result.index_size == (n - 1) * result.regions_per_artwork
    stored = read_features(out, "sift", 800)
    gallery = cat.gallery_ids(cat.read_catalogue(out))
    assert sorted(stored) == sorted(set(gallery) - {"art2"})
    assert all(len(stored[name].keypoints) == 0 for name in DEGENERATE)
    # the broken artwork does not make the region index stale: every mode still answers
    found = search.run(SearchConfig(out=str(out), query="detail1", k=n, mode="verified"))
    assert found["artwork_id"].iloc[0] == "art1" and found["inliers"].iloc[0] >= 10
    assert set(found["artwork_id"]) == {p.stem for p in art_files}
    for mode in ("region", "fused"):
        assert len(search.run(SearchConfig(out=str(out), query="detail1", k=n, mode=mode))) == n
    blank = search.run(SearchConfig(out=str(out), query="empty", k=3, mode="verified"))
    assert len(blank) == 3 and (blank["inliers"] == 0).all()
    # a drawing whose file broke since it was embedded is left out of a verified batch, counted
    (draws / "empty.png").write_bytes(b"\x89PNG broken")
    target = search.run(SearchConfig(out=str(out), batch=True, k=2, mode="verified"))
    assert sorted(pd.read_parquet(target)["drawing_id"].unique()) == ["detail1"]
    said = capsys.readouterr().out.splitlines()[-1]
    assert "for 1 drawings written" in said
    assert said.endswith("1 left out, image unreadable: {'not an image': 1}")
    with pytest.raises(ValueError, match=r"query image .*empty\.png: not an image"):
        search.run(SearchConfig(out=str(out), query="empty", k=3, mode="verified"))
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"drawing_id": ["detail1", "empty"], "artwork_id": ["art1", "art0"]}).to_csv(
        pairs, index=False
    )
    with pytest.raises(ValueError, match=r"^query image .*empty\.png: not an image"):
        evaluate.run(EvaluateConfig(out=str(out), pairs_csv=str(pairs), mode="verified"))
