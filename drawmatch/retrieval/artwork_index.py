"""The artwork index: a FAISS index over one model's artwork embeddings, under
`index/<model_tag>/`: a base and delta segments, each a FAISS index and its map (position -> id,
content hash), named by `index.json` (provenance and manifest: `drawmatch.retrieval.segments`).

Embeddings are L2-normalised, so inner product = cosine similarity and distance = 1 - score.
`flat` is exact; `ivf` and `hnsw` are approximate, for large galleries (the kinds, their
parameters and ranges: `drawmatch.retrieval.faiss_index`).

An index is a snapshot: loading one checks it against the current gallery and the stored artwork
embeddings (ids and content hashes only) and refuses it once an artwork was removed, added or
re-embedded since it was built; `drawmatch index` brings it up to date (`update_index`): the rows
of removed or changed artworks are listed as removed and the vectors of new or changed ones read
(from the embedding parts that hold them) and written as a new segment, so what it reads and
writes follows what changed, not the gallery (every few updates it compacts the segments into a
new base: `drawmatch.retrieval.segments`); loaded, the id map keeps the old order with the new
artworks at its end. An IVF index keeps its trained quantiser until it holds more than
`REBUILD_GROWTH` (2) times the vectors it was trained on, or fewer than half
(`drawmatch.retrieval.faiss_index`); an HNSW graph takes additions (written as a new base) but not
removals; either is then rebuilt, as is an index of other weights, kind or parameters, or one of
an older version (no `params` in `index.json`), and any with `rebuild=true`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.core.config import Config, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import embeddings_dir, read_embeddings, read_model_info, stored_ids
from drawmatch.retrieval import segments
from drawmatch.retrieval.faiss_index import (
    build_index,
    check_index,
    index_setting,
    rebuild_reason,
    search_parameters,
    update_plan,
)

IDS_FILE = "ids.parquet"  # the id map of an index written before segments
INFO_FILE = segments.INFO_FILE
KINDS = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexParams(Config):
    """The keys of a FAISS index over whole-image embeddings (the `index` job's artwork index,
    the `similar` job's drawing index): its kind and the parameters the kind uses."""

    kind: str = setting(
        "flat", choices=KINDS, help="index kind: flat is exact, the others approximate"
    )
    nlist: int = index_setting("nlist")
    nprobe: int = index_setting("nprobe")
    hnsw_m: int = index_setting("hnsw_m")
    ef_search: int = index_setting("ef_search")


def index_dir(out: str | Path, tag: str) -> str:
    return storage.join(out, "index", tag)


def build_faiss_index(
    emb: np.ndarray,
    kind: str = "flat",
    nlist: int = 1024,
    nprobe: int = 32,
    hnsw_m: int = 32,
    ef_search: int = 128,
) -> Any:
    """A FAISS inner-product index over `emb` (N, D) float32 (`drawmatch.retrieval.faiss_index`)."""
    check_index(kind, KINDS, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search)
    return build_index(emb, kind, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search)


def id_table(ids: list[str], sha256: list[str] | None = None) -> pa.Table:
    """The id map of an index: `id` per vector (and its artwork's content hash when given)."""
    columns = {"id": pa.array(ids, pa.string())}
    if sha256 is not None:
        columns["sha256"] = pa.array(sha256, pa.string())
    return pa.table(columns)


def write_index(
    directory: str,
    index: Any,
    ids: list[str],
    info: dict[str, Any],
    sha256: list[str] | None = None,
) -> None:
    """Save a FAISS index, its position -> id map (with each artwork's content hash when given,
    for the staleness check) and its provenance as a new base (`drawmatch.retrieval.segments`)."""
    if len(set(ids)) != len(ids):
        raise ValueError(f"an index maps each artwork once; {len(ids) - len(set(ids))} repeated")
    segments.save_base(directory, index, id_table(ids, sha256), info, IDS_FILE)


def parts_holding(stored: pd.DataFrame, ids: list[str]) -> list[str]:
    """The parts (`stored`: `id`, `part` as `stored_ids` gives them) that hold any of `ids`."""
    return sorted(set(stored.loc[stored["id"].isin(set(ids)), "part"]))


def update_index(
    out: str | Path,
    tag: str,
    current: dict[str, str],
    params: dict[str, Any],
    rebuild: bool = False,
    stored: pd.DataFrame | None = None,
) -> tuple[int, str]:
    """Bring the saved index up to date with `current` (gallery artwork id -> content hash of its
    stored embedding) and `params` (`kind` and the kind's parameters): updated where it can be
    (see the module's docstring), else built from all vectors, and written. Returns its size and
    a line saying which it was and why. `stored`: the embeddings' `stored_ids` where the caller
    has read them already."""
    model = read_model_info(out, tag)
    kind = params["kind"]
    directory = index_dir(out, tag)
    saved = None if rebuild else segments.read_saved(directory, IDS_FILE)
    reason = "rebuild=true" if rebuild else "no index this version can update"
    if saved is not None:
        remove, add = update_plan(saved.frame, current)
        size = len(saved.frame) - len(remove) + len(add)
        reason = rebuild_reason(saved.info, kind, params, size)
        if saved.info["weights_hash"] != model["weights_hash"]:
            reason = "its embeddings' weights changed"
        elif kind == "hnsw" and len(remove):
            reason = "an HNSW graph cannot remove vectors"
        if not reason:
            emb = np.zeros((0, int(saved.info["dim"])), dtype=np.float32)
            if add:
                if stored is None:
                    stored = stored_ids(embeddings_dir(out, tag))
                emb = read_embeddings(out, tag, add, parts_holding(stored, add))[1]
            table = id_table(add, [current[k] for k in add])
            how = segments.save_update(saved, remove, emb, table, {**saved.info, "size": size})
            return size, f"updated: {len(remove)} out, {len(add)} in ({segments.SAID[how]})"
    ids = list(current)
    _, emb = read_embeddings(out, tag, ids=ids)
    index = build_faiss_index(emb, **params)
    info = {
        "model_tag": tag,
        "weights_hash": model["weights_hash"],
        "kind": kind,
        "params": params,
        "trained_on": len(ids),
        "size": len(ids),
        "dim": int(emb.shape[1]),
    }
    write_index(directory, index, ids, info, sha256=[current[k] for k in ids])
    return len(ids), f"built from all vectors ({reason})"


class StaleIndexError(ValueError):
    """The index no longer matches the catalogue's gallery or the stored embeddings."""


def staleness(indexed: pd.DataFrame, gallery: list[str], stored: pd.DataFrame) -> dict[str, int]:
    """How an index's id map (`id`, optional `sha256`) differs from now: `removed` (indexed
    artworks no longer in the gallery or no longer embedded), `added` (gallery artworks embedded
    since, not in the index), `changed` (re-embedded since: another content hash) and `repeated`
    (ids mapped twice, left by older versions). Ids and hashes only, no vectors."""
    stored = stored.drop_duplicates("id", keep="first")  # as read_embeddings reads them
    current = set(gallery) & set(stored["id"])
    ids = set(indexed["id"])
    changed = 0
    if "sha256" in indexed.columns:
        now = stored.set_index("id")["sha256"]
        kept = indexed[indexed["id"].isin(current)]
        changed = int((now.reindex(kept["id"]).to_numpy() != kept["sha256"].to_numpy()).sum())
    return {
        "removed": len(ids - current),
        "added": len(current - ids),
        "changed": changed,
        "repeated": len(indexed) - len(ids),
    }


class ArtworkIndex:
    """A saved index, checked against the embeddings' model and, unless `check=False`, against the
    current gallery (`catalogue.gallery_ids`) and stored artwork embeddings: a stale index is
    refused (`StaleIndexError`). `search(queries, k)` -> ids, distances."""

    def __init__(
        self,
        out: str | Path,
        tag: str,
        catalogue: pd.DataFrame | None = None,
        check: bool = True,
    ) -> None:
        directory = index_dir(out, tag)
        if not storage.exists(storage.join(directory, INFO_FILE)):
            raise FileNotFoundError(f"no index for model {tag!r}: run `drawmatch index` first")
        self.info = json.loads(storage.read_text(storage.join(directory, INFO_FILE)))
        model = read_model_info(out, tag)
        if self.info["weights_hash"] != model["weights_hash"]:
            raise ValueError(
                f"index {directory} was built from weights {self.info['weights_hash']} but the "
                f"embeddings of {tag} are from {model['weights_hash']}: rebuild the index"
            )
        self.tag = tag
        self.weights_hash = str(model["weights_hash"])
        self.index, table, self.info = segments.load(directory, IDS_FILE)
        id_map = table.to_pandas()
        self.ids: list[str] = id_map["id"].tolist()
        if self.index.ntotal != len(self.ids):
            raise StaleIndexError(
                f"the index of {tag} holds {self.index.ntotal} vectors but maps {len(self.ids)} "
                f"ids (written while being read?): run `drawmatch index out={out} model_tag={tag}`"
            )
        if check:
            self.check_fresh(
                out, cat.read_catalogue(out) if catalogue is None else catalogue, id_map
            )

    def check_fresh(self, out: str | Path, catalogue: pd.DataFrame, id_map: pd.DataFrame) -> None:
        """Refuse an index built before the gallery or its embeddings changed."""
        diff = staleness(
            id_map, cat.gallery_ids(catalogue), stored_ids(embeddings_dir(out, self.tag))
        )
        if any(diff.values()):
            extra = "".join(
                f", {diff[key]} {word}"
                for key, word in (("changed", "re-embedded"), ("repeated", "repeated"))
                if diff[key]
            )
            raise StaleIndexError(
                f"the index of {self.tag} is out of date ({diff['removed']} artworks removed, "
                f"{diff['added']} added{extra} since it was built): "
                f"run `drawmatch index out={out} model_tag={self.tag}`"
            )

    def search(
        self, queries: np.ndarray, k: int, allowed: list[str] | None = None
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-k artworks for (Q, D) queries: ids per query and cosine distances (Q, k').

        `allowed` restricts the result to those artwork ids (a metadata filter)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params: Any = None
        if allowed is not None:
            where = {a: i for i, a in enumerate(self.ids)}
            positions = np.array(sorted(where[a] for a in allowed if a in where), dtype=np.int64)
            params = search_parameters(self.index, positions)
        k = min(k, len(self.ids))
        scores, positions = self.index.search(queries, k, params=params)
        result_ids = [[self.ids[p] for p in row if p >= 0] for row in positions]
        distances = 1.0 - scores
        return result_ids, distances
