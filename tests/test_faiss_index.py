"""FAISS index kinds from factory strings: the parameter table refuses bad values in one line,
and the factory builds the same indexes (same bytes, same neighbours) as the hand-built classes
of before."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import pytest

from drawmatch.retrieval.artwork_index import build_faiss_index
from drawmatch.retrieval.faiss_index import (
    INDEX_KINDS,
    INDEX_PARAMS,
    build_index,
    check_index,
    factory_string,
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
