"""The likely-copy confidence through the real jobs: evaluate fits it (calibrate=true) on pairs
and drawings that copy nothing and reports the copy-detection figures; search then prints and
writes `confidence` and `likely_copy`, computed by hand here from the stored calibration."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from drawmatch.core.config import load_config
from drawmatch.data import embeddings
from drawmatch.jobs import embed, evaluate, index, search
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.search import SearchConfig
from drawmatch.reporting.html_report import integer, num
from drawmatch.reporting.report_sections import _detection_table
from drawmatch.reporting.results import read_evaluations
from drawmatch.retrieval.calibration import calibration_path
from tests.conftest import hand_catalogue, make_image
from tests.test_regions import region_run  # noqa: F401  (the fixture, run once in this module)

GALLERY = [f"art{i}" for i in range(10)]


@pytest.fixture(scope="module")
def calib_run(ray_local, tmp_path_factory):
    """6 drawings and 10 artworks through the real embed and index jobs (tiny backbone); the
    first three drawings are paired with their nearest artwork, the last three copy nothing."""
    root = tmp_path_factory.mktemp("calib")
    drawings = [make_image(root / "d" / f"draw{i}.jpg", (64, 64), seed=i) for i in range(6)]
    artworks = [
        make_image(root / "a" / f"{a}.jpg", (64, 64), seed=40 + i) for i, a in enumerate(GALLERY)
    ]
    out = root / "out"
    hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=48"]
    tag = embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny])).model_tag
    index.run(load_config(index.IndexConfig, None, [f"out={out}"]))
    sims = {d: _cosines(out, tag, d) for d in [f"draw{i}" for i in range(6)]}
    pairs = pd.DataFrame(
        {
            "drawing_id": ["draw0", "draw1", "draw2"],
            "artwork_id": [_nearest(sims[d]) for d in ("draw0", "draw1", "draw2")],
        }
    )
    pairs.to_csv(root / "pairs.csv", index=False)
    pd.DataFrame({"drawing_id": ["draw3", "draw4", "draw5"]}).to_csv(root / "none.csv", index=False)
    return out, tag, root, sims, pairs


def _cosines(out, tag, drawing) -> dict[str, float]:
    _q, q = embeddings.read_embeddings(out, tag, ids=[drawing])
    _g, g = embeddings.read_embeddings(out, tag, ids=GALLERY)
    return dict(zip(GALLERY, (g.astype(np.float64) @ q[0].astype(np.float64)).tolist()))


def _nearest(sims: dict[str, float]) -> str:
    return max(sims, key=lambda a: sims[a])


def _by_hand(sims: dict[str, float], cal: dict, inliers: dict[str, int] | None = None) -> dict:
    """The confidence of every artwork: logistic of (similarity - mean similarity at ranks
    5..20 of the search's order: `sims` in that order, else by similarity), plus the inliers'."""
    ranked = list(sims.values()) if inliers is not None else sorted(sims.values(), reverse=True)
    first, last = cal["background_ranks"]
    background = float(np.mean(ranked[first - 1 : last]))
    out = {}
    for a, s in sims.items():
        z = cal["weights"][0] * (s - background) + cal["bias"]
        if inliers is not None:
            z += cal["weights"][1] * np.log1p(max(inliers[a], 0))
        out[a] = 1 / (1 + np.exp(-z))
    return out


def test_confidence_is_absent_without_a_calibration_and_said_so(calib_run, capsys):
    out, tag, _root, _sims, _pairs = calib_run
    assert not (out / "calibration").exists()
    result = search.run(SearchConfig(out=str(out), query="draw0", k=3))
    assert result["confidence"].isna().all() and result["likely_copy"].isna().all()
    assert "no calibration for" in capsys.readouterr().out


def test_evaluate_fits_the_calibration_and_search_uses_it(calib_run, capsys):
    out, tag, root, sims, pairs = calib_run
    result = evaluate.run(
        EvaluateConfig(
            out=str(out),
            pairs_csv=str(root / "pairs.csv"),
            non_copies_csv=str(root / "none.csv"),
            calibrate=True,
        )
    )
    cal = json.loads((out / "calibration" / tag / "global.json").read_text())
    assert calibration_path(out, tag, "global").endswith("calibration/" + tag + "/global.json")
    assert cal["fitted_on"]["copies"] == 3 and cal["fitted_on"]["non_copy_queries"] == 3
    # the pooled results: every artwork of all 6 drawings (top 10 = the gallery), 3 copies
    copies = set(zip(pairs["drawing_id"], pairs["artwork_id"]))
    raw = [(s, (d, a) in copies) for d, row in sims.items() for a, s in row.items()]
    scores, labels = np.array([s for s, _ in raw]), np.array([c for _, c in raw])
    d = result.detection
    assert d["micro_AP_score"] == pytest.approx(100 * average_precision_score(labels, scores))
    conf = {dr: _by_hand(row, cal) for dr, row in sims.items()}
    pooled = np.array([conf[dr][a] for dr, row in sims.items() for a in row])
    assert d["micro_AP"] == pytest.approx(100 * average_precision_score(labels, pooled))
    # the threshold lets no non-copy drawing through (1 % of 3 drawings is none)
    assert d["flagged_non_copies"] == 0.0
    assert max(conf[f"draw{i}"][a] for i in (3, 4, 5) for a in GALLERY) < cal["threshold"]
    saved = json.loads(open(result.path).read())
    assert saved["detection"]["micro_AP"] == pytest.approx(d["micro_AP"])
    shown = _detection_table(read_evaluations(out))  # the report's copy-detection table
    assert shown is not None and shown.rows[0][:3] == [tag, "pairs.csv", integer(3)]
    assert shown.rows[0][3] == num(d["micro_AP"])
    assert "copy detection" in capsys.readouterr().out

    one = search.run(SearchConfig(out=str(out), query="draw4", k=4))
    expected = [conf["draw4"][a] for a in one["artwork_id"]]
    np.testing.assert_allclose(one["confidence"], expected, rtol=1e-4)  # the index is float32
    assert one["likely_copy"].tolist() == [c >= cal["threshold"] for c in one["confidence"]]
    assert "likely_copy at >=" in capsys.readouterr().out
    table = pd.read_parquet(search.run(SearchConfig(out=str(out), batch=True, k=4)))
    rows = table[table["drawing_id"] == "draw4"].sort_values("rank")
    np.testing.assert_allclose(rows["confidence"], one["confidence"])
    assert rows["likely_copy"].tolist() == one["likely_copy"].tolist()


def test_non_copy_drawings_are_checked(calib_run, tmp_path):
    out, _tag, root, _sims, _pairs = calib_run
    for ids, message in ((["draw0"], "have pairs"), (["art1", "ghost"], "not searchable")):
        pd.DataFrame({"drawing_id": ids}).to_csv(tmp_path / "n.csv", index=False)
        config = EvaluateConfig(
            out=str(out), pairs_csv=str(root / "pairs.csv"), non_copies_csv=str(tmp_path / "n.csv")
        )
        with pytest.raises(ValueError, match=message):
            evaluate.run(config)


def test_verified_confidence_uses_the_inliers_and_the_fused_score(region_run):  # noqa: F811
    out, tag, root, _first, _cfg = region_run
    pairs = str(root / "pairs.csv")
    evaluate.run(EvaluateConfig(out=str(out), pairs_csv=pairs, mode="verified", calibrate=True))
    cal = json.loads((out / "calibration" / tag / "verified.json").read_text())
    assert len(cal["weights"]) == 2 and cal["weights"][1] > 0  # more inliers, more confidence
    found = search.run(SearchConfig(out=str(out), query="detail4", k=6, mode="verified"))
    sims = dict(zip(found["artwork_id"], 1.0 - found["distance"]))  # the fused score
    inliers = dict(zip(found["artwork_id"], found["inliers"]))
    expected = _by_hand(sims, cal, inliers)
    np.testing.assert_allclose(
        found["confidence"], [expected[a] for a in found["artwork_id"]], rtol=1e-4
    )
    assert found["artwork_id"].iloc[0] == "art4" and bool(found["likely_copy"].iloc[0])
    # the workbench's card for the same result shows the same confidence, and flags it
    from tests.test_regions import _serve_client

    page = _serve_client(out).get(f"/drawings/detail4?model={tag}&mode=verified&k=6")
    assert page.status_code == 200
    card = page.text.split('id="pair-')[1]  # the first card: art4
    shown = f"confidence {100 * found['confidence'].iloc[0]:.1f} %"
    assert shown in card and 'class="likely">likely copy</strong>' in card
