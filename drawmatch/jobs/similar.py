"""The similar job: drawing-to-drawing neighbours of one model (thesis sec. 3.3.4: repeated
patterns across schools, countries and years), built once so that the workbench never searches
the whole collection at request time.

A FAISS index over the searchable drawings' embeddings (`kind=flat` exact; `ivf`, `hnsw`
approximate at collection scale) is searched, in chunks, by every drawing (its `k` closest other
drawings) and by every artwork (its `k` closest drawings). Output: `similar/<model_tag>/`
(see `drawmatch.data.neighbours`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.core.config import save_config, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag, read_embeddings
from drawmatch.data.neighbours import ARTWORKS_FILE, DRAWINGS_FILE, similar_dir
from drawmatch.retrieval.artwork_index import IndexParams, build_faiss_index


@dataclass(frozen=True)
class SimilarConfig(IndexParams):
    """Drawing-to-drawing neighbours of one model (thesis sec. 3.3.4): for every searchable
    drawing its `k` closest drawings, and for every artwork its `k` closest drawings, written to
    `similar/<model_tag>/` for the workbench."""

    out: str = setting("drawmatch-out", help="output root")
    model_tag: str | None = setting(None, help="model (null: the only one)")
    k: int = setting(12, ge=1, le=1000, help="neighbours kept")
    chunk: int = setting(2048, ge=1, help="queries searched at once")


@dataclass
class SimilarResult:
    model_tag: str
    directory: str
    drawings: int
    artworks: int


def neighbours(
    index: object,
    ids: list[str],
    queries: np.ndarray,
    query_ids: list[str],
    k: int,
    chunk: int,
    exclude_self: bool,
) -> pd.DataFrame:
    """Top-k of each query (Q, D) in `index` (positions -> `ids`), as a long table
    (query, rank 1-based, neighbour, distance = 1 - cosine)."""
    extra = 1 if exclude_self else 0
    kk = min(k + extra, len(ids))
    frames = []
    for start in range(0, len(query_ids), chunk):
        block = np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32)
        scores, positions = index.search(block, kk)  # type: ignore[attr-defined]
        for qi in range(len(block)):
            query = query_ids[start + qi]
            found = [
                (ids[p], 1.0 - float(s))
                for p, s in zip(positions[qi], scores[qi])
                if p >= 0 and not (exclude_self and ids[p] == query)
            ][:k]
            frames.append(
                pd.DataFrame(
                    {
                        "query": query,
                        "rank": np.arange(1, len(found) + 1, dtype=np.int32),
                        "neighbour": [f[0] for f in found],
                        "distance": np.array([f[1] for f in found], dtype=np.float32),
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=["query", "rank", "neighbour", "distance"])
    return pd.concat(frames, ignore_index=True)


def run(config: SimilarConfig) -> SimilarResult:
    tag = pick_model_tag(config.out, config.model_tag)
    catalogue = cat.read_catalogue(config.out)
    stored, emb = read_embeddings(config.out, tag)
    where = {k: i for i, k in enumerate(stored)}
    drawing_ids = [d for d in cat.query_ids(catalogue) if d in where]
    artwork_ids = [a for a in cat.gallery_ids(catalogue) if a in where]
    if not drawing_ids:
        raise ValueError(f"no drawing has a {tag} embedding: run `drawmatch embed` first")
    drawings = emb[[where[d] for d in drawing_ids]]
    index = build_faiss_index(
        drawings, config.kind, config.nlist, config.nprobe, config.hnsw_m, config.ef_search
    )
    directory = similar_dir(config.out, tag)
    by_drawing = neighbours(
        index, drawing_ids, drawings, drawing_ids, config.k, config.chunk, exclude_self=True
    ).rename(columns={"query": "drawing_id", "neighbour": "similar_id"})
    storage.write_parquet(
        pa.Table.from_pandas(by_drawing, preserve_index=False),
        storage.join(directory, DRAWINGS_FILE),
    )
    artworks = emb[[where[a] for a in artwork_ids]] if artwork_ids else emb[:0]
    by_artwork = neighbours(
        index, drawing_ids, artworks, artwork_ids, config.k, config.chunk, exclude_self=False
    ).rename(columns={"query": "artwork_id", "neighbour": "drawing_id"})
    storage.write_parquet(
        pa.Table.from_pandas(by_artwork, preserve_index=False),
        storage.join(directory, ARTWORKS_FILE),
    )
    save_config(config, storage.join(directory, "similar_config.yaml"))
    print(
        f"similar {tag}: {config.k} closest drawings of {len(drawing_ids)} drawings and "
        f"{len(artwork_ids)} artworks written to {directory}"
    )
    return SimilarResult(tag, str(directory), len(drawing_ids), len(artwork_ids))
