"""One ranking path for search, evaluate and the workbench: a `Ranker` ranks artworks for query
embeddings in a mode and returns the top-k of every query as one long table.

- `global` (`IndexRanker`): the artwork index (`drawmatch.retrieval.artwork_index`), exact or
  approximate as it was built;
- `region`, `fused`, `verified` (`drawmatch.retrieval.region_search.RegionSearcher`): every gallery
  artwork scored by its global and region similarities, verified ones checked with local features.

Every table has `query` (the query's position), `rank` (1 = best), `artwork_id` and `distance`
(1 - cosine; in region modes 1 - the fused score, the verification bonus only orders the rows);
region modes add `score`, `global_score`, `region_score`, `inliers` and the matched box
`box_x0..box_y1`. Evaluation (`evaluate_ranking`) ranks the whole gallery, not a top-k (the
global mode by the exact cosine of the stored embeddings, never an approximate index).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import read_embeddings
from drawmatch.retrieval.artwork_index import ArtworkIndex
from drawmatch.retrieval.metrics import retrieval_metrics, retrieval_metrics_from_embeddings
from drawmatch.retrieval.queries import query_images, query_paths
from drawmatch.retrieval.region_search import Images, RegionSearcher, RegionSearchParams, check_mode


class Ranker(Protocol):
    """Ranks artworks for (Q, D) query embeddings: the top-k long table (see the module)."""

    mode: str

    def rank(
        self, vectors: np.ndarray, k: int, allowed: list[str] | None = None, images: Images = None
    ) -> pd.DataFrame:
        """Top-k of each query; `allowed` keeps only those artworks, `images` (PIL, one per
        query) are needed in verified mode."""
        ...


class IndexRanker:
    """The global mode: nearest artworks in the artwork index."""

    mode = "global"

    def __init__(self, index: ArtworkIndex) -> None:
        self.index = index

    def rank(
        self, vectors: np.ndarray, k: int, allowed: list[str] | None = None, images: Images = None
    ) -> pd.DataFrame:
        ids, distances = self.index.search(vectors, k, allowed=allowed)
        rows = [
            (qi, rank, artwork, float(distance))
            for qi, row in enumerate(ids)
            for rank, (artwork, distance) in enumerate(zip(row, distances[qi]), start=1)
        ]
        return pd.DataFrame(rows, columns=["query", "rank", "artwork_id", "distance"])


def load_ranker(
    out: str | Path,
    tag: str,
    catalogue: pd.DataFrame,
    mode: str = "global",
    params: RegionSearchParams | None = None,
) -> Ranker:
    """The ranker of `tag` in `mode`: the artwork index for `global`, else a region searcher over
    the catalogue's gallery (a missing or stale index is refused with the command to run)."""
    check_mode(mode)
    if mode == "global":
        return IndexRanker(ArtworkIndex(out, tag, catalogue))
    return RegionSearcher(
        out, tag, cat.gallery_ids(catalogue), mode, params or RegionSearchParams()
    )


def evaluate_ranking(
    out: str | Path,
    tag: str,
    pairs: pd.DataFrame,
    catalogue: pd.DataFrame,
    ks: tuple[int, ...],
    mode: str = "global",
    params: RegionSearchParams | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Retrieval metrics of `pairs` ranked over the whole gallery in `mode` (`global`: exact
    cosine of the stored embeddings, in chunks); also returns the pairs left out (artwork not
    searchable)."""
    check_mode(mode)
    gallery = cat.gallery_ids(catalogue)
    in_gallery = pairs["artwork_id"].isin(set(gallery))
    skipped, pairs = pairs[~in_gallery], pairs[in_gallery]
    if pairs.empty:
        raise ValueError("no pair has a searchable artwork: nothing to evaluate")
    queries = sorted(pairs["drawing_id"].unique())
    position = {a: i for i, a in enumerate(gallery)}
    grouped = pairs.groupby("drawing_id")["artwork_id"].apply(list)
    relevant = [np.array([position[a] for a in grouped[q]]) for q in queries]
    if mode == "global":
        _ids, emb = read_embeddings(out, tag, ids=gallery + queries)  # one pass over the parts
        gallery_emb, query_emb = emb[: len(gallery)], emb[len(gallery) :]
        return retrieval_metrics_from_embeddings(query_emb, gallery_emb, relevant, ks), skipped
    _ids, query_emb = read_embeddings(out, tag, ids=queries)
    searcher = RegionSearcher(out, tag, gallery, mode, params or RegionSearchParams())
    images = query_images(query_paths(catalogue, out, queries)) if mode == "verified" else None
    scores, _details = searcher.score(query_emb, images)
    return retrieval_metrics(scores, relevant, ks), skipped
