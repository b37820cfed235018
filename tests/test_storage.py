"""Local paths and object-store URIs through one set of file functions: a plain folder, the same
folder as a `file://` URI, and a bucket on a local S3-compatible server (moto) must behave alike."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from drawmatch.core import storage
from drawmatch.core.config import load_config, save_config
from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings
from drawmatch.jobs import embed, evaluate, index, ingest, search
from drawmatch.jobs import split as split_job
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.ingest import IngestConfig
from drawmatch.jobs.search import SearchConfig
from drawmatch.jobs.split import SplitConfig
from tests.conftest import make_bucket, make_image

_buckets = itertools.count()


@pytest.fixture(params=["local", "file", "s3"])
def root(request, tmp_path) -> str:
    """An empty output root of each kind."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "file":
        return f"file://{tmp_path}/root"
    request.getfixturevalue("s3_server")
    return make_bucket(f"storage-{next(_buckets)}") + "/root"


def test_write_read_list_and_remove(root):
    target = storage.join(root, "a", "b.txt")
    assert not storage.exists(target)
    storage.write_bytes(target, b"hello")
    assert storage.read_bytes(target) == b"hello"
    assert storage.exists(target) and storage.is_file(target)
    assert storage.is_dir(storage.join(root, "a")) and not storage.is_file(storage.join(root, "a"))
    assert storage.size(target) == 5
    storage.write_bytes(target, b"replaced")  # a whole new file, never appended
    assert storage.read_text(target) == "replaced"

    storage.write_bytes(storage.join(root, "a", "c.csv"), b"x,y\n1,2\n")
    storage.write_bytes(storage.join(root, "d", "e", "model.json"), b"{}")
    assert storage.list_files(storage.join(root, "a")) == [
        storage.join(root, "a", "b.txt"),
        storage.join(root, "a", "c.csv"),
    ]
    assert storage.list_files(storage.join(root, "a"), "*.csv") == [
        storage.join(root, "a", "c.csv")
    ]
    # `*` stays within one level, like a glob
    assert storage.list_files(root, "*/model.json", recursive=True) == []
    assert storage.list_files(root, "*/*/model.json", recursive=True) == [
        storage.join(root, "d", "e", "model.json")
    ]
    assert storage.list_files(storage.join(root, "nothing-here")) == []
    assert storage.read_csv(storage.join(root, "a", "c.csv")).to_dict("list") == {
        "x": [1],
        "y": [2],
    }
    # no temporary files are left beside what was written
    assert [storage.name(p) for p in storage.list_files(root, recursive=True, pattern="a/*")] == [
        "b.txt",
        "c.csv",
    ]
    storage.remove(target)
    assert not storage.exists(target)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(target)


def test_parquet_and_config_round_trip(root):
    table = pa.table({"id": ["a", "b"], "v": [1.5, 2.5]})
    storage.write_parquet(table, storage.join(root, "t.parquet"))
    assert storage.read_parquet(storage.join(root, "t.parquet")).equals(table)
    assert storage.read_parquet(storage.join(root, "t.parquet"), columns=["v"]).column_names == [
        "v"
    ]
    config = load_config(EmbedConfig, None, ["batch_size=3", "model.backbone=tiny"])
    save_config(config, storage.join(root, "embed_config.yaml"))
    assert load_config(EmbedConfig, storage.join(root, "embed_config.yaml")) == config


def test_path_helpers_keep_the_scheme():
    assert storage.join("s3://b/run/", "embeddings", "/tag/") == "s3://b/run/embeddings/tag"
    assert storage.parent("s3://b/run/folds/fold_00.csv") == "s3://b/run/folds"
    assert storage.name("gs://b/run/folds/fold_00.csv") == "fold_00.csv"
    assert storage.stem("s3://b/run/folds/fold_00.csv") == "fold_00"
    assert storage.absolute("s3://b/run/") == "s3://b/run"
    assert storage.absolute("relative/dir") == str(Path("relative/dir").resolve())
    assert storage.is_uri("file:///x") and not storage.is_uri("/x")


def test_an_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="not a usable file system URI"):
        storage.exists("nosuchscheme://bucket/x")


def _upload_tree(local: Path, target: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            storage.write_bytes(
                storage.join(target, path.relative_to(local).as_posix()), path.read_bytes()
            )


def _pipeline(out: str, data: str, ray_local) -> dict[str, object]:
    """ingest -> embed -> index -> batch search -> evaluate -> split, all under `out`."""
    result = ingest.run(
        IngestConfig(
            out=out,
            drawings_root=storage.join(data, "drawings"),
            artworks_root=storage.join(data, "artworks"),
        )
    )
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    embedded = embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny]))
    index.run(IndexConfig(out=out))
    topk = search.run(SearchConfig(out=out, batch=True, k=3))
    pairs = storage.join(data, "pairs.csv")
    metrics = evaluate.run_pairs(EvaluateConfig(out=out, pairs_csv=pairs))
    split = split_job.run(SplitConfig(out=out, pairs_csv=pairs, n_folds=2))
    ids, emb = embeddings.read_embeddings(out, embedded.model_tag)
    order = np.argsort(ids)
    return {
        "ingest": (result.rows, result.ok, result.errors, result.errors_by_reason),
        "catalogue": cat.read_catalogue(out).sort_values("id"),
        "ids": sorted(ids),
        "embeddings": emb[order],
        "topk": storage.read_parquet(str(topk)).to_pandas(),
        "metrics": metrics.metrics,
        "folds": [storage.read_csv(f, dtype=str) for f in split.fold_files],
    }


def test_jobs_on_a_file_uri_match_the_same_jobs_on_a_local_path(ray_local, tmp_path):
    """The whole chain with every input and output given as `file://` URIs (the pyarrow file
    system code path) writes the same results as with plain paths, and a broken file is counted."""
    data = tmp_path / "data"
    for i in range(4):
        make_image(data / "artworks" / f"art{i}.jpg", (60, 50), seed=i)
        make_image(data / "drawings" / f"draw{i}.jpg", (50, 60), seed=10 + i)
    (data / "drawings" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    pd.DataFrame(
        {"drawing_id": [f"draw{i}" for i in range(4)], "artwork_id": [f"art{i}" for i in range(4)]}
    ).to_csv(data / "pairs.csv", index=False)

    local = _pipeline(str(tmp_path / "local"), str(data), ray_local)
    uri = _pipeline(f"file://{tmp_path}/uri", f"file://{data}", ray_local)

    assert local["ingest"] == uri["ingest"] == (9, 8, 1, {"truncated": 1})
    pd.testing.assert_frame_equal(
        local["catalogue"].reset_index(drop=True), uri["catalogue"].reset_index(drop=True)
    )
    assert uri["ids"] == sorted([f"art{i}" for i in range(4)] + [f"draw{i}" for i in range(4)])
    np.testing.assert_allclose(uri["embeddings"], local["embeddings"], atol=1e-6)
    pd.testing.assert_frame_equal(local["topk"], uri["topk"])
    assert uri["metrics"] == local["metrics"]
    for a, b in zip(local["folds"], uri["folds"]):
        pd.testing.assert_frame_equal(a, b)
    roots = json.loads((tmp_path / "uri" / "roots.json").read_text())
    assert roots["drawings"] == f"file://{data}/drawings"  # the URI is kept, not made local
