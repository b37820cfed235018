"""The region index: a FAISS index over one model's artwork region vectors, under
`index/<model_tag>/regions/`: a base and delta segments, each a FAISS index and its map (position
-> `id`, `region`, `box`, `sha256`: the content hash of the artwork the vector was made from), named
by `index.json` (provenance: model tag, weights hash, region settings, kind; and the manifest:
`drawmatch.retrieval.segments`).

Like the artwork index, a region index is a snapshot: loading one for a gallery refuses it
(`StaleIndexError`, naming the command that rebuilds it) once an artwork was added, removed or
re-embedded since it was built, or when it was built for another model tag or weights.

An artwork's region score for a query is the best (highest cosine) of its regions. `flat` is
exact; `ivf` (IVFFlat: `nprobe` of `nlist` lists searched, exact vectors), `ivfpq` (IVF with
product quantisation, 8-bit codes, `pq_m` sub-vectors: 20x smaller, less accurate) and `hnsw`
(HNSWFlat) are approximate, for large galleries. An approximate search looks at the `n_hits` best
region vectors; an artwork none of whose regions is among them gets the lowest score seen (an upper
bound of its true region score).

The regions job keeps the index up to date (`update_region_index`): the rows of removed or changed
artworks are listed as removed and the region vectors of new or changed ones read (from the parts
that hold them) and written as a new segment, so what it reads and writes follows what changed
(every few updates the segments are compacted into a new base), with the rules of the artwork index for what must be rebuilt
instead (`drawmatch.retrieval.artwork_index`: IVF and IVF-PQ keep their trained quantisers until
the index has grown past twice or shrunk below half the vectors they were trained on; HNSW takes
no removals).

Fusion (`fuse`): `global + weight * max(0, region - global - margin)`: the region term only adds
where a window of the artwork matches the query clearly better than the whole artwork does; with
`weight = 0` it is exactly the global score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.data.embeddings import embeddings_dir, read_model_info, stored_ids
from drawmatch.models.region_embedder import read_region_settings, read_regions, regions_dir
from drawmatch.retrieval import segments
from drawmatch.retrieval.artwork_index import StaleIndexError, index_dir, parts_holding, staleness
from drawmatch.retrieval.faiss_index import (
    build_index,
    check_index,
    rebuild_reason,
    update_plan,
)

MAP_FILE = "regions.parquet"  # the map of a region index written before segments
INFO_FILE = segments.INFO_FILE
KINDS = ("flat", "ivf", "ivfpq", "hnsw")


def region_index_dir(out: str | Path, tag: str) -> str:
    return storage.join(index_dir(out, tag), "regions")


def build_region_faiss(
    emb: np.ndarray,
    kind: str = "flat",
    nlist: int = 1024,
    nprobe: int = 32,
    pq_m: int = 64,
    hnsw_m: int = 32,
    ef_search: int = 128,
) -> Any:
    """A FAISS inner-product index over region vectors (N, D) float32; `ivfpq` uses 8-bit codes
    (`drawmatch.retrieval.faiss_index`)."""
    params = {"nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, "hnsw_m": hnsw_m}
    check_index(kind, KINDS, "region index", ef_search=ef_search, **params)
    return build_index(emb, kind, ef_search=ef_search, pq_bits=8, **params)


def region_table(
    ids: list[str], region: np.ndarray, box: np.ndarray, sha256: list[str] | None = None
) -> pa.Table:
    """The map of region vectors: `id`, `region`, `box` (4 floats) and `sha256` when given."""
    box_values = pa.array(np.ascontiguousarray(box, dtype=np.float32).reshape(-1))
    columns = {
        "id": pa.array(ids, pa.string()),
        "region": pa.array(np.asarray(region, dtype=np.int16)),
        "box": pa.FixedSizeListArray.from_arrays(box_values, 4),
    }
    if sha256 is not None:
        columns["sha256"] = pa.array(sha256, pa.string())
    return pa.table(columns)


def write_region_index(
    directory: str,
    index: Any,
    ids: list[str],
    region: np.ndarray,
    box: np.ndarray,
    info: dict[str, Any],
    sha256: list[str] | None = None,
) -> None:
    """Save the index, its position -> (id, region, box, sha256 when given) map and its
    provenance as a new base (`drawmatch.retrieval.segments`)."""
    segments.save_base(directory, index, region_table(ids, region, box, sha256), info, MAP_FILE)


def _regions_of(
    out: str | Path, tag: str, ids: list[str], parts: list[str] | None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The stored region rows of `ids` (sorted by id, as `read_regions` gives them)."""
    got, region, box, emb = read_regions(out, tag, parts)
    keep = np.isin(np.asarray(got, dtype=object), np.asarray(ids, dtype=object))
    return [k for k, kept in zip(got, keep) if kept], region[keep], box[keep], emb[keep]


def update_region_index(
    out: str | Path,
    tag: str,
    current: dict[str, str],
    params: dict[str, Any],
    provenance: dict[str, Any],
    rebuild: bool = False,
    stored: pd.DataFrame | None = None,
) -> tuple[int, str]:
    """Bring the saved region index up to date with `current` (artwork id -> content hash of its
    stored regions, in id order) and `params` (`kind` and the kind's parameters): updated where it
    can be (a new segment, `drawmatch.retrieval.segments`), else built from all region vectors of
    `current`, and written with `provenance` plus `trained_on`, `size` and `dim` as `index.json`.
    Returns its vectors and a line saying which it was and why. `stored`: the region store's
    `stored_ids` where the caller has read them already."""
    model = read_model_info(out, tag)
    directory = region_index_dir(out, tag)
    saved = None if rebuild else segments.read_saved(directory, MAP_FILE)
    reason = "rebuild=true" if rebuild else "no region index this version can update"
    if saved is not None:
        frame, info = saved.frame, saved.info
        remove, add = update_plan(frame, current)
        per_artwork = len(frame) // max(1, frame["id"].nunique())  # every artwork has all boxes
        size = len(frame) - len(remove) + len(add) * per_artwork
        reason = rebuild_reason(info, params["kind"], params, size)
        if info.get("weights_hash") != model["weights_hash"] or info.get("model_tag") != tag:
            reason = "its model changed"
        elif params["kind"] == "hnsw" and len(remove):
            reason = "an HNSW graph cannot remove vectors"
        if not reason:
            if stored is None:
                stored = stored_ids(regions_dir(out, tag))
            parts = parts_holding(stored, add) if add else []
            ids, region, box, emb = _regions_of(out, tag, add, parts) if add else ([], [], [], [])
            emb = np.asarray(emb, dtype=np.float32).reshape(-1, int(info["dim"]))
            table = region_table(
                ids, np.asarray(region), np.asarray(box), [current[k] for k in ids]
            )
            size = len(frame) - len(remove) + len(ids)
            trained = {"trained_on": info["trained_on"], "size": size, "dim": info["dim"]}
            how = segments.save_update(saved, remove, emb, table, {**provenance, **trained})
            said = segments.SAID[how]
            return size, f"updated: {len(remove)} vectors out, {len(add)} artworks in ({said})"
    ids, region, box, emb = _regions_of(out, tag, list(current), None)
    index = build_region_faiss(emb, **params)
    info = {**provenance, "trained_on": len(ids), "size": len(ids), "dim": int(emb.shape[1])}
    write_region_index(directory, index, ids, region, box, info, [current[k] for k in ids])
    return len(ids), f"built from all vectors ({reason})"


def best_per_artwork(
    hit_ids: list[str], hit_scores: np.ndarray, hit_boxes: np.ndarray
) -> tuple[dict[str, float], dict[str, tuple[float, ...]]]:
    """Collapse region hits (sorted or not) to each artwork's best score and its box."""
    scores: dict[str, float] = {}
    boxes: dict[str, tuple[float, ...]] = {}
    for a, s, b in zip(hit_ids, hit_scores, hit_boxes):
        if a not in scores or s > scores[a]:
            scores[a] = float(s)
            boxes[a] = tuple(float(v) for v in b)
    return scores, boxes


def fuse(
    global_scores: np.ndarray, region_scores: np.ndarray, weight: float, margin: float = 0.0
) -> np.ndarray:
    """Fused similarity: global + weight * max(0, region - global - margin) (any shapes that
    broadcast); weight 0 gives the global score exactly."""
    g = np.asarray(global_scores, dtype=np.float32)
    if weight == 0.0:
        return g
    r = np.asarray(region_scores, dtype=np.float32)
    return g + np.float32(weight) * np.maximum(0.0, r - g - np.float32(margin))


def rebuild_command(out: str | Path, tag: str) -> str:
    return f"drawmatch regions out={out} model_tag={tag}"


class RegionIndex:
    """A saved region index, checked against the embeddings' model and region settings and, when
    `gallery` (the current `catalogue.gallery_ids`) is given, against the gallery and the stored
    global artwork embeddings: a stale index is refused (`StaleIndexError`)."""

    def __init__(self, out: str | Path, tag: str, gallery: list[str] | None = None) -> None:
        directory = region_index_dir(out, tag)
        rebuild = rebuild_command(out, tag)
        if not storage.exists(storage.join(directory, INFO_FILE)):
            raise FileNotFoundError(f"no region index for model {tag!r}: run `{rebuild}` first")
        self.info = json.loads(storage.read_text(storage.join(directory, INFO_FILE)))
        if self.info.get("model_tag") != tag:
            raise StaleIndexError(
                f"region index {directory} was built for model {self.info.get('model_tag')!r}, "
                f"not {tag!r}: run `{rebuild}`"
            )
        model = read_model_info(out, tag)
        if self.info["weights_hash"] != model["weights_hash"]:
            raise StaleIndexError(
                f"region index {directory} was built from weights {self.info['weights_hash']} but "
                f"the embeddings of {tag} are from {model['weights_hash']}: run `{rebuild}`"
            )
        settings = read_region_settings(out, tag)
        if settings.get("boxes") != self.info.get("regions", {}).get("boxes"):
            raise StaleIndexError(
                f"region index {directory} is stale (other region settings): run `{rebuild}`"
            )
        self.index, table, self.info = segments.load(directory, MAP_FILE)
        self.ids: list[str] = table.column("id").to_pylist()
        if self.index.ntotal != len(self.ids):
            raise StaleIndexError(
                f"the region index of {tag} holds {self.index.ntotal} vectors but maps "
                f"{len(self.ids)} (written while being read?): run `{rebuild}`"
            )
        self.region = table.column("region").to_numpy()
        n = len(table)
        self.box = table.column("box").combine_chunks().flatten().to_numpy().reshape(n, 4)
        self.artworks = list(dict.fromkeys(self.ids))
        if gallery is not None:
            per_artwork = pd.DataFrame({"id": self.ids})
            if "sha256" in table.column_names:
                per_artwork["sha256"] = table.column("sha256").to_pylist()
            indexed = per_artwork.drop_duplicates("id")
            stored = stored_ids(embeddings_dir(out, tag))
            now = dict(zip(stored["id"], stored["sha256"]))
            failed = self.info.get("without_regions", {})  # same content: still failed, not stale
            gallery = [k for k in gallery if k not in failed or now.get(k) != failed[k]]
            diff = staleness(indexed, gallery, stored)
            if any(diff[k] for k in ("removed", "added", "changed")):
                raise StaleIndexError(
                    f"the region index of {tag} is out of date ({diff['removed']} artworks "
                    f"removed, {diff['added']} added, {diff['changed']} re-embedded since it was "
                    f"built): run `{rebuild}`"
                )

    def search(
        self, queries: np.ndarray, n_hits: int
    ) -> list[tuple[dict[str, float], dict[str, tuple[float, ...]], float]]:
        """For each query (Q, D): best region score per artwork among the `n_hits` best region
        vectors, its box, and the floor (the lowest score among the hits)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_hits = min(n_hits, len(self.ids))
        scores, positions = self.index.search(queries, n_hits)
        results = []
        for row_s, row_p in zip(scores, positions):
            valid = row_p >= 0
            row_s, row_p = row_s[valid], row_p[valid]
            best, boxes = best_per_artwork([self.ids[p] for p in row_p], row_s, self.box[row_p])
            floor = float(row_s.min()) if len(row_s) else -1.0
            results.append((best, boxes, floor))
        return results


def exact_region_scores(
    queries: np.ndarray, region_emb: np.ndarray, region_ids: list[str], gallery: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact best-region scores (Q, G) of every gallery artwork and the row of the best region
    (Q, G) in `region_emb`; `region_ids` must be grouped by id (as `read_regions` returns them).
    An artwork without regions gets -inf and row -1."""
    frame = pd.DataFrame({"id": region_ids})
    starts = frame.groupby("id", sort=False).indices
    q = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.full((len(q), len(gallery)), -np.inf, dtype=np.float32)
    rows = np.full((len(q), len(gallery)), -1, dtype=np.int64)
    sims = q @ region_emb.T  # (Q, N)
    for j, a in enumerate(gallery):
        where = starts.get(a)
        if where is None:
            continue
        block = sims[:, where]
        arg = block.argmax(axis=1)
        scores[:, j] = block[np.arange(len(q)), arg]
        rows[:, j] = np.asarray(where)[arg]
    return scores, rows
