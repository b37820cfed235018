"""The review queue of the workbench: each model's batch-search candidates, the pairs nobody has
decided yet served one after another, closest first or most uncertain first; skipped pairs come
back at the end of the queue (the earliest skipped first).

How uncertain a candidate is comes from one function, `uncertainty`: today the distance's gap to
the median distance of the known matches among the candidates; a calibrated confidence can
replace it there without touching the queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    row_of_key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # first row

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
        candidates.sorted_keys, candidates.row_of_key = np.unique(keys, return_index=True)
        return candidates

    def key(self, drawing: str, artwork: str) -> int | None:
        """One number per (drawing, artwork) pair of the candidates, None if not a candidate."""
        d, a = self.d_index.get(drawing), self.a_index.get(artwork)
        return None if d is None or a is None else d * len(self.artworks) + a

    def __len__(self) -> int:
        return len(self.distance)

    def rows_of(self, pairs: Iterable[tuple[str, str]]) -> np.ndarray:
        """The row (closest first) of each pair that is a candidate; the others are left out."""
        keys = [self.key(d, a) for d, a in pairs]
        wanted = np.array([k for k in keys if k is not None], dtype=np.int64)
        if not len(wanted) or not len(self.sorted_keys):
            return np.zeros(0, np.int64)
        where = np.minimum(np.searchsorted(self.sorted_keys, wanted), len(self.sorted_keys) - 1)
        found = self.sorted_keys[where] == wanted
        return np.asarray(self.row_of_key[where[found]], dtype=np.int64)

    def entry(self, row: int) -> tuple[str, str, int, float]:
        """(drawing id, artwork id, 1-based rank, distance) of one row."""
        return (
            str(self.drawings[self.drawing_code[row]]),
            str(self.artworks[self.artwork_code[row]]),
            int(self.rank[row]),
            float(self.distance[row]),
        )


def uncertainty(distance: np.ndarray, threshold: float) -> np.ndarray:
    """How far each candidate is from a toss-up, smallest first in the "uncertain" order: the
    gap between its distance and `threshold`, the distance of a pair as likely a match as not
    (today the median distance of the known matches). A calibrated confidence p of being a
    match replaces this with |p - 0.5|."""
    return np.abs(distance.astype(np.float64) - threshold)


def known_match_threshold(cands: Candidates, matches: Iterable[tuple[str, str]]) -> float | None:
    """The median distance of the known matches (current matches, imported ones included) that
    are candidates, to 3 decimals (as shown: one more match rarely moves it, so the queue's order
    is sorted again only when it does); None when none is."""
    rows = cands.rows_of(matches)
    return round(float(np.median(cands.distance[rows])), 3) if len(rows) else None


class ReviewQueue:
    """The candidates of each model tag (None where a model has none) as a queue to review."""

    def __init__(self, candidates: Mapping[str, Candidates | None]) -> None:
        self.candidates = candidates
        self._orders: dict[tuple[str, float], np.ndarray] = {}

    def has_candidates(self, tag: str) -> bool:
        return self.candidates[tag] is not None

    def order(self, tag: str, threshold: float | None) -> np.ndarray:
        """The rows of `tag`'s candidates in queue order: closest first (`threshold` None), else
        the most uncertain first (`uncertainty`), closest first among equals; cached."""
        cands = self.candidates[tag]
        if cands is None:
            return np.zeros(0, np.int64)
        if threshold is None:
            return np.arange(len(cands), dtype=np.int64)  # stored closest first
        key = (tag, threshold)
        cached = self._orders.get(key)
        if cached is None:
            cached = np.argsort(uncertainty(cands.distance, threshold), kind="stable")
            self._orders = {key: cached}  # one order kept: the threshold moves with each match
        return cached

    def next(
        self,
        tag: str,
        decided: set[tuple[str, str]],
        skipped: Mapping[tuple[str, str], int] | None = None,
        n: int = 1,
        threshold: float | None = None,
    ) -> list[tuple[str, str, int, float]]:
        """The next `n` candidates of `tag`: those neither decided nor skipped, in queue order
        (`order`), then the skipped ones, the earliest skipped first:
        (drawing id, artwork id, 1-based rank, distance)."""
        cands = self.candidates[tag]
        if cands is None:
            return []
        skipped = skipped or {}
        found = []
        for row in self.order(tag, threshold):
            entry = cands.entry(int(row))
            if (entry[0], entry[1]) in decided or (entry[0], entry[1]) in skipped:
                continue
            found.append(entry)
            if len(found) >= n:
                return found
        later = sorted((seq, pair) for pair, seq in skipped.items() if pair not in decided)
        rows = cands.rows_of([pair for _seq, pair in later])
        return found + [cands.entry(int(r)) for r in rows[: n - len(found)]]

    def progress(self, tag: str, decided: set[tuple[str, str]]) -> tuple[int, int]:
        """(decided candidates, all candidates) of `tag`."""
        cands = self.candidates[tag]
        if cands is None:
            return 0, 0
        return len(cands.rows_of(decided)), len(cands.sorted_keys)
