"""FAISS index: exact search equals brute force, approximate indexes keep recall, filters, models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from drawmatch.core.config import load_config
from drawmatch.data import embeddings
from drawmatch.jobs import embed, index
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.retrieval import artwork_index
from tests.conftest import hand_catalogue, make_image


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_equals_brute_force_cosine():
    rng = np.random.default_rng(1)
    gallery, queries = _unit(rng, 200, 16), _unit(rng, 5, 16)
    idx = artwork_index.build_faiss_index(gallery, "flat")
    scores, positions = idx.search(queries, 10)
    sims = queries @ gallery.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, 1), atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_keep_recall(kind):
    rng = np.random.default_rng(2)
    centres = _unit(rng, 20, 32)
    gallery = centres[rng.integers(0, 20, 4000)] + 0.1 * rng.normal(size=(4000, 32))
    gallery = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).astype(np.float32)
    queries = gallery[:50] + 0.05 * _unit(rng, 50, 32)
    exact = artwork_index.build_faiss_index(gallery, "flat").search(queries, 20)[1]
    defaults = IndexConfig()
    approx = artwork_index.build_faiss_index(
        gallery, kind, defaults.nlist, defaults.nprobe, defaults.hnsw_m, defaults.ef_search
    ).search(queries, 20)[1]
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_index_job_search_filter_and_model_check(ray_local, tmp_path):
    drawings = [make_image(tmp_path / "d" / f"draw{i}.jpg", (60, 60), seed=i) for i in range(2)]
    artworks = [make_image(tmp_path / "a" / f"art{i}.jpg", (60, 60), seed=5 + i) for i in range(6)]
    out = tmp_path / "out"
    catalogue = hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    catalogue["artist"] = ["", "", "Monet", "Monet", "Klimt", "Klimt", "Klimt", "Monet"]
    from drawmatch.data import catalogue as cat

    cat.write_catalogue(catalogue, out)
    result = embed.run(
        load_config(
            EmbedConfig,
            None,
            [f"out={out}", "model.backbone=tiny", "model.pretrained=false", "model.image_size=48"],
        )
    )
    built = index.run(IndexConfig(out=str(out)))
    assert built.size == 6  # artworks only

    built_index = artwork_index.ArtworkIndex(out, result.model_tag)
    _ids, q = embeddings.read_embeddings(out, result.model_tag, ids=["draw0"])
    top, dist = built_index.search(q, 6)
    all_ids, all_emb = embeddings.read_embeddings(
        out, result.model_tag, ids=[f"art{i}" for i in range(6)]
    )
    expected = [all_ids[i] for i in np.argsort(-(all_emb @ q[0]), kind="stable")]
    assert top[0] == expected
    np.testing.assert_allclose(dist[0], np.sort(1 - all_emb @ q[0]), atol=1e-5)

    klimt = ["art2", "art3", "art4"]
    top_k, _d = built_index.search(q, 5, allowed=klimt)
    assert sorted(top_k[0]) == klimt

    # An index built from other weights is refused.
    info_path = Path(artwork_index.index_dir(out, result.model_tag)) / artwork_index.INFO_FILE
    info = json.loads(info_path.read_text())
    info["weights_hash"] = "0000"
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="rebuild the index"):
        artwork_index.ArtworkIndex(out, result.model_tag)


# --- a stale index: removed, added or repeated artworks ---------------------------------------


def _tiny_out(tmp_path, n_art=5):
    drawings = [make_image(tmp_path / "d" / f"draw{i}.jpg", (60, 60), seed=i) for i in range(2)]
    artworks = [
        make_image(tmp_path / "a" / f"art{i}.jpg", (60, 60), seed=5 + i) for i in range(n_art)
    ]
    out = tmp_path / "out"
    return out, hand_catalogue(out, {"drawing": drawings, "artwork": artworks})


def _embed(out):
    overrides = [f"out={out}", "model.backbone=tiny", "model.pretrained=false"]
    return embed.run(load_config(EmbedConfig, None, [*overrides, "model.image_size=48"]))


def test_a_stale_index_is_refused_with_the_command_that_rebuilds_it(ray_local, tmp_path):
    from drawmatch.data import catalogue as cat
    from drawmatch.jobs import search
    from drawmatch.jobs.search import SearchConfig

    out, catalogue = _tiny_out(tmp_path, n_art=6)
    cat.write_catalogue(catalogue[catalogue["id"] != "art5"], out)  # art5 comes later
    tag = _embed(out).model_tag
    index.run(IndexConfig(out=str(out)))
    assert len(search.run(SearchConfig(out=str(out), query="draw0", k=5))) == 5

    # a re-ingest drops art4: the index still maps it (it used to die with a KeyError)
    cat.write_catalogue(catalogue[~catalogue["id"].isin(["art4", "art5"])], out)
    rebuild = f"run `drawmatch index out={out} model_tag={tag}`"
    expected = f"the index of {tag} is out of date (1 artworks removed, 0 added since it was built)"
    with pytest.raises(artwork_index.StaleIndexError) as err:
        search.run(SearchConfig(out=str(out), query="draw0", k=5))
    assert str(err.value) == f"{expected}: {rebuild}"
    with pytest.raises(artwork_index.StaleIndexError, match="1 artworks removed"):
        search.run(SearchConfig(out=str(out), batch=True, k=2))
    index.run(IndexConfig(out=str(out)))
    found = search.run(SearchConfig(out=str(out), query="draw0", k=5))
    assert sorted(found["artwork_id"]) == [f"art{i}" for i in range(4)]

    # a new artwork, embedded after the index was built
    cat.write_catalogue(catalogue[catalogue["id"] != "art4"], out)
    _embed(out)
    with pytest.raises(artwork_index.StaleIndexError, match=r"\(0 artworks removed, 1 added"):
        artwork_index.ArtworkIndex(out, tag)
    assert index.run(IndexConfig(out=str(out))).size == 5
    assert "art5" in artwork_index.ArtworkIndex(out, tag).ids


def test_an_index_that_maps_an_artwork_twice_is_refused_and_rebuilt_once(ray_local, tmp_path):
    """An older version indexed repeated embedding rows: search returned an artwork twice."""
    from drawmatch.jobs import search
    from drawmatch.jobs.search import SearchConfig

    out, _catalogue = _tiny_out(tmp_path)
    tag = _embed(out).model_tag
    directory = Path(embeddings.embeddings_dir(out, tag))
    for part in embeddings.part_files(directory):  # what two unlocked runs left behind
        embeddings.write_part(str(directory), pq.read_table(part))
    ids, emb = embeddings.read_embeddings(out, tag)
    assert len(ids) == 7  # readers see each id once
    gallery = [f"art{i}" for i in range(5)]
    _write_old_index(out, tag, gallery, emb[2:])
    with pytest.raises(artwork_index.StaleIndexError, match="5 repeated since it was built"):
        search.run(SearchConfig(out=str(out), query="draw0", k=10))
    assert index.run(IndexConfig(out=str(out))).size == 5
    top = search.run(SearchConfig(out=str(out), query="draw0", k=10))
    assert sorted(top["artwork_id"]) == gallery
    batch = pd.read_parquet(search.run(SearchConfig(out=str(out), batch=True, k=10)))
    assert len(batch) == 2 * 5 and not batch.duplicated(["drawing_id", "artwork_id"]).any()


def _write_old_index(out, tag, gallery, emb):
    """An index as an older version wrote it from repeated rows: every artwork mapped twice."""
    import faiss
    import pyarrow as pa

    from drawmatch.core import storage

    directory = artwork_index.index_dir(out, tag)
    built = artwork_index.build_faiss_index(np.concatenate([emb, emb]))
    storage.write_bytes(f"{directory}/index.faiss", faiss.serialize_index(built).tobytes())
    ids = pd.DataFrame({"position": range(2 * len(gallery)), "id": gallery + gallery})
    storage.write_parquet(
        pa.Table.from_pandas(ids, preserve_index=False), f"{directory}/ids.parquet"
    )
    info = {"model_tag": tag, "weights_hash": embeddings.read_model_info(out, tag)["weights_hash"]}
    storage.write_bytes(f"{directory}/index.json", json.dumps(info).encode())
