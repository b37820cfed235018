"""The review queue of the workbench: each model's batch-search candidates, the pairs nobody has
decided yet served one after another, in one of `ORDERS`; skipped pairs come back at the end of
the queue (the earliest skipped first).

- `likely`: the highest calibrated confidence first (likely copies first);
- `closest`: the smallest distance first;
- `uncertain`: the pair nearest a toss-up first (`uncertainty`): with a calibrated confidence p,
  by |p - 0.5|; without one, by the distance's gap to the median distance of the known matches.

The confidence is the one batch search writes (`drawmatch.retrieval.calibration`); candidates
without one (NaN) come after those with one in the `likely` and `uncertain` orders, and with no
confidence at all both orders fall back (`likely` to closest first, `uncertain` to the distance
gap). Ties keep the closest first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

ORDERS = ("likely", "closest", "uncertain")


@dataclass
class Candidates:
    """Batch-search candidates of one model, closest first (codes into `drawings`/`artworks`)."""

    drawings: np.ndarray  # (C,) object: drawing id per code
    artworks: np.ndarray  # (A,) object
    drawing_code: np.ndarray  # (N,) int32, sorted by distance
    artwork_code: np.ndarray  # (N,) int32
    rank: np.ndarray  # (N,) int32, 1-based as in the file
    distance: np.ndarray  # (N,) float32
    confidence: np.ndarray  # (N,) float32, calibrated likely-copy confidence (NaN: none)
    likely_copy: np.ndarray  # (N,) bool, confidence at or above the calibration's threshold
    d_index: dict[str, int] = field(default_factory=dict)  # drawing id -> code
    a_index: dict[str, int] = field(default_factory=dict)  # artwork id -> code

    sorted_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    row_of_key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # first row

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> Candidates:
        """The candidates of a table (drawing_id, artwork_id, rank, distance, optionally
        confidence and likely_copy as batch search writes them), closest first."""
        order = np.lexsort((table["rank"].to_numpy(), table["distance"].to_numpy(dtype=np.float64)))
        table = table.iloc[order]
        nan = pd.Series(np.nan, index=table.index)
        d_codes, d_uniques = pd.factorize(table["drawing_id"])
        a_codes, a_uniques = pd.factorize(table["artwork_id"])
        candidates = cls(
            drawings=np.asarray(d_uniques, dtype=object),
            artworks=np.asarray(a_uniques, dtype=object),
            drawing_code=d_codes.astype(np.int32),
            artwork_code=a_codes.astype(np.int32),
            rank=table["rank"].to_numpy(dtype=np.int32),
            distance=table["distance"].to_numpy(dtype=np.float32),
            confidence=table.get("confidence", nan).to_numpy(dtype=np.float32, na_value=np.nan),
            likely_copy=table.get("likely_copy", nan).fillna(False).to_numpy(dtype=bool),
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

    @cached_property
    def has_confidence(self) -> bool:
        """Whether any candidate has a calibrated confidence."""
        return bool(np.isfinite(self.confidence).any())

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

    def confidence_of(self, drawing: str, artwork: str) -> tuple[float | None, bool]:
        """(calibrated confidence, likely copy) of a candidate pair; (None, False) without one."""
        rows = self.rows_of([(drawing, artwork)])
        if not len(rows) or not np.isfinite(self.confidence[rows[0]]):
            return None, False
        return float(self.confidence[rows[0]]), bool(self.likely_copy[rows[0]])


def uncertainty(distance: np.ndarray, threshold: float) -> np.ndarray:
    """How far each candidate is from a toss-up by its distance alone, smallest first in the
    "uncertain" order without a confidence: the gap between its distance and `threshold`, the
    distance of a pair as likely a match as not (the median distance of the known matches)."""
    return np.abs(distance.astype(np.float64) - threshold)


def confidence_uncertainty(confidence: np.ndarray) -> np.ndarray:
    """How far each candidate's calibrated confidence p is from a toss-up, |p - 0.5|, smallest
    first in the "uncertain" order (NaN, no confidence: last). 0.5, not the likely-copy
    threshold: p is the probability that the pair is a copy, so at 0.5 a copy and a non-copy are
    equally likely and the expert's decision tells the most; the threshold (0.5 or more) is an
    operating point set so that few drawings that copy nothing are flagged."""
    return np.abs(confidence.astype(np.float64) - 0.5)


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
        self._fixed: dict[tuple[str, str], np.ndarray] = {}  # orders that never change
        self._moving: dict[tuple[str, float], np.ndarray] = {}  # by the known matches' median

    def has_candidates(self, tag: str) -> bool:
        return self.candidates[tag] is not None

    def has_confidence(self, tag: str) -> bool:
        """Whether `tag`'s candidates have a calibrated confidence (the `likely` order and the
        confidence's `uncertain` order apply)."""
        cands = self.candidates[tag]
        return cands is not None and cands.has_confidence

    def order(self, tag: str, order: str = "closest", threshold: float | None = None) -> np.ndarray:
        """The rows of `tag`'s candidates in queue order (`ORDERS`), closest first among equals:
        `likely`, the highest confidence first; `uncertain`, the confidence nearest 0.5 first
        (`confidence_uncertainty`), or without a confidence the distance nearest `threshold`
        first (`uncertainty`); `closest`, and the others when they have nothing to order by,
        the stored order. Cached."""
        cands = self.candidates[tag]
        if cands is None:
            return np.zeros(0, np.int64)
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if order in ("likely", "uncertain") and cands.has_confidence:
            return self._fixed_order(tag, order, cands)
        if order == "uncertain" and threshold is not None:
            moving = (tag, threshold)
            if moving not in self._moving:
                # one order kept: the threshold moves with each match
                self._moving = {
                    moving: np.argsort(uncertainty(cands.distance, threshold), kind="stable")
                }
            return self._moving[moving]
        return self._fixed_order(tag, "closest", cands)

    def _fixed_order(self, tag: str, order: str, cands: Candidates) -> np.ndarray:
        """An order that never changes (closest; likely and uncertain by the confidence), sorted
        once: NaN confidences last, ties in the stored order (closest first)."""
        key = (tag, order)
        if key not in self._fixed:
            if order == "closest":
                self._fixed[key] = np.arange(len(cands), dtype=np.int64)  # stored closest first
            else:
                p = cands.confidence.astype(np.float64)
                by = -p if order == "likely" else confidence_uncertainty(p)
                self._fixed[key] = np.argsort(by, kind="stable")
        return self._fixed[key]

    def next(
        self,
        tag: str,
        decided: set[tuple[str, str]],
        skipped: Mapping[tuple[str, str], int] | None = None,
        n: int = 1,
        order: str = "closest",
        threshold: float | None = None,
    ) -> list[tuple[str, str, int, float]]:
        """The next `n` candidates of `tag`: those neither decided nor skipped, in `order`
        (`ReviewQueue.order`; `threshold`: the known matches' median distance), then the skipped
        ones, the earliest skipped first: (drawing id, artwork id, 1-based rank, distance)."""
        cands = self.candidates[tag]
        if cands is None:
            return []
        skipped = skipped or {}
        found = []
        for row in self.order(tag, order, threshold):
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
