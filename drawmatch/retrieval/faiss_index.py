"""FAISS index kinds as `faiss.index_factory` strings (inner-product metric), the one table of
their parameters with valid ranges, and the check that refuses a bad kind or value in one line.

Embeddings are L2-normalised, so inner product = cosine similarity. `flat` is exact; `ivf` (IVF
lists of exact vectors: `nprobe` of `nlist` lists searched), `ivfpq` (IVF with product
quantisation: `pq_m` sub-vectors of `pq_bits` bits) and `hnsw` (a graph of `hnsw_m` links per
node, built with `ef_construction` and searched with `ef_search` candidates) are approximate, for
large galleries. An IVF index uses at most one list per 39 vectors (FAISS wants 39 training points
per list), and never searches more lists than it has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core.config import setting

MIN_POINTS_PER_LIST = 39

# name -> (minimum, maximum or None, help): the ranges that the index configs check too; the
# HNSW maxima keep FAISS from allocating past any memory (M and ef near 2**31 fail mid-build)
INDEX_PARAMS: dict[str, tuple[int, int | None, str]] = {
    "nlist": (1, None, "IVF lists (ivf, ivfpq); at most one per 39 vectors is used"),
    "nprobe": (1, None, "IVF lists searched per query (ivf, ivfpq)"),
    "pq_m": (1, None, "product-quantiser sub-vectors (ivfpq); must divide the dimension"),
    "pq_bits": (1, 16, "bits per product-quantiser code (ivfpq)"),
    "hnsw_m": (2, 256, "links per node of the HNSW graph (hnsw)"),
    "ef_search": (1, 2**20, "candidates kept while searching the HNSW graph (hnsw)"),
    "ef_construction": (1, 2**20, "candidates kept while building the HNSW graph (hnsw)"),
}

# kind -> the parameters it uses
INDEX_KINDS: dict[str, tuple[str, ...]] = {
    "flat": (),
    "ivf": ("nlist", "nprobe"),
    "ivfpq": ("nlist", "nprobe", "pq_m", "pq_bits"),
    "hnsw": ("hnsw_m", "ef_search", "ef_construction"),
}

DEFAULTS: dict[str, int] = {
    "nlist": 1024,
    "nprobe": 32,
    "pq_m": 64,
    "pq_bits": 8,
    "hnsw_m": 32,
    "ef_search": 128,
    "ef_construction": 40,  # FAISS' own default
}


def index_setting(name: str) -> Any:
    """The config key of index parameter `name`: its default, range and help from the tables
    above, so the index, similar and regions jobs declare it once, with FAISS' own limits."""
    low, high, help_text = INDEX_PARAMS[name]
    return setting(DEFAULTS[name], ge=low, le=high, help=help_text)


def check_param(name: str, value: Any) -> None:
    """Refuse a value outside `INDEX_PARAMS[name]`'s range (ValueError, one line)."""
    if name not in INDEX_PARAMS:
        raise ValueError(f"unknown index parameter {name!r}; choose from {', '.join(INDEX_PARAMS)}")
    low, high, _help = INDEX_PARAMS[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: {value!r} must be a whole number")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name}: {value} is out of range (must be {bound})")


def check_index(
    kind: str, kinds: tuple[str, ...] = tuple(INDEX_KINDS), what: str = "index", **params: Any
) -> None:
    """Refuse an unknown kind (or one outside `kinds`) and any given parameter out of its range,
    each in one line (ValueError), before FAISS sees them; `what` names the index."""
    if kind not in kinds:
        raise ValueError(f"unknown {what} kind {kind!r}; choose one of {', '.join(kinds)}")
    for name, value in params.items():
        check_param(name, value)


def factory_string(kind: str, dim: int, n: int, **params: Any) -> str:
    """The `faiss.index_factory` description of `kind` for `n` vectors of `dim` dimensions."""
    p = {**DEFAULTS, **params}
    nlist = ivf_lists(p["nlist"], n)
    if kind == "ivfpq" and dim % p["pq_m"]:
        raise ValueError(f"pq_m={p['pq_m']} must divide the dimension {dim}")
    return {
        "flat": "Flat",
        "ivf": f"IVF{nlist},Flat",
        "ivfpq": f"IVF{nlist},PQ{p['pq_m']}x{p['pq_bits']}np",  # np: no polysemous training
        "hnsw": f"HNSW{p['hnsw_m']}",
    }[kind]


def ivf_lists(nlist: int, n: int) -> int:
    """The lists an IVF index over `n` vectors uses: `nlist`, at most one per 39 vectors."""
    return max(1, min(nlist, n // MIN_POINTS_PER_LIST))


def build_index(emb: np.ndarray, kind: str = "flat", **params: Any) -> Any:
    """A FAISS inner-product index of `kind` over `emb` (N, D) float32, trained and filled.

    `ivfpq` trains on a seeded sample of the vectors (enough for its lists and codes)."""
    import faiss

    check_index(kind, **params)
    p = {**DEFAULTS, **params}
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, dim = emb.shape
    description = factory_string(kind, dim, n, **p)
    index: Any = faiss.index_factory(dim, description, faiss.METRIC_INNER_PRODUCT)
    if kind == "ivf":
        index.train(emb)
    elif kind == "ivfpq":
        nlist = ivf_lists(p["nlist"], n)
        sample = max(nlist, 2 ** p["pq_bits"]) * MIN_POINTS_PER_LIST
        index.train(emb[np.random.default_rng(0).permutation(n)[:sample]])
    if kind in ("ivf", "ivfpq"):
        index.nprobe = min(p["nprobe"], index.nlist)
    elif kind == "hnsw":
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
    index.add(emb)
    return index


def search_parameters(index: Any, positions: np.ndarray) -> Any:
    """FAISS search parameters that keep only `positions` of `index` (a metadata filter), with
    the index's own `nprobe` or `ef_search`."""
    import faiss

    fa: Any = faiss
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(positions, dtype=np.int64))
    if isinstance(index, faiss.IndexIVF):
        return fa.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    if isinstance(index, faiss.IndexHNSW):
        return fa.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return fa.SearchParameters(sel=selector)


# An IVF index (ivf, ivfpq) is updated in place with its quantiser (and product quantiser) as
# trained; once the vectors it holds have grown past REBUILD_GROWTH times (or shrunk below
# 1 / REBUILD_GROWTH of) those it was trained on, it is rebuilt and trained again.
REBUILD_GROWTH = 2.0


def update_plan(indexed: pd.DataFrame, current: dict[str, str]) -> tuple[np.ndarray, list[str]]:
    """What turns an index into one of `current` (artwork id -> content hash): the positions to
    remove (rows of `indexed`, `id` and `sha256` per position, whose artwork left or changed) and
    the artworks to add (new or changed), in the order of `current`."""
    now = indexed["id"].map(current)
    stale = (now.isna() | (now != indexed["sha256"])).to_numpy()
    kept = set(indexed.loc[~stale, "id"])
    return np.flatnonzero(stale).astype(np.int64), [k for k in current if k not in kept]


def rebuild_reason(info: dict[str, Any], kind: str, params: dict[str, Any], size: int) -> str:
    """Why a saved index (its `index.json`: `kind`, `params`, `trained_on`) cannot be updated to
    `size` vectors of `kind` with `params` and must be rebuilt; "" when it can."""
    if "params" not in info or "trained_on" not in info:
        return "it was built by an older version"
    if info["kind"] != kind or info["params"] != params:
        return f"its kind or parameters changed ({info['kind']} {info['params']})"
    trained = max(1, int(info["trained_on"]))
    if (
        kind in ("ivf", "ivfpq")
        and not trained / REBUILD_GROWTH <= size <= trained * REBUILD_GROWTH
    ):
        return f"it now holds {size} vectors, its quantiser was trained on {trained}"
    return ""


def remove_positions(index: Any, positions: np.ndarray) -> None:
    """Remove the vectors at `positions` and renumber the others 0..n-1 in their order, as the
    id map's rows are dropped (flat indexes compact themselves; the lists of an IVF index are
    renumbered in place). An HNSW graph cannot remove nodes: ValueError."""
    import faiss

    if not len(positions):
        return
    if isinstance(index, faiss.IndexHNSW):
        raise ValueError("an HNSW index cannot remove vectors")
    gone = np.unique(np.asarray(positions, dtype=np.int64))
    removed = index.remove_ids(faiss.IDSelectorBatch(gone))
    if removed != len(gone):
        raise ValueError(f"removed {removed} of {len(gone)} vectors: the index and its map differ")
    if isinstance(index, faiss.IndexIVF):
        lists: Any = index.invlists
        for number in range(index.nlist):
            size = lists.list_size(number)
            if size:
                ids = faiss.rev_swig_ptr(lists.get_ids(number), size)  # a view, renumbered here
                ids -= np.searchsorted(gone, ids)
