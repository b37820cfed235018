"""Indexes kept as a base and delta segments: the index and regions jobs update them by writing
what changed, and every reader sees what a full rebuild gives (real FAISS, real jobs on stores
of seeded vectors written as the embed and regions jobs leave them; nothing to embed, so no Ray)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings
from drawmatch.jobs import index, regions
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.models.region_embedder import (
    REGIONS_FILE,
    read_regions,
    region_boxes,
    regions_dir,
    regions_table,
)
from drawmatch.retrieval import segments
from drawmatch.retrieval.artwork_index import ArtworkIndex, StaleIndexError, index_dir
from drawmatch.retrieval.region_index import RegionIndex, region_index_dir
from tests.test_regions import _index_contents

TAG = "tiny-avg-32-segments"
WEIGHTS = "segments-weights"
DIM = 16
LEVELS = (1, 2)  # 5 windows per artwork


class Gallery:
    """An output root whose catalogue, global embeddings and region vectors the test edits as
    ingest and the embed and regions jobs would: artworks added, re-embedded or removed."""

    def __init__(self, out: Path, n: int) -> None:
        self.out = out
        self.rng = np.random.default_rng(0)
        self.sha: dict[str, str] = {}
        self.boxes = region_boxes(LEVELS, 0.4)
        config = RegionsConfig(out=str(out), levels=LEVELS, local_features=None)
        self.settings = regions._region_settings(config, self.boxes)
        directory = embeddings.embeddings_dir(str(out), TAG)
        storage.makedirs(directory)
        info = {"model_tag": TAG, "weights_hash": WEIGHTS, "dim": DIM, "model": {}}
        embeddings.write_model_info(directory, {**info, "runtime": "torch"})
        storage.makedirs(regions_dir(str(out), TAG))
        storage.write_text(
            storage.join(regions_dir(str(out), TAG), REGIONS_FILE), json.dumps(self.settings)
        )
        cat.write_roots(out, {"artworks": str(out / "images")})
        self.add([f"art{i:04d}" for i in range(n)])

    def _vectors(self, n: int) -> np.ndarray:
        x = self.rng.standard_normal((n, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def add(self, ids: list[str], version: int = 0) -> None:
        """Store (new) vectors of `ids` and catalogue them."""
        shas = [f"{k}-v{version}" for k in ids]
        directory = embeddings.embeddings_dir(str(self.out), TAG)
        table = embeddings.embeddings_table(ids, shas, self._vectors(len(ids)), TAG, WEIGHTS)
        embeddings.write_part(directory, table)
        r = len(self.boxes)
        table = regions_table(
            [k for k in ids for _ in range(r)],
            [s for s in shas for _ in range(r)],
            np.tile(np.arange(r, dtype=np.int16), len(ids)),
            np.tile(self.boxes, (len(ids), 1)),
            self._vectors(len(ids) * r),
            TAG,
            WEIGHTS,
            self.settings,
        )
        embeddings.write_part(regions_dir(str(self.out), TAG), table)
        self.sha.update(zip(ids, shas))
        self.write_catalogue()

    def drop(self, ids: list[str]) -> None:
        """Take `ids` out of the stores (as a re-embedding does first) and the catalogue."""
        for directory in (
            embeddings.embeddings_dir(str(self.out), TAG),
            regions_dir(str(self.out), TAG),
        ):
            stored = embeddings.stored_ids(directory)
            embeddings.remove_rows(stored[stored["id"].isin(ids)])
        for k in ids:
            del self.sha[k]
        self.write_catalogue()

    def change(self, ids: list[str], version: int) -> None:
        self.drop(ids)
        self.add(ids, version)

    def write_catalogue(self) -> None:
        ids = sorted(self.sha)
        rows = pd.DataFrame(
            {
                "id": ids,
                "collection": "artwork",
                "root": "artworks",
                "path": [f"{k}.jpg" for k in ids],
                "sha256": [self.sha[k] for k in ids],
                "status": "ok",
                "style": "original",
                "verso": False,
            }
        )
        for column in ("width", "height", "error", "parent_id", "duplicate_of", "artist", "title"):
            rows[column] = None
        cat.write_catalogue(rows, self.out)


def _assert_same(got: tuple, want: tuple) -> None:
    assert got[0] == want[0] and got[3] == want[3]  # ids and region rows
    assert got[1] == want[1]  # every query's ranking
    np.testing.assert_allclose(got[2], want[2], atol=1e-5)
    for (scores, boxes, floor), (want_scores, want_boxes, want_floor) in zip(got[4], want[4]):
        assert scores.keys() == want_scores.keys() and boxes == want_boxes
        assert scores == pytest.approx(want_scores, abs=1e-5)
        assert floor == pytest.approx(want_floor, abs=1e-5)


def _rebuilt(out: Path, tmp: Path, config: IndexConfig, region: RegionsConfig, queries) -> tuple:
    """The contents of both indexes rebuilt from all vectors, in a copy of the output root."""
    copy = tmp / "rebuilt"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy)
    index.run(replace(config, out=str(copy), rebuild=True))
    regions.run(replace(region, out=str(copy), rebuild_index=True))
    return _index_contents(copy, TAG, queries)


def _manifest(directory: str) -> dict:
    return json.loads(Path(directory, "index.json").read_text())["files"]


# kind of the artwork index, kind of the region index: IVF lists all searched (nprobe >= nlist),
# so an IVF index finds exactly what a flat one finds and a rebuild (new quantiser) is comparable
@pytest.mark.parametrize("kind,region_kind", [("flat", "flat"), ("ivf", "ivf")])
def test_successive_updates_and_a_compaction_equal_a_full_rebuild(
    tmp_path, capsys, monkeypatch, kind, region_kind
):
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 2)
    out = tmp_path / "out"
    gallery = Gallery(out, 200)
    config = IndexConfig(out=str(out), kind=kind, nlist=4, nprobe=64)
    region = RegionsConfig(
        out=str(out), levels=LEVELS, local_features=None, index_kind=region_kind, nlist=8, nprobe=64
    )
    index.run(config)
    regions.run(region)
    queries = np.random.default_rng(1).standard_normal((6, DIM)).astype(np.float32)
    steps = [
        (lambda: gallery.add([f"new{i}" for i in range(10)]), "segment", ["segment-0002"]),
        (
            lambda: gallery.change(["art0003", "new4"], 1),
            "segment",
            ["segment-0002", "segment-0003"],
        ),
        (lambda: gallery.drop(["art0007", "art0100"]), "removed", ["segment-0002", "segment-0003"]),
        (lambda: gallery.add(["late0", "late1"]), "compacted", []),  # a third segment: compact
        (lambda: gallery.drop([f"art{i:04d}" for i in range(10, 70)]), "compacted", []),  # > 20 %
    ]
    for step, written, names in steps:
        step()
        capsys.readouterr()
        index.run(config)
        regions.run(region)
        said = capsys.readouterr().out
        assert said.count(segments.SAID[written]) == 2, said
        for directory in (index_dir(out, TAG), region_index_dir(out, TAG)):
            assert _manifest(directory)["segments"] == names
        _assert_same(
            _index_contents(out, TAG, queries), _rebuilt(out, tmp_path, config, region, queries)
        )
    # the removed rows of the third step are listed, then gone with the compaction
    files = sorted(p.name for p in Path(index_dir(out, TAG)).iterdir() if p.is_file())
    assert [f for f in files if f.startswith(("base-", "segment-", "removed-"))] == [
        "base-0006.faiss",
        "base-0006.parquet",
        "base-0006.trained.faiss",
    ]


def test_an_ivfpq_region_index_with_segments_equals_its_trained_quantisers_filled_anew(tmp_path):
    """IVF-PQ search is approximate: a merged index must equal the base's trained index (same
    quantisers and codebooks) filled with the kept vectors, then the added ones, in that order."""
    out = tmp_path / "out"
    gallery = Gallery(out, 120)  # 600 region vectors: 256 codes per sub-quantiser trainable
    index.run(IndexConfig(out=str(out)))
    region = RegionsConfig(
        out=str(out), levels=LEVELS, local_features=None, index_kind="ivfpq", nlist=8, pq_m=4
    )
    regions.run(region)
    gallery.change(["art0002"], 1)
    gallery.drop(["art0005"])
    gallery.add(["new0", "new1"])
    index.run(IndexConfig(out=str(out)))
    regions.run(region)
    directory = region_index_dir(out, TAG)
    files = _manifest(directory)
    assert files["segments"] and files["removed"]
    loaded = RegionIndex(out, TAG, gallery=sorted(gallery.sha))
    ids, region_number, _box, emb = read_regions(out, TAG)
    where = {(k, int(r)): i for i, (k, r) in enumerate(zip(ids, region_number))}
    rows = [where[(k, int(r))] for k, r in zip(loaded.ids, loaded.region)]
    assert loaded.ids[-10:] == ["new0"] * 5 + ["new1"] * 5  # kept rows first, then the added
    assert loaded.ids[-15:-10] == ["art0002"] * 5  # re-embedded: out of the base, into a segment
    fresh = faiss.deserialize_index(
        np.frombuffer(Path(directory, f"{files['base']}.trained.faiss").read_bytes(), np.uint8)
    )
    fresh.add(emb[rows])
    queries = np.random.default_rng(2).standard_normal((8, DIM)).astype(np.float32)
    got_scores, got = loaded.index.search(queries, 50)
    want_scores, want = fresh.search(queries, 50)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5)


def test_an_update_killed_before_its_manifest_leaves_the_index_before(tmp_path, monkeypatch):
    out = tmp_path / "out"
    gallery = Gallery(out, 50)
    index.run(IndexConfig(out=str(out)))
    regions.run(RegionsConfig(out=str(out), levels=LEVELS, local_features=None))
    queries = np.random.default_rng(3).standard_normal((4, DIM)).astype(np.float32)
    before = _index_contents(out, TAG, queries)
    gallery.add(["new0", "new1"])
    gallery.drop(["art0001"])

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(segments, "_swap_manifest", killed)
    with pytest.raises(RuntimeError, match="killed"):
        index.run(IndexConfig(out=str(out)))
    with pytest.raises(RuntimeError, match="killed"):
        regions.run(RegionsConfig(out=str(out), levels=LEVELS, local_features=None))
    # the segment files were written, the manifest was not: the index is the one before
    assert Path(index_dir(out, TAG), "segment-0002.faiss").exists()
    artworks = ArtworkIndex(out, TAG, check=False)
    assert sorted(artworks.ids) == before[0]
    ranked, distances = artworks.search(queries, len(artworks.ids))
    assert ranked == before[1]
    np.testing.assert_allclose(distances, before[2], atol=1e-6)
    assert (
        sorted(zip(RegionIndex(out, TAG).ids, RegionIndex(out, TAG).region.tolist())) == before[3]
    )
    with pytest.raises(StaleIndexError, match="2 added"):
        ArtworkIndex(out, TAG)
    monkeypatch.undo()
    index.run(IndexConfig(out=str(out)))  # the next run writes the update and clears the debris
    regions.run(RegionsConfig(out=str(out), levels=LEVELS, local_features=None))
    assert "art0001" not in ArtworkIndex(out, TAG).ids
    assert sorted(_manifest(index_dir(out, TAG))["segments"]) == ["segment-0002"]


def _write_legacy(out: Path) -> None:
    """Both indexes as the version before segments wrote them: one `index.faiss`, its map with
    a `position` column, `index.json` without `files`."""
    for directory, map_file in (
        (index_dir(out, TAG), "ids.parquet"),
        (region_index_dir(out, TAG), "regions.parquet"),
    ):
        table, _rows = segments.read_maps(
            directory, json.loads(Path(directory, "index.json").read_text()), ""
        )
        loaded, _table, info = segments.load(directory, "")
        for path in Path(directory).iterdir():
            if path.name.startswith(("base-", "segment-", "removed-")) or path.name == "index.json":
                path.unlink()
        Path(directory, "index.faiss").write_bytes(faiss.serialize_index(loaded).tobytes())
        positions = pa.array(np.arange(len(table), dtype=np.int64))
        storage.write_parquet(table.add_column(0, "position", positions), f"{directory}/{map_file}")
        del info["files"]
        Path(directory, "index.json").write_text(json.dumps(info))


def test_an_index_written_before_segments_loads_and_updates(tmp_path, capsys):
    out = tmp_path / "out"
    gallery = Gallery(out, 60)
    region = RegionsConfig(out=str(out), levels=LEVELS, local_features=None)
    index.run(IndexConfig(out=str(out)))
    regions.run(region)
    queries = np.random.default_rng(4).standard_normal((4, DIM)).astype(np.float32)
    before = _index_contents(out, TAG, queries)
    _write_legacy(out)
    _assert_same(_index_contents(out, TAG, queries), before)  # read as it was
    gallery.add(["new0"])
    gallery.drop(["art0002"])
    capsys.readouterr()
    index.run(IndexConfig(out=str(out)))
    regions.run(region)
    said = capsys.readouterr().out
    assert "updated: 1 out, 1 in (compacted into a new base)" in said
    assert "updated: 5 vectors out, 1 artworks in (compacted into a new base)" in said
    _assert_same(
        _index_contents(out, TAG, queries),
        _rebuilt(out, tmp_path, IndexConfig(out=str(out)), region, queries),
    )
    for directory in (index_dir(out, TAG), region_index_dir(out, TAG)):
        names = {p.name for p in Path(directory).iterdir()}
        assert not names & {"index.faiss", "ids.parquet", "regions.parquet"}


def test_an_index_with_segments_is_refused_once_the_gallery_moves_on(tmp_path):
    out = tmp_path / "out"
    gallery = Gallery(out, 40)
    region = RegionsConfig(out=str(out), levels=LEVELS, local_features=None)
    index.run(IndexConfig(out=str(out)))
    regions.run(region)
    gallery.add(["new0", "new1"])
    gallery.drop(["art0003"])
    index.run(IndexConfig(out=str(out)))
    regions.run(region)
    assert _manifest(index_dir(out, TAG))["segments"] == ["segment-0002"]
    gallery.change(["new1"], 1)  # re-embedded since
    gallery.add(["new2"])
    expected = "(0 artworks removed, 1 added, 1 re-embedded since it was built)"
    with pytest.raises(StaleIndexError, match=expected):
        ArtworkIndex(out, TAG)
    with pytest.raises(StaleIndexError, match=r"\(0 artworks removed, 1 added, 1 re-embedded"):
        RegionIndex(out, TAG, gallery=cat.gallery_ids(cat.read_catalogue(out)))


def test_an_hnsw_graph_takes_additions_as_a_new_base_and_is_rebuilt_on_removals(tmp_path, capsys):
    """An HNSW graph cannot be merged: an update adds to the loaded graph and writes it whole as
    a new base (as before segments); a removal rebuilds it."""
    out = tmp_path / "out"
    gallery = Gallery(out, 80)
    config = IndexConfig(out=str(out), kind="hnsw")
    index.run(config)
    gallery.add(["new0", "new1"])
    capsys.readouterr()
    index.run(config)
    assert "updated: 0 out, 2 in (compacted into a new base)" in capsys.readouterr().out
    files = _manifest(index_dir(out, TAG))
    assert files["base"] == "base-0002" and files["segments"] == []
    assert not Path(index_dir(out, TAG), "base-0002.trained.faiss").exists()
    ids, emb = embeddings.read_embeddings(out, TAG, ["new0", "new1"])
    found, distances = ArtworkIndex(out, TAG).search(emb, 1)
    assert [row[0] for row in found] == ids
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=1e-5)
    gallery.drop(["art0004"])
    index.run(config)
    assert "built from all vectors (an HNSW graph cannot remove vectors)" in capsys.readouterr().out
    assert sorted(ArtworkIndex(out, TAG).ids) == sorted(gallery.sha)


def test_segments_and_a_compaction_on_an_object_store(s3_server, monkeypatch):
    """The same files, manifest and clean-up in a bucket of a local S3-compatible server."""
    from drawmatch.retrieval.artwork_index import id_table
    from drawmatch.retrieval.faiss_index import build_index
    from tests.conftest import make_bucket

    root = make_bucket("segments") + "/index/tag"
    x = np.random.default_rng(5).standard_normal((30, DIM)).astype(np.float32)
    emb = x / np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"a{i}" for i in range(30)]
    segments.save_base(root, build_index(emb[:20]), id_table(ids[:20], ids[:20]), {}, "ids.parquet")
    saved = segments.read_saved(root, "ids.parquet")
    assert saved is not None and saved.frame["id"].tolist() == ids[:20]
    added = id_table(ids[20:], ids[20:])
    assert segments.save_update(saved, np.array([3]), emb[20:], added, {}) == "segment"
    names = [storage.name(p) for p in storage.list_files(root)]
    assert names == [
        "base-0001.faiss",
        "base-0001.parquet",
        "base-0001.trained.faiss",
        "index.json",
        "removed-0002.parquet",
        "segment-0002.faiss",
        "segment-0002.parquet",
    ]
    kept = [i for i in range(30) if i != 3]
    loaded, table, _info = segments.load(root, "ids.parquet")
    assert table.column("id").to_pylist() == [ids[i] for i in kept]
    np.testing.assert_array_equal(loaded.reconstruct_n(0, loaded.ntotal), emb[kept])
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 0)
    saved = segments.read_saved(root, "ids.parquet")
    assert saved is not None
    assert segments.save_update(saved, np.array([0]), emb[:0], added.slice(0, 0), {}) == "compacted"
    names = [storage.name(p) for p in storage.list_files(root)]
    assert names == [
        "base-0003.faiss",
        "base-0003.parquet",
        "base-0003.trained.faiss",
        "index.json",
    ]
    loaded, table, _info = segments.load(root, "ids.parquet")
    assert table.column("id").to_pylist() == [ids[i] for i in kept[1:]]
    np.testing.assert_array_equal(loaded.reconstruct_n(0, loaded.ntotal), emb[kept[1:]])
