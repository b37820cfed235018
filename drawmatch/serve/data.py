"""The workbench's in-memory view of an output root, built once at start: pages answer from
these arrays and dicts and never read Parquet per request.

- `showable`: the catalogue rows people may see (status ok, never a verso), by id;
- the drawing grid's filter codes and pre-sorted orders (numpy);
- per model tag: drawing embeddings (float16), the artwork index, batch-search candidates sorted
  for the review queue, neighbour tables (similar drawings, drawings closest to an artwork);
- the query models for uploads, loaded in background threads so that no request waits on them;
- region searchers (`drawmatch.retrieval.region_search`) for the region modes, loaded on first use per model
  and mode: the drawing and upload pages can rank by region, fused or verified search and show the
  matched box on each artwork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
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

log = logging.getLogger("drawmatch.serve")

GRID_FILTERS = ("year", "age_group", "country")
SORTS = {
    "id": ["id"],
    "year": ["year", "id"],
    "country": ["country", "id"],
    "age": ["age_group", "id"],
}
AGE_ORDER = ["3-5", "6-9", "10-13", "14-17", "18-25", "MS"]


class Grouped:
    """Rows of a long table grouped by a key column: `get(key)` -> DataFrame slice (fast).
    Id columns are kept as categoricals (one copy of each id string)."""

    def __init__(self, frame: pd.DataFrame, key: str) -> None:
        codes, _uniques = pd.factorize(frame[key])
        if len(codes) and (np.diff(codes) < 0).any():  # not written grouped: group it
            frame = frame.sort_values([key, "rank"], kind="stable")
            codes, _uniques = pd.factorize(frame[key])
        frame = frame.reset_index(drop=True)
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = frame[column].astype("category")
        self.frame = frame
        if len(codes):
            starts = np.concatenate([[0], np.flatnonzero(np.diff(codes)) + 1])
            ends = np.append(starts[1:], len(codes))
            keys = frame[key].to_numpy()[starts]
            self.where = {str(k): (int(a), int(b)) for k, a, b in zip(keys, starts, ends)}
        else:
            self.where = {}

    def get(self, key: str) -> pd.DataFrame:
        span = self.where.get(key)
        if span is None:
            return self.frame.iloc[0:0]
        return self.frame.iloc[span[0] : span[1]]


@dataclass
class Candidates:
    """Batch-search candidates of one model, closest first (codes into `drawings`/`artworks`)."""

    drawings: np.ndarray  # (C,) object: drawing id per code
    artworks: np.ndarray  # (A,) object
    drawing_code: np.ndarray  # (N,) int32, sorted by distance
    artwork_code: np.ndarray  # (N,) int32
    rank: np.ndarray  # (N,) int32, 1-based as in the file
    distance: np.ndarray  # (N,) float32
    d_index: dict[str, int] = field(default_factory=dict)  # drawing id -> code
    a_index: dict[str, int] = field(default_factory=dict)  # artwork id -> code

    sorted_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def key(self, drawing: str, artwork: str) -> int | None:
        """One number per (drawing, artwork) pair of the candidates, None if not a candidate."""
        d, a = self.d_index.get(drawing), self.a_index.get(artwork)
        return None if d is None or a is None else d * len(self.artworks) + a

    def __len__(self) -> int:
        return len(self.distance)


@dataclass(frozen=True)
class RegionHit:
    """One artwork of a region-mode ranking: `box` is the matched part of the artwork (x0, y0,
    x1, y1 in fractions of its width and height; None when there is none), `inliers` the
    keypoints verified against it (None when not checked), `verified` whether they passed."""

    artwork: str
    rank: int
    distance: float
    box: tuple[float, ...] | None
    inliers: int | None
    verified: bool


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

    def drawing_vector(self, drawing_id: str) -> np.ndarray | None:
        row = self.drawing_rows.get(drawing_id)
        if row is None:
            return None
        return self.drawing_emb[row : row + 1].astype(np.float32)


class QueryModels:
    """Embedding models for uploaded images, loaded in background threads."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.models: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.started: dict[str, float] = {}

    def start(self, tag: str) -> None:
        with self.lock:
            if tag in self.models or tag in self.started:
                return
            self.started[tag] = time.time()
        threading.Thread(target=self._load, args=(tag,), daemon=True, name=f"load-{tag}").start()

    def _load(self, tag: str) -> None:
        try:
            import torch

            from drawmatch.models.embedder import embedder_for

            torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
            model = embedder_for(self.out, tag)
            with self.lock:
                self.models[tag] = model
            log.info("query model %s loaded in %.1f s", tag, time.time() - self.started[tag])
        except Exception as exc:  # reported on the upload page
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


def _country(df: pd.DataFrame) -> pd.Series:
    if "country_iso3" in df.columns:
        iso = df["country_iso3"].astype("string")
        code = df["country_code"].astype("string") if "country_code" in df.columns else iso
        return iso.fillna(code)
    if "country_code" in df.columns:
        return df["country_code"].astype("string")
    return pd.Series(pd.NA, index=df.index, dtype="string")


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(pd.NA, index=df.index, dtype="object")


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Workbench:
    """Everything the pages read, built once from an output root."""

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
        self._build_grid(shown)
        self.artwork_ids = set(shown.loc[shown["collection"] == "artwork", "id"])
        self.gallery = cat.gallery_ids(catalogue)
        self._searchers: dict[tuple[str, str], Any] = {}
        self._searchers_lock = threading.Lock()
        self.tags = list_model_tags(self.out)
        self.models: dict[str, ModelData] = {t: self._load_model(t) for t in self.tags}
        if default_tag is not None and default_tag not in self.models:
            raise FileNotFoundError(f"no embeddings for model {default_tag!r}; have {self.tags}")
        self.default_tag = default_tag or (self.tags[0] if self.tags else None)
        self.query_models = QueryModels(self.out)
        if load_models and self.default_tag:
            self.query_models.start(self.default_tag)
        _release_memory()
        self.load_seconds = time.time() - started
        log.info(
            "workbench: %d drawings, %d artworks, models %s, loaded in %.1f s",
            len(self.grid),
            len(self.artwork_ids),
            self.tags,
            self.load_seconds,
        )

    # -- catalogue ---------------------------------------------------------------------------
    def _build_grid(self, shown: pd.DataFrame) -> None:
        drawings = shown[shown["collection"] == "drawing"]
        grid = pd.DataFrame(
            {
                "id": drawings["id"].astype(str).to_numpy(),
                "year": pd.to_numeric(_column(drawings, "year"), errors="coerce").to_numpy(),
                "age_group": _column(drawings, "age_group").astype("string").to_numpy(),
                "country": _country(drawings).to_numpy(),
                "styled": drawings["parent_id"].notna().to_numpy(),
            }
        )
        self.grid = grid
        self.styled = grid["styled"].to_numpy(dtype=bool)
        copies = drawings[drawings["parent_id"].notna()]
        self.copies: dict[str, list[tuple[str, str]]] = {}
        for key, parent, style in zip(copies["id"], copies["parent_id"], copies["style"]):
            self.copies.setdefault(str(parent), []).append((str(key), _text(style)))
        self.grid_ids = grid["id"].to_numpy(dtype=object)
        self.grid_row = {k: i for i, k in enumerate(self.grid_ids)}
        self.codes: dict[str, np.ndarray] = {}
        self.values: dict[str, list[tuple[str, int]]] = {}
        for name in GRID_FILTERS:
            column = grid[name]
            text = column.map(_text) if name == "year" else column.fillna("").astype(str)
            codes, uniques = pd.factorize(text.to_numpy(), sort=True)
            self.codes[name] = codes.astype(np.int32)
            counts = np.bincount(codes, minlength=len(uniques))
            values = [(str(u), int(c)) for u, c in zip(uniques, counts) if u != ""]
            if name == "age_group":
                values.sort(key=lambda v: (AGE_ORDER.index(v[0]) if v[0] in AGE_ORDER else 99, v))
            self.values[name] = values
        self.text = {name: self._text_col(name) for name in GRID_FILTERS}
        self.code_of = {
            name: {
                str(u): i for i, u in enumerate(pd.factorize(self._text_col(name), sort=True)[1])
            }
            for name in GRID_FILTERS
        }
        self.orders: dict[str, np.ndarray] = {}
        for sort, keys in SORTS.items():
            frame = grid[keys].copy()
            if "age_group" in keys:
                frame["age_group"] = frame["age_group"].map(
                    lambda v: AGE_ORDER.index(v) if isinstance(v, str) and v in AGE_ORDER else 99
                )
            columns: list[np.ndarray] = []
            for k in reversed(keys):
                if k in ("year", "age_group"):
                    columns.append(frame[k].astype(float).fillna(np.inf).to_numpy())
                else:  # unknown values last
                    columns.append(frame[k].fillna("\uffff").astype(str).to_numpy())
            self.orders[sort] = np.lexsort(columns).astype(np.int64)

    def _text_col(self, name: str) -> np.ndarray:
        column = self.grid[name]
        text = column.map(_text) if name == "year" else column.fillna("").astype(str)
        return np.asarray(text.to_numpy())

    def tile(self, key: str) -> dict[str, Any]:
        """What a grid tile shows of a drawing: id, year, country, age group, styled."""
        row = self.grid_row[key]
        return {
            "id": key,
            "year": self.text["year"][row],
            "country": self.text["country"][row],
            "age": self.text["age_group"][row],
            "styled": bool(self.styled[row]),
        }

    def is_drawing(self, key: str) -> bool:
        return self.collection.get(key) == "drawing"

    def is_artwork(self, key: str) -> bool:
        return self.collection.get(key) == "artwork"

    def row(self, key: str) -> dict[str, Any]:
        """Catalogue metadata of a showable id, as display text (empty for unknown values)."""
        record = self.meta.loc[key]
        return {str(c): _text(v) for c, v in record.items()}

    def select(
        self,
        filters: dict[str, str],
        collection: str,
        states: dict[str, str] | None,
        state: str,
        query: str,
        sort: str,
    ) -> np.ndarray:
        """Grid row positions matching the filters, in the sort order."""
        mask = np.ones(len(self.grid), dtype=bool)
        for name, value in filters.items():
            if not value:
                continue
            code = self.code_of[name].get(value)
            if code is None:
                return np.zeros(0, dtype=np.int64)
            mask &= self.codes[name] == code
        styled = self.styled
        if collection == "originals":
            mask &= ~styled
        elif collection == "styled":
            mask &= styled
        if state != "all" and states is not None:
            marked = np.zeros(len(self.grid), dtype=bool)
            wanted = {"annotated": ("match", "annotated"), "match": ("match",)}.get(state, ())
            for drawing, drawing_state in states.items():
                row = self.grid_row.get(drawing)
                if row is not None and drawing_state in wanted:
                    marked[row] = True
            if state == "unannotated":
                for drawing in states:
                    row = self.grid_row.get(drawing)
                    if row is not None:
                        marked[row] = True
                mask &= ~marked
            else:
                mask &= marked
        if query:
            mask &= self.grid["id"].str.contains(query, case=False, regex=False).to_numpy()
        order = self.orders[sort]
        return order[mask[order]]

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
        candidates, by_drawing = self._load_candidates(tag, grouped=index is None)
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
        )

    def _load_grouped(self, path: str) -> Grouped | None:
        table = read_table(path)
        return None if table is None else Grouped(table, table.columns[0])

    def _filtered(self, grouped: Grouped, key: str, other: str) -> Grouped:
        frame = grouped.frame
        keep = frame[key].isin(self.collection.keys()) & frame[other].isin(self.collection.keys())
        return grouped if keep.all() else Grouped(frame[keep], key)

    def _load_candidates(self, tag: str, grouped: bool) -> tuple[Candidates | None, Grouped | None]:
        """The candidates sorted for the review queue, and (`grouped`: for a model without an
        artwork index, whose drawing pages read them) grouped per drawing."""
        table = read_table(candidates_path(self.out, tag))
        if table is None or table.empty:
            return None, None
        table = table[
            table["drawing_id"].map(self.is_drawing) & table["artwork_id"].map(self.is_artwork)
        ]
        by_drawing = (
            Grouped(table[["drawing_id", "rank", "artwork_id", "distance"]], "drawing_id")
            if grouped
            else None
        )
        order = np.lexsort((table["rank"].to_numpy(), table["distance"].to_numpy(dtype=np.float64)))
        table = table.iloc[order]
        d_codes, d_uniques = pd.factorize(table["drawing_id"])
        a_codes, a_uniques = pd.factorize(table["artwork_id"])
        candidates = Candidates(
            drawings=np.asarray(d_uniques, dtype=object),
            artworks=np.asarray(a_uniques, dtype=object),
            drawing_code=d_codes.astype(np.int32),
            artwork_code=a_codes.astype(np.int32),
            rank=table["rank"].to_numpy(dtype=np.int32),
            distance=table["distance"].to_numpy(dtype=np.float32),
            d_index={str(d): i for i, d in enumerate(d_uniques)},
            a_index={str(a): i for i, a in enumerate(a_uniques)},
        )
        keys = d_codes.astype(np.int64) * len(a_uniques) + a_codes
        candidates.sorted_keys = np.unique(keys)
        return candidates, by_drawing

    def top_artworks(self, tag: str, drawing_id: str, k: int) -> list[tuple[str, int, float]]:
        """(artwork id, 1-based rank, distance) of a drawing's k closest artworks under `tag`:
        searched live in the artwork index, or else read from the batch-search candidates."""
        model = self.models[tag]
        vector = model.drawing_vector(drawing_id)
        if model.index is not None and vector is not None:
            ids, dist = model.index.search(vector, k)
            found = [(a, float(d)) for a, d in zip(ids[0], dist[0]) if self.is_artwork(a)]
            return [(a, r + 1, d) for r, (a, d) in enumerate(found)]
        if model.by_drawing is not None:
            rows = model.by_drawing.get(drawing_id).head(k)
            return [
                (str(a), int(r), float(d))
                for a, r, d in zip(rows["artwork_id"], rows["rank"], rows["distance"])
            ]
        return []

    def search_vector(self, tag: str, vector: np.ndarray, k: int) -> list[tuple[str, int, float]]:
        model = self.models[tag]
        if model.index is None:
            return []
        ids, dist = model.index.search(vector.astype(np.float32), k)
        found = [(a, float(d)) for a, d in zip(ids[0], dist[0]) if self.is_artwork(a)]
        return [(a, r + 1, d) for r, (a, d) in enumerate(found)]

    def region_searcher(self, tag: str, mode: str) -> Any:
        """The region searcher of `tag` in `mode` (loaded once; FileNotFoundError or
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
        verified mode) in a region mode, each with its matched box."""
        from drawmatch.retrieval.region_search import VERIFIED_BONUS, ranked

        searcher = self.region_searcher(tag, mode)
        scores, details = searcher.score(vector.astype(np.float32), [image] if image else None)
        table = ranked(scores, details, 0, searcher.gallery, k)
        boxes = table[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=np.float64)
        hits = []
        for i, (artwork, rank, score, inliers) in enumerate(
            zip(
                table["artwork_id"].astype(str),
                table["rank"].to_numpy(dtype=np.int64),
                table["score"].to_numpy(dtype=np.float64),
                table["inliers"].to_numpy(dtype=np.int64),
            )
        ):
            verified = mode == "verified" and inliers >= searcher.params.min_inliers
            shown = float(score) - (VERIFIED_BONUS + float(inliers) if verified else 0.0)
            box = boxes[i]
            hits.append(
                RegionHit(
                    artwork,
                    int(rank),
                    1.0 - shown,
                    None if np.isnan(box).any() else tuple(float(v) for v in box),
                    int(inliers) if inliers >= 0 else None,
                    bool(verified),
                )
            )
        return hits

    def drawing_image(self, drawing_id: str) -> Any:
        from drawmatch.core.images import open_image

        return open_image(self.sources[drawing_id], draft_size=1024)

    def next_candidates(
        self, tag: str, decided: set[tuple[str, str]], n: int = 1
    ) -> list[tuple[str, str, int, float]]:
        """The `n` closest candidates of `tag` that nobody has decided yet:
        (drawing id, artwork id, 1-based rank, distance)."""
        cands = self.models[tag].candidates
        if cands is None:
            return []
        found = []
        for i in range(len(cands)):
            drawing = cands.drawings[cands.drawing_code[i]]
            artwork = cands.artworks[cands.artwork_code[i]]
            if (drawing, artwork) in decided:
                continue
            found.append((drawing, artwork, int(cands.rank[i]), float(cands.distance[i])))
            if len(found) >= n:
                break
        return found

    def reviewed(self, tag: str, decided: set[tuple[str, str]]) -> tuple[int, int]:
        """(decided candidates, all candidates) of `tag`."""
        cands = self.models[tag].candidates
        if cands is None:
            return 0, 0
        keys = [cands.key(d, a) for d, a in decided]
        wanted = np.array([k for k in keys if k is not None], dtype=np.int64)
        if not len(wanted) or not len(cands.sorted_keys):
            return 0, len(cands.sorted_keys)
        where = np.minimum(np.searchsorted(cands.sorted_keys, wanted), len(cands.sorted_keys) - 1)
        return int((cands.sorted_keys[where] == wanted).sum()), len(cands.sorted_keys)

    def similar_drawings(self, tag: str, drawing_id: str, k: int) -> list[tuple[str, int, float]]:
        grouped = self.models[tag].similar
        if grouped is None:
            return []
        rows = grouped.get(drawing_id).head(k)
        return [
            (str(s), int(r), float(d))
            for s, r, d in zip(rows["similar_id"], rows["rank"], rows["distance"])
        ]

    def drawings_near_artwork(
        self, tag: str, artwork_id: str, k: int
    ) -> list[tuple[str, int, float]]:
        """The drawings closest to an artwork: the similar job's table, or else the drawings
        whose batch-search candidates hold it."""
        model = self.models[tag]
        if model.artwork_drawings is not None:
            rows = model.artwork_drawings.get(artwork_id).head(k)
            return [
                (str(s), int(r), float(d))
                for s, r, d in zip(rows["drawing_id"], rows["rank"], rows["distance"])
            ]
        cands = model.candidates
        if cands is None:
            return []
        code = np.flatnonzero(cands.artworks == artwork_id)
        if not len(code):
            return []
        where = np.flatnonzero(cands.artwork_code == code[0])[:k]
        return [
            (str(cands.drawings[cands.drawing_code[i]]), r + 1, float(cands.distance[i]))
            for r, i in enumerate(where)
        ]
