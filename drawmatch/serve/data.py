"""The workbench's in-memory view of an output root, built once at start: pages answer from
these arrays and dicts and never read Parquet per request.

- `showable`: the catalogue rows people may see (status ok, never a verso), by id;
- the drawing grid's filter codes and pre-sorted orders (`grid.DrawingGrid`), the artworks
  grid's order and search text (`grid.ArtworkGrid`);
- per model tag: drawing embeddings (float16), the artwork index, batch-search candidates with
  their calibrated confidence sorted for the review queue (`review_queue.ReviewQueue`), neighbour tables (similar drawings, drawings
  closest to an artwork: `neighbours.Neighbours`);
- the query models for uploads: every model, loaded in the background at start; `/healthz`
  answers 503 "loading" until they are all loaded, and no upload waits on one after that;
- region searchers (`drawmatch.retrieval.region_search`) for the region modes, loaded on first use per model
  and mode: the drawing and upload pages can rank by region, fused or verified search and show the
  matched box on each artwork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import list_model_tags, read_embeddings
from drawmatch.data.neighbours import (
    ARTWORKS_FILE,
    DRAWINGS_FILE,
    candidates_path,
    read_table,
    similar_dir,
)
from drawmatch.retrieval.artwork_index import ArtworkIndex
from drawmatch.retrieval.calibration import Calibration, add_confidence, read_calibration
from drawmatch.serve.grid import ArtworkGrid, DrawingGrid, display_text
from drawmatch.serve.neighbours import Grouped, Neighbours
from drawmatch.serve.review_queue import Candidates, ReviewQueue

log = logging.getLogger("drawmatch.serve")


@dataclass(frozen=True)
class RegionHit:
    """One artwork of a region-mode ranking: `box` is the matched part of the artwork (x0, y0,
    x1, y1 in fractions of its width and height; None when there is none or when the score came
    from the whole image), `inliers` the keypoints verified against it (None when not checked
    or none matched), `verified` whether they passed, `confidence` the calibrated likely-copy
    confidence (None without a calibration)."""

    artwork: str
    rank: int
    distance: float
    box: tuple[float, ...] | None
    inliers: int | None
    verified: bool
    confidence: float | None = None
    likely_copy: bool = False


@dataclass
class ModelData:
    tag: str
    info: dict[str, Any]
    drawing_rows: dict[str, int]
    drawing_emb: np.ndarray  # (N, D) float16
    index: ArtworkIndex | None
    candidates: Candidates | None
    by_drawing: Grouped | None  # candidates grouped per drawing (fallback without an index)
    similar: Grouped | None
    artwork_drawings: Grouped | None
    calibration: Calibration | None = None  # of the candidates' search mode, at start

    def drawing_vector(self, drawing_id: str) -> np.ndarray | None:
        row = self.drawing_rows.get(drawing_id)
        if row is None:
            return None
        return self.drawing_emb[row : row + 1].astype(np.float32)


class QueryModels:
    """Embedding models for uploaded images, loaded in background threads: every model of the
    workbench at start (`start_all`, one after the other), or one on demand (`start`)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.models: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.started: dict[str, float] = {}

    def _claim(self, tags: list[str]) -> list[str]:
        """The tags not yet loading or loaded, now marked as started."""
        with self.lock:
            todo = [t for t in tags if t not in self.models and t not in self.started]
            for tag in todo:
                self.started[tag] = time.time()
        return todo

    def start(self, tag: str) -> None:
        """Load one model in a thread of its own (nothing if it is loading or loaded)."""
        for todo in self._claim([tag]):
            threading.Thread(
                target=self._load, args=(todo,), daemon=True, name=f"load-{tag}"
            ).start()

    def start_all(self, tags: list[str]) -> None:
        """Load every model, one after the other, in one background thread."""
        todo = self._claim(tags)
        if todo:
            threading.Thread(
                target=self._load_each, args=(todo,), daemon=True, name="load-models"
            ).start()

    def _load_each(self, tags: list[str]) -> None:
        for tag in tags:
            self._load(tag)

    def _load(self, tag: str) -> None:
        try:
            import torch

            from drawmatch.models.embedder import embedder_for

            torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
            with self.lock:
                self.started[tag] = time.time()
            model = embedder_for(self.out, tag)
            with self.lock:
                self.models[tag] = model
            log.info("query model %s loaded in %.1f s", tag, time.time() - self.started[tag])
        except Exception as exc:  # reported on the upload page and by /healthz
            log.exception("query model %s failed to load", tag)
            with self.lock:
                self.errors[tag] = f"{type(exc).__name__}: {exc}"

    def get(self, tag: str) -> Any | None:
        """The loaded model, or None (loading starts if it had not)."""
        with self.lock:
            model = self.models.get(tag)
        if model is None:
            self.start(tag)
        return model

    def status(self, tag: str) -> str:
        with self.lock:
            if tag in self.models:
                return "ready"
            if tag in self.errors:
                return "error"
            return "loading" if tag in self.started else "not loaded"

    def loading(self) -> bool:
        """Whether a model is still loading (the workbench is not ready yet)."""
        with self.lock:
            return any(t not in self.models and t not in self.errors for t in self.started)


def region_hits(table: pd.DataFrame, mode: str, min_inliers: int) -> list[RegionHit]:
    """The rows of a region-mode ranking (`RegionSearcher.rank`) as hits. A hit keeps its box
    only where the region or the keypoints raised its score: in `region` mode (the best
    region's score is the score), for a verified artwork (`min_inliers` or more), or where the
    fused score is above the whole image's; an artwork ranked by its whole image gets no box.
    `inliers` is kept only where keypoints were found (never 0); `confidence` and
    `likely_copy` come from the table's columns where a calibration gave them."""
    from drawmatch.retrieval.region_search import BOX_COLUMNS

    nan = pd.Series(np.nan, index=table.index)
    confidence = table.get("confidence", nan).to_numpy(dtype=np.float64)
    likely_copy = table.get("likely_copy", nan).fillna(False).to_numpy(dtype=bool)
    boxes = table[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)
    inliers = table["inliers"].to_numpy(dtype=np.int64)
    verified = (inliers >= min_inliers) if mode == "verified" else np.zeros(len(table), bool)
    raised = (
        np.ones(len(table), bool)
        if mode == "region"
        else verified
        | (table["score"].to_numpy(np.float64) > table["global_score"].to_numpy(np.float64))
    )
    return [
        RegionHit(
            str(artwork),
            int(rank),
            float(distance),
            None if not up or np.isnan(box).any() else tuple(float(v) for v in box),
            int(n) if n > 0 else None,
            bool(ok),
            None if np.isnan(c) else float(c),
            bool(likely),
        )
        for artwork, rank, distance, box, n, ok, up, c, likely in zip(
            table["artwork_id"],
            table["rank"].to_numpy(dtype=np.int64),
            table["distance"].to_numpy(dtype=np.float64),
            boxes,
            inliers,
            verified,
            raised,
            confidence,
            likely_copy,
        )
    ]


def candidates_confidence(
    out: str, tag: str, table: pd.DataFrame
) -> tuple[pd.DataFrame, Calibration | None]:
    """Batch-search candidates with their calibrated `confidence` and `likely_copy`, and the
    calibration of `tag` in the candidates' mode (None without one). The confidence is the one
    batch search wrote; where it wrote none (the candidates predate the calibration) it is
    computed here as search computes it (`add_confidence`), provided the candidates reach the
    calibration's last background rank (search ranks that deep before cutting to k, so a
    shallower file cannot give the same background level: it stays without a confidence)."""
    mode = str(table["mode"].iloc[0]) if "mode" in table else "global"
    calibration = read_calibration(out, tag, mode)
    if "confidence" in table and table["confidence"].notna().any():
        return table, calibration
    if calibration is None or table["rank"].max() < calibration.background_ranks[1]:
        return table, calibration
    scored = add_confidence(
        table.assign(similarity=1.0 - table["distance"]), calibration, by="drawing_id"
    )
    return scored.drop(columns=["similarity", "background"]), calibration


def _release_memory() -> None:
    """Give the loading's temporary memory (full-precision embeddings, Parquet buffers) back to
    the system (glibc keeps freed memory otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Workbench:
    """Everything the pages read, built once from an output root: the showable catalogue, the
    drawing `grid`, each model's data and rankings, the `review` queue, the `neighbours` and the
    `query_models` for uploads."""

    def __init__(self, out: str, load_models: bool = True, default_tag: str | None = None) -> None:
        import faiss

        # One query at a time: FAISS' OpenMP threads only add overhead (and spin under load).
        faiss.omp_set_num_threads(1)
        started = time.time()
        self.out = storage.absolute(out)
        catalogue = cat.read_catalogue(self.out)
        self.roots = cat.read_roots(self.out)
        shown = catalogue[cat.usable(catalogue)].reset_index(drop=True)
        self.sources = dict(zip(shown["id"], cat.resolve_paths(shown, self.roots)))
        self.root_of = dict(zip(shown["id"], shown["root"]))
        self.sha = dict(zip(shown["id"], shown["sha256"].astype(str)))
        self.collection = dict(zip(shown["id"], shown["collection"]))
        self.meta = shown.set_index("id", drop=False)
        self.grid = DrawingGrid(shown[shown["collection"] == "drawing"])
        self.artwork_ids = set(shown.loc[shown["collection"] == "artwork", "id"])
        self.artworks = ArtworkGrid(shown[shown["collection"] == "artwork"])
        self.gallery = cat.gallery_ids(catalogue)
        self._searchers: dict[tuple[str, str], Any] = {}
        self._searchers_lock = threading.Lock()
        self.tags = list_model_tags(self.out)
        self.models: dict[str, ModelData] = {t: self._load_model(t) for t in self.tags}
        if default_tag is not None and default_tag not in self.models:
            raise FileNotFoundError(f"no embeddings for model {default_tag!r}; have {self.tags}")
        self.default_tag = default_tag or (self.tags[0] if self.tags else None)
        self.review = ReviewQueue({t: m.candidates for t, m in self.models.items()})
        self.neighbours = Neighbours(
            {t: m.similar for t, m in self.models.items()},
            {t: m.artwork_drawings for t, m in self.models.items()},
            {t: m.candidates for t, m in self.models.items()},
        )
        self.query_models = QueryModels(self.out)
        if load_models and self.default_tag:  # the model shown first, then the others
            first = [self.default_tag, *(t for t in self.tags if t != self.default_tag)]
            self.query_models.start_all(first)
        _release_memory()
        self.load_seconds = time.time() - started
        log.info(
            "workbench: %d drawings, %d artworks, models %s, loaded in %.1f s",
            len(self.grid),
            len(self.artwork_ids),
            self.tags,
            self.load_seconds,
        )

    def is_drawing(self, key: str) -> bool:
        return self.collection.get(key) == "drawing"

    def is_artwork(self, key: str) -> bool:
        return self.collection.get(key) == "artwork"

    def row(self, key: str) -> dict[str, Any]:
        """Catalogue metadata of a showable id, as display text (empty for unknown values)."""
        record = self.meta.loc[key]
        return {str(c): display_text(v) for c, v in record.items()}

    # -- models ------------------------------------------------------------------------------
    def _load_model(self, tag: str) -> ModelData:
        from drawmatch.data.embeddings import read_model_info

        info = read_model_info(self.out, tag)
        ids, emb = read_embeddings(self.out, tag)
        keep = [i for i, k in enumerate(ids) if self.collection.get(k) == "drawing"]
        drawing_rows = {ids[i]: j for j, i in enumerate(keep)}
        drawing_emb = emb[keep].astype(np.float16)
        del emb
        try:
            index: ArtworkIndex | None = ArtworkIndex(self.out, tag)
        except FileNotFoundError:
            index = None
        candidates, by_drawing, calibration = self._load_candidates(tag, grouped=index is None)
        similar = self._load_grouped(storage.join(similar_dir(self.out, tag), DRAWINGS_FILE))
        artwork_drawings = self._load_grouped(
            storage.join(similar_dir(self.out, tag), ARTWORKS_FILE)
        )
        if similar is not None:
            similar = self._filtered(similar, "drawing_id", "similar_id")
        if artwork_drawings is not None:
            artwork_drawings = self._filtered(artwork_drawings, "artwork_id", "drawing_id")
        return ModelData(
            tag,
            info,
            drawing_rows,
            drawing_emb,
            index,
            candidates,
            by_drawing,
            similar,
            artwork_drawings,
            calibration,
        )

    def _load_grouped(self, path: str) -> Grouped | None:
        table = read_table(path)
        return None if table is None else Grouped(table, table.columns[0])

    def _filtered(self, grouped: Grouped, key: str, other: str) -> Grouped:
        frame = grouped.frame
        keep = frame[key].isin(self.collection.keys()) & frame[other].isin(self.collection.keys())
        return grouped if keep.all() else Grouped(frame[keep], key)

    def _load_candidates(
        self, tag: str, grouped: bool
    ) -> tuple[Candidates | None, Grouped | None, Calibration | None]:
        """The candidates sorted for the review queue with their confidence
        (`candidates_confidence`), (`grouped`: for a model without an artwork index, whose
        drawing pages read them) grouped per drawing, and the calibration of their mode."""
        table = read_table(candidates_path(self.out, tag))
        if table is None or table.empty:
            return None, None, read_calibration(self.out, tag, "global")
        table, calibration = candidates_confidence(self.out, tag, table)
        table = table[
            table["drawing_id"].map(self.is_drawing) & table["artwork_id"].map(self.is_artwork)
        ]
        by_drawing = (
            Grouped(table[["drawing_id", "rank", "artwork_id", "distance"]], "drawing_id")
            if grouped
            else None
        )
        candidates = Candidates.from_table(table)
        return candidates, by_drawing, calibration

    def top_artworks(self, tag: str, drawing_id: str, k: int) -> list[tuple[str, int, float]]:
        """(artwork id, 1-based rank, distance) of a drawing's k closest artworks under `tag`:
        searched live in the artwork index, or else read from the batch-search candidates."""
        model = self.models[tag]
        vector = model.drawing_vector(drawing_id)
        if model.index is not None and vector is not None:
            return self.search_vector(tag, vector, k)
        if model.by_drawing is not None:
            rows = model.by_drawing.get(drawing_id).head(k)
            return [
                (str(a), int(r), float(d))
                for a, r, d in zip(rows["artwork_id"], rows["rank"], rows["distance"])
            ]
        return []

    def search_vector(self, tag: str, vector: np.ndarray, k: int) -> list[tuple[str, int, float]]:
        """The k closest showable artworks of a query vector (1, D) in the artwork index of `tag`
        (`drawmatch.retrieval.ranker`), ranked 1.. among those shown."""
        from drawmatch.retrieval.ranker import IndexRanker

        model = self.models[tag]
        if model.index is None:
            return []
        table = IndexRanker(model.index).rank(vector.astype(np.float32), k)
        found = [
            (str(a), float(d))
            for a, d in zip(table["artwork_id"], table["distance"])
            if self.is_artwork(a)
        ]
        return [(a, r + 1, d) for r, (a, d) in enumerate(found)]

    def region_searcher(self, tag: str, mode: str) -> Any:
        """The region ranker of `tag` in `mode` (loaded once; FileNotFoundError or
        ValueError, e.g. a stale region index, when it cannot be used)."""
        from drawmatch.retrieval.region_search import RegionSearcher, RegionSearchParams

        with self._searchers_lock:
            key = (tag, mode)
            if key not in self._searchers:
                self._searchers[key] = RegionSearcher(
                    self.out, tag, self.gallery, mode, RegionSearchParams()
                )
            return self._searchers[key]

    def region_top(
        self, tag: str, mode: str, vector: np.ndarray, image: Any, k: int
    ) -> list[RegionHit]:
        """The k best artworks for one query (vector (1, D); `image`: a PIL image, needed in
        verified mode) in a region mode, each with its matched box where it raised the score and
        its calibrated confidence (None without a calibration)."""
        from drawmatch.retrieval.calibration import read_calibration
        from drawmatch.retrieval.ranker import rank_with_confidence

        searcher = self.region_searcher(tag, mode)
        calibration = read_calibration(self.out, tag, mode)
        images = [image] if image else None
        table = rank_with_confidence(
            searcher, vector.astype(np.float32), k, calibration, None, images
        )
        return region_hits(table, mode, searcher.params.min_inliers)

    def drawing_image(self, drawing_id: str) -> Any:
        from drawmatch.core.images import open_image

        return open_image(self.sources[drawing_id], draft_size=1024)
