"""Copy detection over the whole collection: micro-AP and recall at 90 % precision checked against
scikit-learn, and the calibrated "likely copy" confidence on generated scores of known
distributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from drawmatch.retrieval.calibration import (
    Calibration,
    add_confidence,
    background_levels,
    calibration_path,
    detection_metrics,
    fit_calibration,
    fit_logistic,
    likely_copy_threshold,
    result_confidence,
    write_calibration,
)
from drawmatch.retrieval.metrics import micro_average_precision, recall_at_precision


def _scores(seed: int, n: int = 400, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.2
    scores = rng.normal(0, 1, n) + 1.5 * positive
    return (np.round(scores, 1) if ties else scores), positive


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_micro_ap_and_recall_at_p90_match_sklearn(seed, ties):
    scores, positive = _scores(seed, ties=ties)
    assert micro_average_precision(scores, positive) == pytest.approx(
        100 * average_precision_score(positive, scores)
    )
    precision, recall, _t = precision_recall_curve(positive, scores)
    expected = recall[precision >= 0.9].max()
    assert recall_at_precision(scores, positive, target=0.9) == pytest.approx(100 * expected)


def test_copies_no_query_returned_count_as_missed():
    scores, positive = _scores(7)
    found = int(positive.sum())
    total = found + 25  # 25 pairs whose artwork no drawing had in its results
    got = micro_average_precision(scores, positive, total)
    assert got == pytest.approx(100 * average_precision_score(positive, scores) * found / total)
    precision, recall, _t = precision_recall_curve(positive, scores)
    at90 = recall_at_precision(scores, positive, total, 0.9)
    assert at90 == pytest.approx(100 * recall[precision >= 0.9].max() * found / total)


def test_micro_ap_by_hand():
    # ranking: copy (0.9), non-copy (0.8), copy (0.7); 3 pairs, one never returned
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9; precision >= 0.9 only at the first result: recall 1/3
    scores, copy = np.array([0.7, 0.9, 0.8]), np.array([True, True, False])
    assert micro_average_precision(scores, copy, 3) == pytest.approx(100 * 5 / 9)
    assert recall_at_precision(scores, copy, 3) == pytest.approx(100 / 3)
    assert recall_at_precision(np.array([0.9, 0.1]), np.array([False, True])) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        micro_average_precision(np.array([np.nan]), np.array([True]))


def test_logistic_fit_recovers_the_posterior_of_two_gaussians():
    # copies ~ N(2, 1), non-copies ~ N(0, 1), one copy in five: the posterior is exactly
    # logistic with weight (2 - 0) / 1 = 2 and bias (0 - 4) / 2 + log(0.2 / 0.8)
    rng = np.random.default_rng(0)
    y = rng.random(20000) < 0.2
    x = rng.normal(0, 1, y.size) + 2.0 * y
    w, b = fit_logistic(x[:, None], y, l2=0.0)
    assert w[0] == pytest.approx(2.0, abs=0.1)
    assert b == pytest.approx(-2.0 + np.log(0.25), abs=0.1)


def _generated(
    seed: int, n_copy: int, n_non: int, copy_mean: float = 0.52, depth: int = 20
) -> pd.DataFrame:
    """Results of drawings that copy one artwork (its similarity ~ N(copy_mean, 0.06), ranked
    among the others) and of drawings that copy nothing; background similarities ~ N(0.4, 0.05) shifted
    per drawing by N(0, 0.1) (some drawings look like many artworks alike)."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_copy + n_non):
        shift = rng.normal(0, 0.1)
        sims = rng.normal(0.4, 0.05, depth) + shift
        copy = np.zeros(depth, bool)
        if q < n_copy:
            sims[0] = rng.normal(copy_mean, 0.06) + shift
            copy[0] = True
        order = np.argsort(-sims, kind="stable")
        for rank, j in enumerate(order, start=1):
            rows.append((f"d{q}", rank, f"a{j}", sims[j], copy[j], q >= n_copy))
    columns = ["drawing_id", "rank", "artwork_id", "similarity", "copy", "non_copy_query"]
    return pd.DataFrame(rows, columns=columns)


def test_confidence_tracks_the_empirical_frequency_of_copies():
    fitted = fit_calibration(_generated(0, 1000, 1000), "m", "global", by="drawing_id")
    fresh = add_confidence(_generated(1, 1000, 1000), fitted, by="drawing_id")
    bins = np.digitize(fresh["confidence"], [0.1, 0.3, 0.5, 0.7, 0.9])
    checked = 0
    for b in np.unique(bins):
        inside = fresh[bins == b]
        if len(inside) >= 50:
            assert inside["copy"].mean() == pytest.approx(inside["confidence"].mean(), abs=0.08)
            checked += 1
    assert checked >= 3
    # normalising against the drawing's background separates better than the raw similarity
    metrics = detection_metrics(_generated(1, 300, 300), 300, fitted, k=10)
    assert metrics["micro_AP_normalised"] > metrics["micro_AP_score"] + 5


def test_threshold_flags_at_most_the_target_share_of_non_copy_drawings():
    table = _generated(2, 200, 1000, copy_mean=0.65)
    fitted = fit_calibration(table, "m", "global", max_flagged=0.01, by="drawing_id")
    assert fitted.threshold >= 0.5
    on_fit = detection_metrics(table, 200, fitted, k=10)
    assert on_fit["flagged_non_copies"] <= 1.0
    assert on_fit["n_non_copy_drawings"] == 1000
    fresh = detection_metrics(_generated(3, 200, 1000, copy_mean=0.65), 200, fitted, k=10)
    assert fresh["flagged_non_copies"] <= 2.0  # new drawings: within sampling error of 1 %
    assert fresh["flagged_copies_found"] > 50  # and it still finds most copies


def test_likely_copy_threshold_by_hand():
    best = np.array([0.95, 0.9, 0.6, 0.3] + [0.1] * 96)  # 100 non-copy drawings
    t = likely_copy_threshold(best, 0.02)  # two may be flagged: just above the third, 0.6
    assert 0.6 < t < 0.6 + 1e-9
    assert likely_copy_threshold(best, 0.0) > 0.95
    assert likely_copy_threshold(np.array([0.2, 0.1]), 0.01) == 0.5  # never below 0.5
    assert likely_copy_threshold(np.array([]), 0.01) == 0.5


def test_background_level_and_confidence_by_hand():
    table = pd.DataFrame(
        {
            "query": [0] * 6 + [1] * 3,
            "rank": [1, 2, 3, 4, 5, 6, 1, 2, 3],
            "similarity": [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.8, 0.7, 0.6],
            "inliers": [40, -1, 3, -1, -1, -1, 0, -1, -1],
        }
    )
    level = background_levels(table, ranks=(4, 6))
    assert level[:6].tolist() == pytest.approx([0.2] * 6)  # mean of 0.3, 0.2, 0.1
    assert level[6:].isna().all()  # ranked shorter than the background: no level
    cal = Calibration("m", "verified", (10.0, 1.0), -3.0, 0.5, (4, 6))
    out = add_confidence(table, cal)
    z = 10 * (0.9 - 0.2) + np.log1p(40) - 3
    assert out["confidence"][0] == pytest.approx(1 / (1 + np.exp(-z)))
    z = 10 * (0.4 - 0.2) + np.log1p(3) - 3
    assert out["confidence"][2] == pytest.approx(1 / (1 + np.exp(-z)))
    assert out["likely_copy"][0] is np.True_ or out["likely_copy"][0] == True  # noqa: E712
    assert out["confidence"][6:].isna().all() and out["likely_copy"][6:].isna().all()
    missing = add_confidence(table, None)
    assert missing["confidence"].isna().all() and missing["likely_copy"].isna().all()
    assert Calibration.from_json(cal.to_json()) == cal


def test_result_confidence_reads_the_stored_calibration(tmp_path):
    # a candidates table as batch search writes it: distance = 1 - similarity
    results = pd.DataFrame(
        {
            "drawing_id": ["d"] * 6,
            "rank": range(1, 7),
            "artwork_id": [f"a{i}" for i in range(6)],
            "distance": [0.1, 0.5, 0.6, 0.7, 0.8, 0.9],
        }
    )
    assert result_confidence(tmp_path, "m", "global", results).isna().all()  # none stored yet
    cal = Calibration("m", "global", (5.0,), -1.0, 0.5, (4, 6))
    assert write_calibration(tmp_path, cal) == calibration_path(tmp_path, "m", "global")
    got = result_confidence(tmp_path, "m", "global", results)
    background = (0.3 + 0.2 + 0.1) / 3  # similarities at ranks 4-6
    assert got[0] == pytest.approx(1 / (1 + np.exp(-(5.0 * (0.9 - background) - 1.0))))
    assert result_confidence(tmp_path, "m", "verified", results).isna().all()  # other mode
