"""FAISS index kinds from factory strings: the parameter table refuses bad values in one line,
and the factory builds the same indexes (same bytes, same neighbours) as the hand-built classes
of before."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pandas as pd
import pytest

from drawmatch.retrieval.artwork_index import build_faiss_index
from drawmatch.retrieval.faiss_index import (
    INDEX_KINDS,
    INDEX_PARAMS,
    build_index,
    check_index,
    factory_string,
    rebuild_reason,
    remove_positions,
    update_plan,
)
from drawmatch.retrieval.region_index import build_region_faiss


def _data(n: int = 3000, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = emb[:40] + 0.1 * rng.standard_normal((40, dim)).astype(np.float32)
    return emb, queries


def test_the_table_has_a_simple_shape_and_covers_every_kind():
    for low, high, help_text in INDEX_PARAMS.values():
        assert isinstance(low, int) and (high is None or high >= low) and help_text
    assert {p for params in INDEX_KINDS.values() for p in params} == set(INDEX_PARAMS)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hnsw_m": 0}, "hnsw_m: 0 is out of range (must be between 2 and 256)"),
        ({"nprobe": 0}, "nprobe: 0 is out of range (must be >= 1)"),
        ({"nlist": 0}, "nlist: 0 is out of range (must be >= 1)"),
        ({"ef_search": -3}, "ef_search: -3 is out of range (must be between 1 and 1048576)"),
        ({"pq_bits": 17}, "pq_bits: 17 is out of range (must be between 1 and 16)"),
        ({"nlist": 2.5}, "nlist: 2.5 must be a whole number"),
    ],
)
def test_bad_parameters_are_refused_in_one_line_before_faiss_sees_them(params, message):
    emb, _queries = _data(200)
    for kind in INDEX_KINDS:
        with pytest.raises(ValueError) as err:
            build_index(emb, kind, **{"nlist": 4, **params})
        assert str(err.value) == message
    if "pq_bits" not in params:
        with pytest.raises(ValueError) as err:
            build_faiss_index(emb, "hnsw", **params)
        assert str(err.value) == message
    with pytest.raises(ValueError, match="unknown index kind 'ivfpq'; choose one of flat, ivf"):
        build_faiss_index(emb, "ivfpq")
    with pytest.raises(ValueError, match="unknown region index kind 'pq'"):
        build_region_faiss(emb, "pq")
    with pytest.raises(ValueError, match="pq_m=5 must divide the dimension 32"):
        build_region_faiss(emb, "ivfpq", pq_m=5)
    with pytest.raises(ValueError, match="unknown index parameter 'm'"):
        check_index("hnsw", m=4)


def test_factory_strings_use_at_most_one_list_per_39_vectors():
    assert factory_string("flat", 32, 100) == "Flat"
    assert factory_string("ivf", 32, 3000, nlist=1024) == "IVF76,Flat"
    assert factory_string("ivfpq", 32, 100, nlist=8, pq_m=8) == "IVF2,PQ8x8np"
    assert factory_string("hnsw", 32, 100, hnsw_m=16) == "HNSW16"


def _by_hand(emb: np.ndarray, kind: str) -> Any:
    """The indexes as they were built before factory strings (for indexes saved then)."""
    dim = emb.shape[1]
    ip = faiss.METRIC_INNER_PRODUCT
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 16, ip)
        index.hnsw.efSearch = 64
    else:
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, 20, ip)
            index.train(emb)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, 20, 8, 8, ip)
            index.train(emb[np.random.default_rng(0).permutation(len(emb))[: 256 * 39]])
        index.nprobe = 4
    index.add(emb)
    return index


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_factory_indexes_find_the_same_neighbours_as_the_hand_built_ones(kind):
    emb, queries = _data()
    params = {"nlist": 20, "nprobe": 4, "hnsw_m": 16, "ef_search": 64, "pq_m": 8}
    built = build_index(emb, kind, **params)
    old = _by_hand(emb, kind)
    assert np.array_equal(faiss.serialize_index(built), faiss.serialize_index(old))  # same bytes
    assert np.array_equal(built.search(queries, 10)[1], old.search(queries, 10)[1])
    # an index saved before loads and searches as it did
    loaded = faiss.deserialize_index(faiss.serialize_index(old))
    assert np.array_equal(loaded.search(queries, 10)[1], old.search(queries, 10)[1])


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_removing_and_adding_equals_filling_the_same_trained_index_anew(kind):
    """Vectors removed (positions renumbered 0..n-1 in order) and new ones added give the
    index that the same trained quantisers filled with the kept vectors then the new ones:
    the same neighbours and scores for every query."""
    emb, queries = _data(3000, 32)
    old, new = emb[:2500], emb[2500:]
    gone = np.array([0, 7, 8, 1000, 2499])
    params = {"nlist": 16, "nprobe": 16, "pq_m": 8}
    updated = build_index(old, kind, **params)
    fresh = faiss.clone_index(updated)
    fresh.reset()  # trained, empty
    remove_positions(updated, gone)
    updated.add(new)
    kept = np.delete(old, gone, axis=0)
    fresh.add(np.concatenate([kept, new]))
    assert updated.ntotal == fresh.ntotal == 3000 - len(gone)
    got_scores, got = updated.search(queries, 20)
    want_scores, want = fresh.search(queries, 20)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
    # by hand: 0, 7 and 8 were removed before old position 9, which is now 9 - 3 = 6
    if kind == "flat":
        np.testing.assert_array_equal(updated.reconstruct(0), old[1])
        np.testing.assert_array_equal(updated.reconstruct(6), old[9])


def test_an_hnsw_graph_refuses_removals():
    emb, _ = _data(200, 16)
    graph = build_index(emb, "hnsw")
    remove_positions(graph, np.array([], dtype=np.int64))  # nothing to remove: fine
    with pytest.raises(ValueError, match="HNSW index cannot remove"):
        remove_positions(graph, np.array([3]))


def test_the_update_plan_by_hand():
    indexed = pd.DataFrame(
        {"id": ["a", "a", "b", "c", "c", "d"], "sha256": ["1", "1", "2", "3", "3", "4"]}
    )
    current = {"a": "1", "c": "30", "d": "4", "e": "5"}  # b left, c changed, e is new
    remove, add = update_plan(indexed, current)
    assert remove.tolist() == [2, 3, 4] and add == ["c", "e"]


def test_ivf_quantisers_serve_until_the_index_doubles_or_halves():
    params = {"kind": "ivf", "nlist": 8}
    info = {"kind": "ivf", "params": params, "trained_on": 1000}
    assert rebuild_reason(info, "ivf", params, 2000) == ""
    assert rebuild_reason(info, "ivf", params, 500) == ""
    assert "2001 vectors" in rebuild_reason(info, "ivf", params, 2001)
    assert "499 vectors" in rebuild_reason(info, "ivf", params, 499)
    assert rebuild_reason({**info, "kind": "flat"}, "flat", params | {"kind": "flat"}, 10**6)
    flat = {"kind": "flat", "params": {"kind": "flat"}, "trained_on": 10}
    assert rebuild_reason(flat, "flat", {"kind": "flat"}, 10**6) == ""  # nothing trained
    assert "parameters changed" in rebuild_reason(info, "ivf", {"kind": "ivf", "nlist": 9}, 1000)
    assert "older version" in rebuild_reason({"kind": "ivf"}, "ivf", params, 1000)
