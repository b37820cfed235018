"""The review queue of the workbench: each model's batch-search candidates, closest first, with
the pairs nobody has decided yet served one after another."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> Candidates:
        """The candidates of a table (drawing_id, artwork_id, rank, distance), closest first."""
        order = np.lexsort((table["rank"].to_numpy(), table["distance"].to_numpy(dtype=np.float64)))
        table = table.iloc[order]
        d_codes, d_uniques = pd.factorize(table["drawing_id"])
        a_codes, a_uniques = pd.factorize(table["artwork_id"])
        candidates = cls(
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
        return candidates

    def key(self, drawing: str, artwork: str) -> int | None:
        """One number per (drawing, artwork) pair of the candidates, None if not a candidate."""
        d, a = self.d_index.get(drawing), self.a_index.get(artwork)
        return None if d is None or a is None else d * len(self.artworks) + a

    def __len__(self) -> int:
        return len(self.distance)


class ReviewQueue:
    """The candidates of each model tag (None where a model has none) as a queue to review."""

    def __init__(self, candidates: Mapping[str, Candidates | None]) -> None:
        self.candidates = candidates

    def has_candidates(self, tag: str) -> bool:
        return self.candidates[tag] is not None

    def next(
        self, tag: str, decided: set[tuple[str, str]], n: int = 1
    ) -> list[tuple[str, str, int, float]]:
        """The `n` closest candidates of `tag` that nobody has decided yet:
        (drawing id, artwork id, 1-based rank, distance)."""
        cands = self.candidates[tag]
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

    def progress(self, tag: str, decided: set[tuple[str, str]]) -> tuple[int, int]:
        """(decided candidates, all candidates) of `tag`."""
        cands = self.candidates[tag]
        if cands is None:
            return 0, 0
        keys = [cands.key(d, a) for d, a in decided]
        wanted = np.array([k for k in keys if k is not None], dtype=np.int64)
        if not len(wanted) or not len(cands.sorted_keys):
            return 0, len(cands.sorted_keys)
        where = np.minimum(np.searchsorted(cands.sorted_keys, wanted), len(cands.sorted_keys) - 1)
        return int((cands.sorted_keys[where] == wanted).sum()), len(cands.sorted_keys)
