"""Region search for partial copies: scores artworks for a query by a mode (see `RegionSearchParams`;
`drawmatch.retrieval.ranker` ranks through it in every mode but `global`):

- `global`: cosine of the query's embedding and the artwork's global embedding;
- `region`: the best cosine between the query's embedding and the artwork's region vectors;
- `fused`: `global + weight * max(0, region - global - margin)` (`drawmatch.retrieval.region_index.fuse`):
  a window must match clearly better than the whole artwork before it counts, so whole drawings,
  whose best match is a whole artwork, keep their global ranking;
- `verified`: the fused ranking, whose `verify_top` best artworks are checked with local features
  and RANSAC (`drawmatch.models.local_features`); an artwork with `min_inliers` inliers or more moves to the
  top, by inlier count (strong geometric evidence overrides the embeddings, weak evidence does not).
  `shortlist=words` verifies the `verify_top` best by visual words instead
  (`drawmatch.retrieval.local_shortlist`, for galleries too large to verify whole), `both` the
  union of the two lists.

Region scores come from the region index (`drawmatch.retrieval.region_index.RegionIndex`): the `n_hits` best
region vectors of the query; an artwork without a hit gets the lowest score seen. The matched box is
the best region's box, or the RANSAC inliers' bounding box for a verified artwork.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core.config import MAX_IMAGE_SIZE, Config, setting
from drawmatch.data.embeddings import read_embeddings
from drawmatch.models.local_features import (
    Features,
    extract,
    features_dir,
    read_features,
    verify,
)
from drawmatch.retrieval.local_shortlist import WordIndex, word_index_for
from drawmatch.retrieval.region_index import RegionIndex, fuse

SEARCH_MODES = ("global", "region", "fused", "verified")
SHORTLISTS = ("auto", "fused", "words", "both")  # verified mode's candidates (`shortlist_for`)


@dataclass(frozen=True)
class RegionSearchParams(Config):
    """Region search settings of search and evaluate (see `drawmatch.retrieval.region_search`), used by
    their `mode`: global (the whole-image embedding only), region (best region of each artwork),
    fused (global + weight * max(0, region - global - margin)) or verified (fused, then the
    `verify_top` best candidates checked with local features and RANSAC; `min_inliers` or more
    inliers put a candidate first, by inlier count). `n_hits` region vectors are read from an
    approximate index per query. The query's SIFT features are extracted at `query_feature_side`
    px with at most `query_n_features` keypoints (the artworks' are the regions job's
    `feature_side` and `n_features`) and matched as RootSIFT when `rootsift` is true. The
    candidates verified are the `verify_top` best by fused score, by visual words (`shortlist`
    words, a vocabulary of `words`) or both; `auto` (the default) takes the fused list while
    `verify_top` covers the whole gallery and visual words beyond (`shortlist_for`). Weight,
    margin and min_inliers are tuned on a held-out partial-copy set."""

    weight: float = setting(1.0, ge=0, le=100, help="fused: weight of the region score's excess")
    margin: float = setting(
        0.02, ge=-2, le=2, help="fused: excess a region needs over the global score"
    )
    n_hits: int = setting(2000, ge=1, help="region vectors read from the index per query")
    verify_top: int = setting(
        500, ge=0, help="verified: best candidates checked (500: a whole gallery)"
    )
    min_inliers: int = setting(5, ge=3, help="verified: inliers that put a candidate first")
    ratio: float = setting(0.8, ge=0.01, le=1, help="verified: Lowe's ratio of descriptor matches")
    rootsift: bool = setting(True, help="match SIFT descriptors as RootSIFT (Hellinger distance)")
    query_feature_side: int = setting(
        400, ge=32, le=MAX_IMAGE_SIZE, help="query's local features: longer side in px"
    )
    query_n_features: int = setting(500, ge=1, help="query's local features: most keypoints")
    shortlist: str = setting(
        "auto",
        choices=SHORTLISTS,
        help="verified: candidates, the verify_top best by fused score, visual words or both; "
        "auto: fused while verify_top covers the gallery, else words",
    )
    words: int = setting(4096, ge=2, help="verified, words shortlist: visual words (vocabulary)")


VERIFIED_BONUS = 100.0  # a verified artwork's score: fused + bonus + inliers (ranks it first)
Images = list[Any] | None  # the query images (PIL), one per query, that verified mode needs
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")  # the matched box, fractions of the artwork


def shortlist_for(shortlist: str, gallery_size: int, verify_top: int) -> str:
    """The shortlist a verified search uses: `shortlist` itself, or for `auto` the fused list
    while `verify_top` covers the whole gallery (every artwork is verified, so the list does not
    matter and no word index is needed) and visual words beyond (on larger galleries they hold
    the source of a detail far more often: `BENCHMARKS.md`, "Which artworks to verify")."""
    if shortlist != "auto":
        return shortlist
    return "fused" if gallery_size <= verify_top else "words"


def check_mode(mode: str) -> None:
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(SEARCH_MODES)}")


class RegionSearcher:
    """Scores every gallery artwork for query embeddings in one mode.

    `gallery` fixes the artworks and their order; their global embeddings are read once. The region
    index is loaded for every mode but `global`, local features for `verified`."""

    def __init__(
        self, out: str | Path, tag: str, gallery: list[str], mode: str, params: RegionSearchParams
    ) -> None:
        check_mode(mode)
        self.mode, self.params, self.gallery = mode, params, list(gallery)
        _ids, self.gallery_emb = read_embeddings(out, tag, ids=self.gallery)
        self.position = {a: i for i, a in enumerate(self.gallery)}
        self.index: RegionIndex | None = None
        self.features: dict[str, Features] = {}
        self.feature_kind, self.feature_side = "sift", 400
        self.words: WordIndex | None = None
        if mode != "global":
            self.index = RegionIndex(out, tag, self.gallery)
        if mode == "verified":
            local = self.index.info.get("local_features") if self.index else None
            if not local:
                raise FileNotFoundError(
                    f"no local features for model {tag!r}: run `drawmatch regions` with "
                    "local_features=sift (or orb)"
                )
            self.feature_kind, self.feature_side = str(local["kind"]), int(local["max_side"])
            self.features = read_features(out, self.feature_kind, self.feature_side)
            if shortlist_for(params.shortlist, len(self.gallery), params.verify_top) != "fused":
                where = features_dir(out, self.feature_kind, self.feature_side)
                self.words = word_index_for(where, self.gallery, self.features, params.words)

    def query_features(self, image: Any) -> Features:
        """The query's local features, at the query's own side and keypoint limit (a detail is a
        small part of its artwork: artworks are stored at a larger side than queries need)."""
        return extract(
            image, self.feature_kind, self.params.query_feature_side, self.params.query_n_features
        )

    def candidates(self, fused: np.ndarray, query: Features) -> np.ndarray:
        """Gallery positions to verify for one query: the `verify_top` best by fused score
        (`shortlist=fused`), by visual words (`words`,
        `drawmatch.retrieval.local_shortlist`), or the union of both (`both`, fused first);
        `auto` as `shortlist_for` says."""
        top = self.params.verify_top
        shortlist = shortlist_for(self.params.shortlist, len(fused), top)
        by_fused = np.argsort(-fused, kind="stable")[:top]
        if shortlist == "fused" or self.words is None:
            return by_fused
        by_words = self.words.shortlist(query, top)
        if shortlist == "words":
            return by_words
        return np.concatenate([by_fused, by_words[~np.isin(by_words, by_fused)]])

    def score(
        self, queries: np.ndarray, images: list[Any] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scores (Q, G) of every gallery artwork (higher is better) and per-artwork details:
        `global`, `region` (Q, G) float32, `box` (Q, G, 4) float32 (NaN where there is none) and
        `inliers` (Q, G) int32 (-1 where not verified). `images` (PIL images of the queries) are
        needed in `verified` mode."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n_q, n_g = len(q), len(self.gallery)
        g = q @ self.gallery_emb.T
        details: dict[str, np.ndarray] = {
            "global": g,
            "region": np.full((n_q, n_g), np.nan, np.float32),
            "box": np.full((n_q, n_g, 4), np.nan, np.float32),
            "inliers": np.full((n_q, n_g), -1, np.int32),
        }
        if self.mode == "global" or self.index is None:
            return g, details
        r = details["region"]
        for qi, (best, boxes, floor) in enumerate(self.index.search(q, self.params.n_hits)):
            r[qi] = floor
            for a, s in best.items():
                j = self.position.get(a)
                if j is not None:
                    r[qi, j] = s
                    details["box"][qi, j] = boxes[a]
        if self.mode == "region":
            return r.copy(), details
        fused = fuse(g, r, self.params.weight, self.params.margin)
        if self.mode == "fused":
            return fused, details
        if images is None or len(images) != n_q:
            raise ValueError("verified mode needs the query images")
        # float64: the bonus and inlier count (100-1000) would leave float32 about 1e-5 of the
        # fused score, which `annotate` and the workbench recover as the distance
        final = fused.astype(np.float64)
        for qi in range(n_q):
            qf = self.query_features(images[qi])
            top = self.candidates(fused[qi], qf)
            for j in top:
                cand = self.features.get(self.gallery[j])
                if cand is None:
                    continue
                n, box = verify(
                    qf, cand, self.feature_kind, self.params.ratio, rootsift=self.params.rootsift
                )
                details["inliers"][qi, j] = n
                if n >= self.params.min_inliers:
                    final[qi, j] = float(fused[qi, j]) + VERIFIED_BONUS + n
                    if box is not None:
                        details["box"][qi, j] = box
        return final, details

    def rank(
        self, vectors: np.ndarray, k: int, allowed: list[str] | None = None, images: Images = None
    ) -> pd.DataFrame:
        """Top-k of each query as one long table (`drawmatch.retrieval.ranker`): `query`, then
        the `ranked` columns, then `distance` (1 - the fused score: a verified artwork's bonus
        only orders the rows)."""
        scores, details = self.score(vectors, images)
        frames = []
        for qi in range(len(scores)):
            frame = ranked(scores, details, qi, self.gallery, k, allowed)
            frame.insert(0, "query", qi)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        verified = table["inliers"] >= self.params.min_inliers  # -1 where not verified
        fused = table["score"] - np.where(verified, VERIFIED_BONUS + table["inliers"], 0.0)
        table["distance"] = 1.0 - fused
        return table


def ranked(
    scores: np.ndarray,
    details: dict[str, np.ndarray],
    qi: int,
    gallery: list[str],
    k: int,
    allowed: list[str] | None = None,
) -> pd.DataFrame:
    """Top-k rows for query `qi`: rank (1 = best), artwork_id, score, global_score, region_score, inliers,
    box_x0..box_y1 (the matched box in fractions of the artwork, NaN when none)."""
    order = np.argsort(-scores[qi], kind="stable")
    if allowed is not None:
        keep = {a for a in allowed}
        order = np.array([j for j in order if gallery[j] in keep], dtype=np.int64)
    order = order[:k]
    box = details["box"][qi, order]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),  # 1-based, as people read ranks
            "artwork_id": [gallery[j] for j in order],
            "score": scores[qi, order].astype(np.float64),
            "global_score": details["global"][qi, order].astype(np.float64),
            "region_score": details["region"][qi, order].astype(np.float64),
            "inliers": details["inliers"][qi, order],
        }
    )
    for c, name in enumerate(BOX_COLUMNS):
        frame[name] = box[:, c].astype(np.float64)
    return frame
