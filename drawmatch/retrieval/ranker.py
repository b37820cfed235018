"""One ranking path for search, evaluate and the workbench: a `Ranker` ranks artworks for query
embeddings in a mode and returns the top-k of every query as one long table.

- `global` (`IndexRanker`): the artwork index (`drawmatch.retrieval.artwork_index`), exact or
  approximate as it was built;
- `region`, `fused`, `verified` (`drawmatch.retrieval.region_search.RegionSearcher`): every gallery
  artwork scored by its global and region similarities, verified ones checked with local features.

Every table has `query` (the query's position), `rank` (1 = best), `artwork_id` and `distance`
(1 - cosine; in region modes 1 - the fused score, the verification bonus only orders the rows);
region modes add `score`, `global_score`, `region_score`, `inliers` and the matched box
`box_x0..box_y1`. `rank_with_confidence` adds the calibrated `confidence` and `likely_copy`
(`drawmatch.retrieval.calibration`). Evaluation (`evaluate_ranking`, `evaluate_detection`) ranks
the whole gallery, not a top-k (the global mode by the exact cosine of the stored embeddings,
never an approximate index).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import read_embeddings
from drawmatch.retrieval.artwork_index import ArtworkIndex
from drawmatch.retrieval.calibration import BACKGROUND_RANKS, Calibration, add_confidence
from drawmatch.retrieval.metrics import (
    metrics_from_ranks,
    relevant_ranks,
    retrieval_metrics,
    scores_in_chunks,
)
from drawmatch.retrieval.queries import query_images, query_paths
from drawmatch.retrieval.region_search import (
    VERIFIED_BONUS,
    Images,
    RegionSearcher,
    RegionSearchParams,
    check_mode,
)


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


def rank_with_confidence(
    ranker: Ranker,
    vectors: np.ndarray,
    k: int,
    calibration: Calibration | None,
    allowed: list[str] | None = None,
    images: Images = None,
) -> pd.DataFrame:
    """`ranker.rank` with `confidence` and `likely_copy` columns (`drawmatch.retrieval.calibration`;
    NaN and missing without a calibration): ranked deep enough for each query's background level,
    then cut to the top-k."""
    ranks = calibration.background_ranks if calibration else BACKGROUND_RANKS
    table = ranker.rank(vectors, max(k, ranks[1]), allowed, images)
    table["similarity"] = 1.0 - table["distance"]
    table = add_confidence(table, calibration)
    table = table[table["rank"] <= k].drop(columns=["similarity", "background"])
    return table.reset_index(drop=True)


def top_results(
    order: np.ndarray, similarity: np.ndarray, depth: int, inliers: np.ndarray | None = None
) -> pd.DataFrame:
    """The `depth` best artworks (by `order`, (Q, G), higher first, ties by gallery position) of
    every query as a long table: query, rank, gallery (position), similarity[, inliers]."""
    best = np.argsort(-order, axis=1, kind="stable")[:, :depth]
    n_q, d = best.shape
    frame = pd.DataFrame(
        {
            "query": np.repeat(np.arange(n_q), d),
            "rank": np.tile(np.arange(1, d + 1), n_q),
            "gallery": best.reshape(-1),
            "similarity": np.take_along_axis(similarity, best, axis=1).reshape(-1),
        }
    )
    if inliers is not None:
        frame["inliers"] = np.take_along_axis(inliers, best, axis=1).reshape(-1)
    return frame


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
    metrics, skipped, _results = evaluate_detection(
        out, tag, pairs, catalogue, ks, mode, params, depth=1
    )
    return metrics, skipped


def evaluate_detection(
    out: str | Path,
    tag: str,
    pairs: pd.DataFrame,
    catalogue: pd.DataFrame,
    ks: tuple[int, ...],
    mode: str = "global",
    params: RegionSearchParams | None = None,
    non_copies: list[str] | tuple[str, ...] = (),
    depth: int = BACKGROUND_RANKS[1],
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """`evaluate_ranking`, plus the top-`depth` results of every paired drawing and of the
    `non_copies` (drawings that copy nothing): drawing_id, rank, artwork_id, similarity (1 - the
    search's distance), inliers (region modes), copy (a known pair), non_copy_query."""
    check_mode(mode)
    gallery = cat.gallery_ids(catalogue)
    in_gallery = pairs["artwork_id"].isin(set(gallery))
    skipped, pairs = pairs[~in_gallery], pairs[in_gallery]
    if pairs.empty:
        raise ValueError("no pair has a searchable artwork: nothing to evaluate")
    queries = sorted(pairs["drawing_id"].unique())
    both = sorted(set(non_copies) & set(pairs["drawing_id"]))
    if both:
        raise ValueError(f"drawings listed as copying nothing have pairs: {both[:10]}")
    everyone = queries + sorted(set(non_copies))
    position = {a: i for i, a in enumerate(gallery)}
    grouped = pairs.groupby("drawing_id")["artwork_id"].apply(list)
    relevant = [np.array([position[a] for a in grouped[q]]) for q in queries]
    if mode == "global":
        metrics, results = _global_detection(out, tag, gallery, everyone, relevant, ks, depth)
    else:
        _ids, query_emb = read_embeddings(out, tag, ids=everyone)
        params = params or RegionSearchParams()
        searcher = RegionSearcher(out, tag, gallery, mode, params)
        images = query_images(query_paths(catalogue, out, everyone)) if mode == "verified" else None
        scores, details = searcher.score(query_emb, images)
        metrics = retrieval_metrics(scores[: len(queries)], relevant, ks)
        inliers = details["inliers"]
        verified = inliers >= params.min_inliers  # the bonus only orders: similarity is fused
        similarity = np.where(verified, scores - VERIFIED_BONUS - inliers, scores)
        results = top_results(scores, similarity, depth, inliers)
    results.insert(0, "drawing_id", [everyone[q] for q in results.pop("query")])
    results.insert(2, "artwork_id", [gallery[j] for j in results.pop("gallery")])
    copies = set(zip(pairs["drawing_id"], pairs["artwork_id"]))
    results["copy"] = [p in copies for p in zip(results["drawing_id"], results["artwork_id"])]
    results["non_copy_query"] = results["drawing_id"].isin(set(non_copies))
    return metrics, skipped, results


def _global_detection(
    out: str | Path,
    tag: str,
    gallery: list[str],
    everyone: list[str],
    relevant: list[np.ndarray],
    ks: tuple[int, ...],
    depth: int,
) -> tuple[dict[str, float], pd.DataFrame]:
    """The global mode of `evaluate_detection`: exact cosines of the stored embeddings in chunks;
    the first `len(relevant)` queries are the paired ones."""
    _ids, emb = read_embeddings(out, tag, ids=gallery + everyone)  # one pass over the parts
    gallery_emb, query_emb = emb[: len(gallery)], emb[len(gallery) :]
    ranks: list[np.ndarray] = []
    frames = []
    for start, block in scores_in_chunks(query_emb, gallery_emb):
        paired = max(0, min(len(relevant) - start, len(block)))
        if paired:
            ranks.extend(relevant_ranks(block[:paired], relevant[start : start + paired]))
        frame = top_results(block, block, depth)
        frame["query"] += start
        frames.append(frame)
    return metrics_from_ranks(ranks, ks), pd.concat(frames, ignore_index=True)
