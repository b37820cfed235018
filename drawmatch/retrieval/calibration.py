"""Calibrated "likely copy" confidence of a (drawing, artwork) result.

A raw score orders the artworks of one drawing but says nothing about whether the drawing copies
anything: a drawing that copies nothing still has a best artwork. The confidence is built in three
steps, as copy-detection systems do:

1. Normalisation against a background of non-copies: a result's similarity (1 - distance: the
   cosine in `global` mode, the fused score in region modes) minus the query's background level,
   the mean similarity of its artworks at ranks `BACKGROUND_RANKS` (5th to 20th by default; a
   drawing copies one or a few artworks, so these are almost always non-copies). A drawing that
   looks like many artworks alike gets a low normalised score for all of them.
2. In `verified` mode, the verification's evidence: `log(1 + inliers)` (0 where not verified).
3. A logistic map of these features to a probability, fitted by `evaluate calibrate=true` on
   known copies (the pairs) against the other results of the same drawings and every result of
   drawings that copy nothing; written to `calibration/<model_tag>/<mode>.json`.

The confidence is the fitted probability that a result is a copy, in the proportions of the set it
was fitted on (copies among the top `fitted_on.depth` results of its drawings); it is NaN where no
calibration exists for the model and mode, never a made-up value. A result is a *likely copy* when
its confidence is at least `threshold`: the larger of 0.5 and the lowest value that at most
`max_flagged` (1 %) of the non-copy drawings of the calibration set reach with their best result.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.retrieval.metrics import micro_average_precision, recall_at_precision

BACKGROUND_RANKS = (5, 20)  # 1-based ranks whose mean similarity is a query's background level
FEATURES = {"global": ("normalised",), "verified": ("normalised", "log_inliers")}


def features_of(mode: str) -> tuple[str, ...]:
    """The calibration's inputs in `mode`: the normalised score, plus the inliers if verified."""
    return FEATURES.get(mode, FEATURES["global"])


@dataclass(frozen=True)
class Calibration:
    """A fitted map from a result's features to the probability that it is a copy."""

    model_tag: str
    mode: str
    weights: tuple[float, ...]  # one per feature of `features_of(mode)`
    bias: float
    threshold: float  # "likely copy" at confidence >= threshold
    background_ranks: tuple[int, int] = BACKGROUND_RANKS
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def confidence(self, score: Any, background: Any, inliers: Any | None = None) -> np.ndarray:
        """Probability that results with similarity `score`, their query's `background` level and
        (verified mode) `inliers` (-1: not verified) are copies; NaN where the background is."""
        columns = [np.asarray(score, np.float64) - np.asarray(background, np.float64)]
        if "log_inliers" in features_of(self.mode):
            n = np.zeros_like(columns[0]) if inliers is None else np.asarray(inliers, np.float64)
            columns.append(np.log1p(np.maximum(n, 0.0)))
        x = np.stack(np.broadcast_arrays(*columns), axis=-1)
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.weights) + self.bias)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> Calibration:
        raw = json.loads(text)
        raw["weights"] = tuple(float(w) for w in raw["weights"])
        raw["background_ranks"] = tuple(int(r) for r in raw["background_ranks"])
        return Calibration(**raw)


def calibration_path(out: str | Path, tag: str, mode: str) -> str:
    return storage.join(out, "calibration", tag, f"{mode}.json")


def read_calibration(out: str | Path, tag: str, mode: str) -> Calibration | None:
    """The calibration `evaluate calibrate=true` wrote for `tag` in `mode`, or None."""
    path = calibration_path(out, tag, mode)
    return Calibration.from_json(storage.read_text(path)) if storage.exists(path) else None


def write_calibration(out: str | Path, calibration: Calibration) -> str:
    path = calibration_path(out, calibration.model_tag, calibration.mode)
    storage.write_text(path, calibration.to_json())
    return path


def background_levels(
    table: pd.DataFrame, by: str = "query", ranks: tuple[int, int] = BACKGROUND_RANKS
) -> pd.Series:
    """Each row's background level: the mean `similarity` of its query's rows (grouped by `by`)
    ranked `ranks[0]`..`ranks[1]`; NaN for a query ranked shorter than `ranks[0]`."""
    first, last = ranks
    inside = table[(table["rank"] >= first) & (table["rank"] <= last)]
    level = inside.groupby(by)["similarity"].mean()
    return table[by].map(level).astype(np.float64)


def add_confidence(
    table: pd.DataFrame, calibration: Calibration | None, by: str = "query"
) -> pd.DataFrame:
    """`table` (rank, similarity, `by`, optionally inliers) with `background`, `confidence` (NaN
    without a calibration) and `likely_copy` (nullable boolean: missing without a confidence)."""
    table = table.copy()
    ranks = calibration.background_ranks if calibration else BACKGROUND_RANKS
    table["background"] = background_levels(table, by, ranks)
    if calibration is None:
        table["confidence"] = np.nan
    else:
        inliers = table["inliers"].to_numpy() if "inliers" in table else None
        table["confidence"] = calibration.confidence(
            table["similarity"], table["background"], inliers
        )
    known = table["confidence"].notna()
    table["likely_copy"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
    if calibration is not None:
        table.loc[known, "likely_copy"] = table.loc[known, "confidence"] >= calibration.threshold
    return table


def result_confidence(
    out: str | Path, tag: str, mode: str, results: pd.DataFrame, by: str = "drawing_id"
) -> pd.Series:
    """The confidence of every (drawing, artwork) result of `results` under the calibration of
    `tag` in `mode` (NaN without one): a long table of each drawing's (`by`) ranked results with
    `rank`, `distance` (as search writes it; or `similarity`) and, in verified mode, `inliers`;
    ranks 5-20 must be present for the background level (else NaN). For ordering other results,
    e.g. a review queue, by the same confidence search shows."""
    table = results.copy()
    if "similarity" not in table:
        table["similarity"] = 1.0 - table["distance"].astype(np.float64)
    scored = add_confidence(table, read_calibration(out, tag, mode), by=by)
    return scored["confidence"].rename("confidence")


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-4, steps: int = 100
) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression of `y` (N,) 0/1 on `x` (N, F) by Newton's
    method. The features are standardised while fitting, with a small L2 penalty (`l2` per
    sample) on their weights: separable data would otherwise diverge."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.min() == y.max():
        raise ValueError("calibration needs copies and non-copies, got only one kind")
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-12)
    design = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    beta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2 * len(x))
    penalty[-1] = 0.0  # the bias is not penalised
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    weights = beta[:-1] / std
    return weights, float(beta[-1] - weights @ mean)


def likely_copy_threshold(best_of_non_copies: np.ndarray, max_flagged: float) -> float:
    """The lowest confidence, at least 0.5, that at most `max_flagged` of the non-copy drawings
    reach with their best result (0.5 when there are none)."""
    best = np.sort(np.asarray(best_of_non_copies, np.float64))[::-1]
    if best.size == 0:
        return 0.5
    allowed = int(math.floor(max_flagged * best.size + 1e-9))  # drawings that may be flagged
    if allowed >= best.size:
        return 0.5
    return max(0.5, float(np.nextafter(best[allowed], np.inf)))


def feature_matrix(table: pd.DataFrame, mode: str) -> np.ndarray:
    """The calibration's inputs of every row of `table` (similarity, background, inliers)."""
    columns = [table["similarity"].to_numpy(np.float64) - table["background"].to_numpy(np.float64)]
    if "log_inliers" in features_of(mode):
        inliers = (
            table["inliers"].to_numpy(np.float64) if "inliers" in table else np.zeros(len(table))
        )
        columns.append(np.log1p(np.maximum(inliers, 0.0)))
    return np.stack(columns, axis=1)


def fit_calibration(
    table: pd.DataFrame, tag: str, mode: str, max_flagged: float = 0.01, by: str = "query"
) -> Calibration:
    """A calibration fitted on `table`: the top results of every query (`by`, rank, similarity,
    inliers in verified mode) with `copy` (bool: a known pair) and `non_copy_query` (bool: the
    query copies nothing); rows without a background level are left out."""
    table = table.copy()
    table["background"] = background_levels(table, by)
    table = table[table["background"].notna()]
    x, y = feature_matrix(table, mode), table["copy"].to_numpy(bool)
    weights, bias = fit_logistic(x, y)
    draft = Calibration(tag, mode, tuple(float(w) for w in weights), bias, 0.5)
    confidence = draft.confidence(table["similarity"], table["background"], table.get("inliers"))
    non_copy = table["non_copy_query"].to_numpy(bool)
    best = pd.Series(confidence[non_copy]).groupby(table[by].to_numpy()[non_copy]).max()
    fitted_on = {
        "copies": int(y.sum()),
        "non_copies": int((~y).sum()),
        "queries": int(table[by].nunique()),
        "non_copy_queries": int(best.size),
        "depth": int(table["rank"].max()),
        "max_flagged": max_flagged,
    }
    threshold = likely_copy_threshold(best.to_numpy(), max_flagged)
    return Calibration(tag, mode, draft.weights, bias, threshold, BACKGROUND_RANKS, fitted_on)


def detection_metrics(
    results: pd.DataFrame, n_copies: int, calibration: Calibration | None, k: int = 10
) -> dict[str, float]:
    """Copy-detection figures, in percent, of the top-`k` `results` of every drawing pooled
    (drawing_id, rank, similarity, copy, non_copy_query, inliers in verified mode): micro-AP and
    recall at 90 % precision by the raw similarity, the normalised score and (with a calibration)
    the confidence; then the share of non-copy drawings flagged as likely copies, of the copies
    found as likely copies, and the precision of the flagged results. Recall is over `n_copies`."""
    table = add_confidence(results, calibration, by="drawing_id")
    table["normalised"] = table["similarity"] - table["background"]
    top = table[table["rank"] <= k]
    out: dict[str, float] = {}
    names = {"similarity": "_score", "normalised": "_normalised", "confidence": ""}
    for column, suffix in names.items():
        known = top[column].notna()
        if not known.any():
            continue
        values = top.loc[known, column].to_numpy(np.float64)
        copy = top.loc[known, "copy"].to_numpy(bool)
        out[f"micro_AP{suffix}"] = micro_average_precision(values, copy, n_copies)
        out[f"R@P90{suffix}"] = recall_at_precision(values, copy, n_copies, 0.9)
    flagged = top["likely_copy"].fillna(False).astype(bool)
    if calibration is not None:
        per_drawing = flagged.groupby(top["drawing_id"]).any()
        non_copy = top.groupby("drawing_id")["non_copy_query"].first()
        if non_copy.any():
            out["flagged_non_copies"] = 100.0 * float(per_drawing[non_copy].mean())
        out["flagged_copies_found"] = 100.0 * float((flagged & top["copy"]).sum()) / n_copies
        if flagged.any():
            out["flagged_precision"] = 100.0 * float(top.loc[flagged, "copy"].mean())
        out["threshold"] = 100.0 * calibration.threshold
    out["n_drawings"] = float(top["drawing_id"].nunique())
    out["n_non_copy_drawings"] = float(top.loc[top["non_copy_query"], "drawing_id"].nunique())
    return out
