"""Two models on the same annotated drawings: each metric's difference with a paired bootstrap 95 %
interval over the drawings (the queries).

A few dozen queries cannot carry a single MAP figure: one drawing more or less found moves it by
points. The interval says how far the difference could move if other drawings of the same kind had
been annotated. Paired: each resample draws the queries (with replacement, as many as there are)
once, and both models are scored on that same draw, so what the two have in common cancels.

Each metric is computed per query with `drawmatch.retrieval.metrics.metrics_from_ranks` on that
query alone, never re-defined here: MAP, MMP and R@k are means over queries; MP is a mean over the
annotated pairs, so a resample's MP is the sum of its queries' positions over their pair count.
The resamples come from `numpy.random.default_rng(seed).integers(0, Q, size=(resamples, Q))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drawmatch.retrieval.metrics import metrics_from_ranks

RESAMPLES = 2000
SEED = 0
LEVEL = 95.0
# metrics where a lower figure is better (positions)
LOWER_IS_BETTER = ("MP", "MMP")


def per_query_metrics(ranks: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Each metric of every query scored alone (Q values per metric), and `n_pairs` per query."""
    rows = [metrics_from_ranks([r], ks) for r in ranks]
    keys = [k for k in rows[0] if k != "n_queries"]
    return {k: np.array([row[k] for row in rows], dtype=np.float64) for k in keys}


def statistic(values: dict[str, np.ndarray], key: str, weights: np.ndarray) -> np.ndarray:
    """Metric `key` of each resample; `weights` (B, Q): how often each query is drawn."""
    if key == "MP":  # a mean over pairs: positions summed over the drawn queries, over their pairs
        pairs = values["n_pairs"]
        return (weights @ (values["MP"] * pairs)) / (weights @ pairs)
    return (weights @ values[key]) / weights.sum(axis=1)


def resample_weights(n_queries: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, Q): how often each query is drawn in each resample of Q draws with
    replacement, from `default_rng(seed).integers(0, Q, size=(resamples, Q))`."""
    if n_queries < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs queries and resamples, got {n_queries}, {resamples}")
    draws = np.random.default_rng(seed).integers(0, n_queries, size=(resamples, n_queries))
    offsets = (np.arange(resamples) * n_queries)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n_queries)
    return counts.reshape(resamples, n_queries).astype(np.float64)


@dataclass(frozen=True)
class Difference:
    """One metric of `model` minus `reference` on the same queries, and its interval."""

    metric: str
    reference: float
    model: float
    difference: float
    low: float
    high: float

    @property
    def clear(self) -> bool:
        """Whether the interval leaves out 0: the two models differ beyond the queries' chance."""
        return self.low > 0 or self.high < 0

    @property
    def better(self) -> bool:
        """Whether the difference favours the model (a higher MAP or R@k, a lower MP or MMP)."""
        return self.difference < 0 if self.metric in LOWER_IS_BETTER else self.difference > 0


def paired_bootstrap(
    reference: dict[str, np.ndarray],
    model: dict[str, np.ndarray],
    keys: Sequence[str],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[Difference]:
    """Each metric in `keys` of `model` minus `reference` (per-query values of the same queries,
    in the same order, `per_query_metrics`), with the percentile interval (2.5 %, 97.5 %) of the
    difference over paired resamples of the queries."""
    n = len(reference["n_pairs"])
    if len(model["n_pairs"]) != n or not np.array_equal(reference["n_pairs"], model["n_pairs"]):
        raise ValueError("a paired comparison needs the same queries and pairs for both models")
    weights = resample_weights(n, resamples, seed)
    once = np.ones((1, n))
    tail = (100.0 - LEVEL) / 2
    found = []
    for key in keys:
        ref, mod = statistic(reference, key, once)[0], statistic(model, key, once)[0]
        diffs = statistic(model, key, weights) - statistic(reference, key, weights)
        low, high = np.percentile(diffs, [tail, 100.0 - tail])
        found.append(
            Difference(key, float(ref), float(mod), float(mod - ref), float(low), float(high))
        )
    return found


def shown_ks(ks: Sequence[int], gallery_size: int) -> list[int]:
    """The k of R@k worth showing: those below the gallery size (R@k for k at or beyond it is
    100 % whatever the model); all of them if the gallery size is unknown (0)."""
    return [k for k in ks if gallery_size <= 0 or k < gallery_size]
