"""Batch search in the region modes as a Ray Data job: the same results as the search in the
driver, parts that a killed run leaves whole and a rerun completes without duplicates, and
drawings that do not decode counted as failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag
from drawmatch.jobs import embed, index, regions, search
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.jobs.search import SearchConfig
from drawmatch.retrieval.batch_search import parts_dir
from tests.conftest import hand_catalogue
from tests.test_regions import _quadrant_artworks

N_DRAWINGS = 24
_MAIN = "import sys; from drawmatch.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def gallery(ray_local, tmp_path_factory):
    """6 artworks of sharp random blocks (256 px) and 24 drawings: quadrant and off-grid
    details of them (as partial copies are) and whole copies, through the real embed, index and
    regions jobs with the tiny backbone."""
    root = tmp_path_factory.mktemp("batch")
    (root / "a").mkdir()
    (root / "d").mkdir()
    big = [np.kron(a, np.ones((4, 4, 1), np.uint8)) for a in _quadrant_artworks(6, seed=3)]
    for i, a in enumerate(big):
        Image.fromarray(a).save(root / "a" / f"art{i}.png")
    rng = np.random.default_rng(0)
    for n in range(N_DRAWINGS):
        art = big[n % 6]
        if n % 4 == 3:
            crop = art  # a whole copy
        else:
            y, x = rng.integers(0, 129, 2)
            crop = art[y : y + 128, x : x + 128]
        Image.fromarray(crop).save(root / "d" / f"draw{n:02d}.png")
    out = root / "out"
    hand_catalogue(
        out,
        {
            "drawing": sorted((root / "d").glob("*.png")),
            "artwork": sorted((root / "a").glob("*.png")),
        },
    )
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny]))
    index.run(IndexConfig(out=str(out)))
    regions.run(RegionsConfig(out=str(out), region_size=64, levels=(1, 2), overlap=0.0))
    return out, root


def _parts(target: str) -> list[Path]:
    return sorted(Path(parts_dir(target)).glob("part-*.parquet"))


def _each_drawing_once_in_parts_of_at_most(target: str, rows: int) -> None:
    """Every drawing's results lie in exactly one part, and no part holds more than `rows`
    drawings (a part closes at a block's end too)."""
    per_part = [set(pq.read_table(p).column("drawing_id").to_pylist()) for p in _parts(target)]
    assert all(len(ids) <= rows for ids in per_part)
    assert sorted(d for ids in per_part for d in ids) == [f"draw{n:02d}" for n in range(N_DRAWINGS)]


@pytest.mark.parametrize("mode", ["region", "fused", "verified"])
def test_ray_batch_search_equals_the_search_in_the_driver(gallery, tmp_path, mode):
    out, _root = gallery
    config = SearchConfig(out=str(out), batch=True, k=4, mode=mode, rows_per_file=5)
    catalogue = cat.read_catalogue(out)
    tag = pick_model_tag(out, None)
    driver = search.search_batch_in_driver(
        replace(config, batch_output=str(tmp_path / "driver.parquet")), catalogue, tag
    )
    target = search.run(replace(config, batch_output=str(tmp_path / "ray.parquet")))
    expected, got = pd.read_parquet(driver), pd.read_parquet(target)
    assert list(got.columns) == list(expected.columns)
    assert len(got) == N_DRAWINGS * 4
    for column in ("drawing_id", "rank", "artwork_id", "inliers", "mode", "model"):
        assert got[column].tolist() == expected[column].tolist(), column
    for column in ("distance", "score", "global_score", "region_score"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-6, atol=1e-7)
    _each_drawing_once_in_parts_of_at_most(target, 5)
    if mode == "verified":  # the details are found by their local features
        first = got[got["rank"] == 1].set_index("drawing_id")["artwork_id"]
        assert first.to_dict() == {f"draw{n:02d}": f"art{n % 6}" for n in range(N_DRAWINGS)}
    # a rerun searches nothing again; other settings remove the old parts and start over
    again = search.run(replace(config, batch_output=target))
    pd.testing.assert_frame_equal(pd.read_parquet(again), got)
    fewer = pd.read_parquet(search.run(replace(config, batch_output=target, k=2)))
    assert len(fewer) == N_DRAWINGS * 2
    _each_drawing_once_in_parts_of_at_most(target, 5)


def test_a_killed_batch_search_resumes_without_duplicates(gallery, tmp_path, ray_local):
    """The job runs in its own process on the tests' Ray instance and is killed once its first
    part is written; every part left is whole, and the rerun searches only the rest."""
    out, _root = gallery
    target = str(tmp_path / "topk.parquet")
    args = ["batch=true", "mode=verified", "k=3", "batch_size=1", "rows_per_file=1"]
    args += ["decode_batch_size=1"]  # blocks of one drawing: the parts come one by one
    address = ray_local.get_runtime_context().gcs_address
    job = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "search", f"out={out}", *args]
        + [f"batch_output={target}", f"ray.address={address}"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.txt").open("w"),
    )
    try:
        deadline = time.time() + 300
        while not _parts(target) and time.time() < deadline and job.poll() is None:
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
    finally:
        job.kill()
        job.wait()
    time.sleep(2)  # the killed job's workers end with their driver
    left = _parts(target)
    said = (tmp_path / "stderr.txt").read_text()[-3000:]
    assert 1 <= len(left) < N_DRAWINGS, f"the job was not killed mid-run: {said}"
    for part in left:  # whole: one drawing, its ranking (at least k rows; deeper for the
        table = pq.read_table(part).to_pandas()  # background level of the confidence)
        assert table["drawing_id"].nunique() == 1
        assert table["rank"].tolist() == list(range(1, len(table) + 1)) and len(table) >= 3
    assert not Path(target).exists()

    config = load_config(SearchConfig, None, [f"out={out}", *args, f"batch_output={target}"])
    resumed = pd.read_parquet(search.run(config))
    assert not resumed.duplicated(["drawing_id", "rank"]).any()
    assert sorted(resumed["drawing_id"].unique()) == [f"draw{n:02d}" for n in range(N_DRAWINGS)]
    reference = search.search_batch_in_driver(
        replace(config, batch_output=str(tmp_path / "driver.parquet")),
        cat.read_catalogue(out),
        pick_model_tag(out, None),
    )
    expected = pd.read_parquet(reference)
    assert resumed["artwork_id"].tolist() == expected["artwork_id"].tolist()
    np.testing.assert_allclose(resumed["score"], expected["score"], rtol=1e-6, atol=1e-7)
    assert len(_parts(target)) == N_DRAWINGS  # one part per drawing, none written twice


def test_an_unreadable_drawing_is_counted_as_failed_and_searched_once_fixed(
    gallery, tmp_path, capsys
):
    out, root = gallery
    broken = root / "d" / "draw05.png"
    original = broken.read_bytes()
    target = str(tmp_path / "topk.parquet")
    config = SearchConfig(out=str(out), batch=True, k=2, mode="verified", batch_output=target)
    try:
        broken.write_bytes(b"\x89PNG broken since it was embedded")
        table = pd.read_parquet(search.run(config))
        said = capsys.readouterr().out.strip().splitlines()[-1]
    finally:
        broken.write_bytes(original)
    assert "draw05" not in set(table["drawing_id"]) and table["drawing_id"].nunique() == 23
    assert said.startswith(
        f"search (verified): {N_DRAWINGS} in, 23 searched now, 0 earlier, 1 failed"
    )
    assert said.endswith("1 left out, image unreadable: {'not an image': 1}")
    errors = pd.read_csv(Path(parts_dir(target)) / "errors.csv")
    assert errors.to_dict("records") == [{"id": "draw05", "error": "not an image"}]
    # once the file is back, a rerun searches that drawing alone
    table = pd.read_parquet(search.run(config))
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.startswith(
        f"search (verified): {N_DRAWINGS} in, 1 searched now, 23 earlier, 0 failed"
    )
    assert table["drawing_id"].nunique() == N_DRAWINGS
