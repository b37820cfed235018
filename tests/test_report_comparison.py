"""The report's model comparison: per-query metrics, the paired bootstrap interval of each
difference (against a plain loop over resamples written here), R@k columns beyond the gallery, and
ids that break only at their separators."""

from __future__ import annotations

import numpy as np
import pytest

from drawmatch.reporting.comparison import (
    paired_bootstrap,
    per_query_metrics,
    resample_weights,
    shown_ks,
)
from drawmatch.reporting.html_report import breakable
from drawmatch.retrieval.metrics import metrics_from_ranks

# hand-made 0-based positions of the annotated artworks of 5 drawings under two models
REFERENCE = [np.array([0]), np.array([3]), np.array([1, 4]), np.array([9]), np.array([0, 2])]
MODEL = [np.array([0]), np.array([0]), np.array([0, 1]), np.array([7]), np.array([1, 2])]
# their average precisions by hand: 1/(r+1) for one artwork; (1/(r1+1) + 2/(r2+1))/2 for two
AP_REFERENCE = [1.0, 1 / 4, (1 / 2 + 2 / 5) / 2, 1 / 10, (1 + 2 / 3) / 2]
AP_MODEL = [1.0, 1.0, 1.0, 1 / 8, (1 / 2 + 2 / 3) / 2]


def by_hand(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The 95 % percentile interval of mean(b) - mean(a) over paired resamples, one at a time."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(resamples, len(a)))
    diffs = [b[d].mean() - a[d].mean() for d in draws]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def test_per_query_values_are_the_metrics_of_each_drawing_alone():
    values = per_query_metrics(REFERENCE, [1, 5])
    assert values["MAP"] == pytest.approx([100 * ap for ap in AP_REFERENCE])
    assert values["MMP"].tolist() == [0, 3, 1, 9, 0]
    assert values["R@1"].tolist() == [100, 0, 0, 0, 50]
    assert values["R@5"].tolist() == [100, 100, 100, 0, 100]
    assert values["n_pairs"].tolist() == [1, 1, 2, 1, 2]
    # on all drawings at once, the difference's point estimate is the metrics' own difference
    found = {
        d.metric: d
        for d in paired_bootstrap(
            values, per_query_metrics(MODEL, [1, 5]), ["MAP", "MP", "MMP", "R@1"]
        )
    }
    ref, mod = metrics_from_ranks(REFERENCE, [1, 5]), metrics_from_ranks(MODEL, [1, 5])
    for key in ("MAP", "MP", "MMP", "R@1"):
        assert found[key].reference == pytest.approx(ref[key])
        assert found[key].difference == pytest.approx(mod[key] - ref[key])
    assert found["MP"].reference == pytest.approx((0 + 3 + 1 + 4 + 9 + 0 + 2) / 7)  # over pairs


def test_bootstrap_interval_equals_a_plain_loop_over_resamples():
    ref, mod = per_query_metrics(REFERENCE, [1]), per_query_metrics(MODEL, [1])
    found = {d.metric: d for d in paired_bootstrap(ref, mod, ["MAP", "MMP", "MP"], 500, 7)}
    low, high = by_hand(100 * np.array(AP_REFERENCE), 100 * np.array(AP_MODEL), 500, 7)
    assert (found["MAP"].low, found["MAP"].high) == pytest.approx((low, high))
    assert found["MAP"].low <= found["MAP"].difference <= found["MAP"].high
    low, high = by_hand(np.array([0, 3, 1, 9, 0.0]), np.array([0, 0, 0, 7, 1.0]), 500, 7)
    assert (found["MMP"].low, found["MMP"].high) == pytest.approx((low, high))
    # MP, a mean over pairs: each resample's positions summed over its pairs, drawn by hand
    draws = np.random.default_rng(7).integers(0, 5, size=(500, 5))
    mp = [
        sum(MODEL[i].sum() for i in d) / sum(MODEL[i].size for i in d)
        - sum(REFERENCE[i].sum() for i in d) / sum(REFERENCE[i].size for i in d)
        for d in draws
    ]
    assert (found["MP"].low, found["MP"].high) == pytest.approx(
        tuple(np.percentile(mp, [2.5, 97.5]))
    )


def test_identical_models_differ_by_zero_and_the_interval_holds_zero():
    values = per_query_metrics(REFERENCE, [1, 5])
    for d in paired_bootstrap(values, per_query_metrics(REFERENCE, [1, 5]), ["MAP", "MP", "R@5"]):
        assert d.difference == 0 and d.low <= 0 <= d.high and not d.clear


def test_a_model_better_on_every_drawing_is_clearly_better_and_a_noisy_one_is_not():
    rng = np.random.default_rng(3)
    worse = [np.array([r]) for r in rng.integers(5, 50, size=40)]
    better = [r - 5 for r in worse]  # every drawing's artwork 5 places higher
    (map_,) = paired_bootstrap(
        per_query_metrics(worse, [1]), per_query_metrics(better, [1]), ["MAP"]
    )
    assert map_.clear and map_.better and map_.low > 0
    (mp,) = paired_bootstrap(per_query_metrics(worse, [1]), per_query_metrics(better, [1]), ["MP"])
    assert mp.difference == pytest.approx(-5) and mp.clear and mp.better
    # the same positions shuffled among the drawings: same MP, no clear difference
    shuffled = [worse[i] for i in rng.permutation(len(worse))]
    (mp,) = paired_bootstrap(
        per_query_metrics(worse, [1]), per_query_metrics(shuffled, [1]), ["MP"]
    )
    assert mp.difference == pytest.approx(0) and not mp.clear


def test_resample_weights_count_each_draw_once():
    weights = resample_weights(4, 3, 11)
    draws = np.random.default_rng(11).integers(0, 4, size=(3, 4))
    assert weights.tolist() == [np.bincount(d, minlength=4).tolist() for d in draws]
    with pytest.raises(ValueError, match="needs queries"):
        resample_weights(0, 10, 0)


def test_a_comparison_needs_the_same_drawings_for_both_models():
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(
            per_query_metrics(REFERENCE, [1]), per_query_metrics(MODEL[:4], [1]), ["MAP"]
        )


def test_r_at_k_at_or_beyond_the_gallery_is_left_out():
    assert shown_ks([1, 5, 10, 20, 50], 12) == [1, 5, 10]
    assert shown_ks([1, 5, 10], 10) == [1, 5]
    assert shown_ks([1, 400], 0) == [1, 400]  # gallery size unknown


def test_ids_break_only_after_separators_and_stay_escaped():
    assert str(breakable("2004_10-13_0099")) == "2004_<wbr>10-<wbr>13_<wbr>0099"
    assert str(breakable("a/b<script>")) == "a/<wbr>b&lt;script&gt;"
