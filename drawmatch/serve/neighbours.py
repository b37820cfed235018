"""Neighbours on the workbench's pages: the drawings most like a drawing, and the drawings
closest to an artwork, read from the `similar` job's tables (or else from the batch-search
candidates)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from drawmatch.serve.review_queue import Candidates


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

    def top(self, key: str, other: str, k: int) -> list[tuple[str, int, float]]:
        """(`other` id, rank, distance) of the first `k` rows of `key`."""
        rows = self.get(key).head(k)
        return [
            (str(s), int(r), float(d))
            for s, r, d in zip(rows[other], rows["rank"], rows["distance"])
        ]


class Neighbours:
    """Per model tag: `similar` (drawing -> similar drawings), `artwork_drawings` (artwork ->
    closest drawings) and the batch-search candidates; None where a model has no such table."""

    def __init__(
        self,
        similar: Mapping[str, Grouped | None],
        artwork_drawings: Mapping[str, Grouped | None],
        candidates: Mapping[str, Candidates | None],
    ) -> None:
        self.similar = similar
        self.artwork_drawings = artwork_drawings
        self.candidates = candidates

    def has_similar(self, tag: str) -> bool:
        return self.similar[tag] is not None

    def similar_drawings(self, tag: str, drawing_id: str, k: int) -> list[tuple[str, int, float]]:
        grouped = self.similar[tag]
        return [] if grouped is None else grouped.top(drawing_id, "similar_id", k)

    def drawings_near_artwork(
        self, tag: str, artwork_id: str, k: int
    ) -> list[tuple[str, int, float]]:
        """The drawings closest to an artwork: the similar job's table, or else the drawings
        whose batch-search candidates hold it."""
        grouped = self.artwork_drawings[tag]
        if grouped is not None:
            return grouped.top(artwork_id, "drawing_id", k)
        cands = self.candidates[tag]
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
