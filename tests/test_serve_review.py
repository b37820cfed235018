"""The workbench's review side through FastAPI's TestClient: known pairs imported from pairs
files, the review queue's order (by the calibrated confidence where there is one), skip and undo, double review with its agreement page, and the
export of pairs and non-matches."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from drawmatch.core.config import load_config  # noqa: E402
from drawmatch.data import catalogue as cat  # noqa: E402
from drawmatch.data.annotations import AnnotationStore, db_path  # noqa: E402
from drawmatch.data.neighbours import candidates_path  # noqa: E402
from drawmatch.data.pairs import PairsError  # noqa: E402
from drawmatch.jobs import search  # noqa: E402
from drawmatch.jobs.search import SearchConfig  # noqa: E402
from drawmatch.retrieval.calibration import Calibration, write_calibration  # noqa: E402
from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from drawmatch.serve.data import candidates_confidence  # noqa: E402
from tests import serve_data  # noqa: E402
from tests.serve_data import VERSO  # noqa: E402
from tests.test_serve import BASE, signed_in  # noqa: E402


def candidates(out: Path, tag: str) -> list[tuple[str, str, float]]:
    """(drawing, artwork, distance) of `tag`'s candidates, closest first, never a verso."""
    table = pd.read_parquet(candidates_path(str(out), tag))
    table = table[table["drawing_id"] != VERSO].sort_values(["distance", "rank"], kind="stable")
    return list(zip(table["drawing_id"], table["artwork_id"], table["distance"]))


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return serve_data.build(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def tag(out) -> str:
    return serve_data.model_tags(out)[0]


@pytest.fixture(scope="module")
def known_file(out, tag) -> Path:
    """A pairs file naming the two closest candidates of `tag` as known pairs."""
    path = out.parent / "known_pairs.csv"
    rows = candidates(out, tag)[:2]
    path.write_text("drawing_id,artwork_id\n" + "".join(f"{d},{a}\n" for d, a, _ in rows))
    return path


@pytest.fixture(scope="module")
def app(out, known_file):
    # the same file given twice, and the workbench started twice: imported once
    config = ServeConfig(out=str(out), k=5, load_model=False, pairs_csv=(str(known_file),) * 2)
    create_app(config)
    return create_app(config)


def card_of(page: str) -> dict[str, str]:
    return dict(re.findall(r'name="(drawing_id|artwork_id|rank|distance)" value="([^"]*)"', page))


def decide(http, token: str, tag: str, card: dict[str, str], decision: str, order: str = ""):
    return http.post(
        "/review",
        data={**card, "model": tag, "decision": decision, "order": order},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )


def test_known_pairs_are_imported_once_and_shown_as_known(app, out, known_file):
    http, _ = signed_in(app)
    store = AnnotationStore(db_path(out))
    rows = list(csv.DictReader(known_file.open()))
    imported = [d for d in store.history() if d.source == "imported"]
    assert len(imported) == len(rows) == 2
    assert {d.annotator for d in imported} == {"known_pairs.csv"}
    drawing, artwork = rows[0]["drawing_id"], rows[0]["artwork_id"]
    page = http.get(f"/drawings/{drawing}").text
    assert "Known match" in page and "imported from known_pairs.csv" in page
    art = http.get(f"/artworks/{artwork}").text
    copies = art.split("Drawings annotated as its copies")[1].split("<h2>")[0]
    assert drawing in copies and "imported from known_pairs.csv" in copies
    matched = http.get("/drawings?state=match").text
    assert drawing in matched and rows[1]["drawing_id"] in matched


def test_the_queue_skips_known_pairs_and_brings_skips_back_last(app, out, tag, known_file):
    http, token = signed_in(app, "Queue Tester")
    cands = candidates(out, tag)
    page = http.get(f"/review?model={tag}").text
    card = card_of(page)
    assert (card["drawing_id"], card["artwork_id"]) == cands[2][:2]  # the two known ones left out
    assert re.search(r"\b2 of \d+ candidates reviewed", page)
    response = decide(http, token, tag, card, "skip")
    assert "1 skipped, shown again at the end" in response.text
    nxt = card_of(response.text)
    assert (nxt["drawing_id"], nxt["artwork_id"]) == cands[3][:2]
    # decide all the others: the skipped pair is the last card, marked as seen before
    left = len(cands) - 3  # all but the two known and the skipped one
    for _ in range(left):
        response = decide(http, token, tag, card_of(response.text), "non-match")
    last = card_of(response.text)
    assert (last["drawing_id"], last["artwork_id"]) == cands[2][:2]
    assert "skipped before" in response.text
    response = decide(http, token, tag, last, "match")
    assert "Every candidate has been reviewed." in response.text
    # undo: the last decision is undone, the pair is offered again
    undo = http.post(
        "/review/undo",
        data={"model": tag},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert undo.status_code == 200 and "Undone: match on" in undo.text
    again = card_of(undo.text)
    assert (again["drawing_id"], again["artwork_id"]) == cands[2][:2]


def test_most_uncertain_order_is_offered_and_explained(app, out, tag):
    http, _ = signed_in(app, "Order Tester")
    page = http.get(f"/review?model={tag}&order=uncertain").text
    assert "median distance of the known matches" in page
    assert 'name="order" value="uncertain"' in page
    assert http.get(f"/review?model={tag}&order=random").status_code in (400, 422)


def test_without_a_calibration_the_queue_is_closest_first_and_says_how_to_fit_one(app, out, tag):
    http, token = signed_in(app, "Fallback Tester")
    page = http.get(f"/review?model={tag}").text
    assert 'value="closest" selected' in page  # the default order without a confidence
    fallback = re.findall(r'<p class="muted order-note fallback">(.*?)</p>', page)
    assert len(fallback) == 1 and "closest first" in fallback[0]
    assert f"drawmatch evaluate pairs_csv=PAIRS.csv model_tag={tag} calibrate=true" in fallback[0]
    assert "confidence " not in page.split('id="review-card"')[1].split("</figure>")[1]
    likely = http.get(f"/review?model={tag}&order=likely").text
    assert card_of(likely) == card_of(page)  # likely copies first falls back to closest first
    bad = http.get(f"/review?model={tag}&order=random")
    assert bad.status_code == 400 and "order must be one of likely, closest, uncertain" in bad.text
    before = AnnotationStore(db_path(out)).count()
    refused = decide(http, token, tag, card_of(page), "match", "random")
    assert refused.status_code == 400 and AnnotationStore(db_path(out)).count() == before


def by_hand(table: pd.DataFrame, weight: float, bias: float, ranks: tuple[int, int]) -> np.ndarray:
    """The calibrated confidence of each row, computed here: the logistic of the similarity
    minus the mean similarity of its drawing's rows ranked ranks[0]..ranks[1]."""
    similarity = 1.0 - table["distance"].to_numpy(np.float64)
    inside = (table["rank"] >= ranks[0]) & (table["rank"] <= ranks[1])
    level = pd.Series(similarity[inside]).groupby(table["drawing_id"].to_numpy()[inside]).mean()
    background = table["drawing_id"].map(level).to_numpy(np.float64)
    return 1.0 / (1.0 + np.exp(-(weight * (similarity - background) + bias)))


def test_candidates_without_confidence_get_it_at_load_only_when_ranked_deep_enough(tmp_path):
    rng = np.random.default_rng(3)
    table = pd.DataFrame(
        {
            "drawing_id": np.repeat(["d1", "d2", "d3"], 20),
            "rank": np.tile(np.arange(1, 21), 3),
            "artwork_id": [f"a{i}" for i in rng.permutation(60)],
            "distance": np.sort(rng.uniform(0.2, 0.9, (3, 20)), axis=1).reshape(-1),
        }
    )
    calibration = Calibration("m", "global", (20.0,), -1.0, 0.7)
    write_calibration(tmp_path, calibration)
    scored, found = candidates_confidence(str(tmp_path), "m", table)
    assert found == calibration
    expected = by_hand(table, 20.0, -1.0, (5, 20))
    np.testing.assert_allclose(scored["confidence"], expected, rtol=1e-9)
    assert list(scored["likely_copy"]) == list(expected >= 0.7)
    assert 0 < scored["likely_copy"].sum() < len(table)
    # a file cut above rank 20: search ranked deeper than it kept, the background is not known
    shallow, _ = candidates_confidence(str(tmp_path), "m", table[table["rank"] <= 10])
    assert "confidence" not in shallow
    # the confidence search wrote is kept; no calibration for a model: none made up
    given = table.assign(confidence=0.25, likely_copy=False)
    kept, _ = candidates_confidence(str(tmp_path), "m", given)
    assert (kept["confidence"] == 0.25).all()
    other, none = candidates_confidence(str(tmp_path), "other", table)
    assert none is None and "confidence" not in other


WEIGHT, BIAS, LIKELY = 100.0, -1.5, 0.9  # spread over the tiny models' normalised scores


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A workbench whose first model has a calibration and candidates searched with it (k=10:
    every artwork, so the background ranks 5-10 are in the file); the second has none."""
    out = serve_data.build(tmp_path_factory.mktemp("calibrated"))
    tag = serve_data.model_tags(out)[0]
    write_calibration(out, Calibration(tag, "global", (WEIGHT,), BIAS, LIKELY))
    search.search_batch(SearchConfig(out=str(out), batch=True, k=10), cat.read_catalogue(out), tag)
    return out, tag, create_app(ServeConfig(out=str(out), k=5, load_model=False))


def test_the_queue_shows_likely_copies_first_by_calibrated_confidence(calibrated):
    out, tag, app = calibrated
    http, token = signed_in(app, "Likely Tester")
    table = pd.read_parquet(candidates_path(str(out), tag))
    np.testing.assert_allclose(table["confidence"], by_hand(table, WEIGHT, BIAS, (5, 20)), 1e-6)
    assert 0 < table["likely_copy"].sum() < len(table)
    ranked = table.sort_values(["confidence", "distance"], ascending=[False, True])
    page = http.get(f"/review?model={tag}").text
    assert 'value="likely" selected' in page  # the default order with a confidence
    assert "Likely copies first" in page and "No calibrated confidence" not in page
    best = ranked.iloc[0]
    assert best["likely_copy"]
    card = card_of(page)
    assert (card["drawing_id"], card["artwork_id"]) == (best["drawing_id"], best["artwork_id"])
    shown = re.search(r"confidence ([\d.]+) % · <strong class=\"likely\">likely copy", page)
    assert shown and float(shown.group(1)) == pytest.approx(100 * best["confidence"], abs=0.051)
    # decided: the next card is the second highest confidence
    response = decide(http, token, tag, card, "match", "likely")
    second = ranked.iloc[1]
    assert card_of(response.text)["artwork_id"] == second["artwork_id"]
    assert card_of(response.text)["drawing_id"] == second["drawing_id"]
    # most uncertain first: the confidence nearest 0.5 (the pair decided above left out)
    gap = (ranked["confidence"] - 0.5).abs()
    nearest = ranked.assign(gap=gap).sort_values(["gap", "distance"]).iloc[0]
    uncertain = http.get(f"/review?model={tag}&order=uncertain").text
    assert "calibrated confidence nearest 50 %" in uncertain
    assert (card_of(uncertain)["drawing_id"], card_of(uncertain)["artwork_id"]) == (
        nearest["drawing_id"],
        nearest["artwork_id"],
    )
    # the second model has no calibration: closest first, and the page says how to fit one
    other = serve_data.model_tags(out)[1]
    fallback = http.get(f"/review?model={other}").text
    assert (
        f"model_tag={other} calibrate=true" in fallback and 'value="closest" selected' in fallback
    )


def test_undo_with_nothing_to_undo_and_csrf_on_the_new_routes(app, tag):
    http, token = signed_in(app, "Nobody Yet")
    nothing = http.post("/review/undo", data={"model": tag}, headers={"X-CSRF-Token": token})
    assert nothing.status_code == 409 and "nothing to undo" in nothing.text
    for path in ("/review/undo", "/review/settle"):
        data = {"model": tag, "drawing_id": "x", "artwork_id": "y", "decision": "match"}
        assert http.post(path, data=data).status_code == 403
        assert http.post(path, data=data, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        cross = http.post(
            path, data=data, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}
        )
        assert cross.status_code == 403
    anonymous = TestClient(app, base_url=BASE)
    assert anonymous.post("/review/undo", data={"model": tag}).status_code == 401


def test_a_pairs_file_with_a_verso_is_refused_before_the_workbench_starts(out, tmp_path, capsys):
    from drawmatch.cli import main

    bad = tmp_path / "with_verso.csv"
    bad.write_text(f"drawing_id,artwork_id\n{VERSO},art01\n")
    with pytest.raises(PairsError, match="versos"):
        create_app(ServeConfig(out=str(out), load_model=False, pairs_csv=(str(bad),)))
    before = AnnotationStore(db_path(out)).count()
    capsys.readouterr()
    assert main(["serve", f"out={out}", "load_model=false", f"pairs_csv=[{bad}]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and VERSO in err[0] and "versos" in err[0]
    assert main(["serve", f"out={out}", f"pairs_csv=[{tmp_path / 'missing.csv'}]"]) == 1
    assert AnnotationStore(db_path(out)).count() == before


def test_export_merges_known_pairs_and_writes_negatives(app, out, known_file, capsys):
    from drawmatch.jobs import export
    from drawmatch.jobs.export import ExportConfig

    http, token = signed_in(app, "Export Tester")
    store = AnnotationStore(db_path(out))
    rows = list(csv.DictReader(known_file.open()))
    rejected = (rows[1]["drawing_id"], rows[1]["artwork_id"])
    http.post(
        "/annotate",
        data={"drawing_id": rejected[0], "artwork_id": rejected[1], "decision": "non-match"},
        headers={"X-CSRF-Token": token},
    )
    result = export.run(ExportConfig(out=str(out)))
    printed = capsys.readouterr().out
    pairs = {(r["drawing_id"], r["artwork_id"]) for r in csv.DictReader(open(result.path))}
    negatives = list(csv.DictReader(open(result.negatives_path)))
    current = store.current()
    assert pairs == {(d.drawing_id, d.artwork_id) for d in current if d.decision == "match"}
    assert (rows[0]["drawing_id"], rows[0]["artwork_id"]) in pairs and rejected not in pairs
    assert {(r["drawing_id"], r["artwork_id"]) for r in negatives} == {
        (d.drawing_id, d.artwork_id) for d in current if d.decision == "non-match"
    }
    assert Path(result.negatives_path).parent == Path(result.path).parent
    assert list(negatives[0])[:2] == ["drawing_id", "artwork_id"]
    assert result.counts.imported_kept == 1 and result.counts.rejected_imports == 1
    assert "imported pairs rejected in the workbench (exported as non-matches): 1" in printed
    assert "double-review disagreements not settled (their latest decision exported): 0" in printed
    assert result.open_disagreements == 0
    assert http.get("/export.csv").text == Path(result.path).read_text()


# -- double review ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def double_app(tmp_path_factory):
    out = serve_data.build(tmp_path_factory.mktemp("double"))
    config = load_config(
        ServeConfig, None, [f"out={out}", "load_model=false", "review.double=true"]
    )
    return create_app(config), out


def test_double_review_two_annotators_kappa_and_settling(double_app):
    app, out = double_app
    tag = serve_data.model_tags(out)[0]
    ada, ada_token = signed_in(app, "Ada")
    grace, grace_token = signed_in(app, "Grace")
    lin, lin_token = signed_in(app, "Lin")
    page = ada.get(f"/review?model={tag}").text
    assert "double review" in page and 'href="/review/agreement' in page
    first = card_of(page)
    decide(ada, ada_token, tag, first, "match")
    decide(ada, ada_token, tag, first, "non-match")  # one annotator twice: still one review
    # Grace is shown the same pair, without Ada's decision on the card
    grace_page = grace.get(f"/review?model={tag}").text
    assert card_of(grace_page) == first and "Ada" not in grace_page.split('id="review-card"')[1]
    response = decide(grace, grace_token, tag, first, "match")
    assert card_of(response.text) != first
    # Ada is not shown it again, nor is Lin (two reviews are enough)
    assert card_of(ada.get(f"/review?model={tag}").text) != first
    assert card_of(lin.get(f"/review?model={tag}").text) != first
    # a second pair both call a match: 2 pairs, 1 agreed; kappa by hand:
    # Ada n, m; Grace m, m -> observed 1/2, chance (1/2)(0) + (1/2)(1) = 1/2 -> kappa 0
    second = card_of(ada.get(f"/review?model={tag}").text)
    decide(ada, ada_token, tag, second, "match")
    decide(grace, grace_token, tag, second, "match")
    agreement = lin.get("/review/agreement").text
    assert (
        "Cohen's κ = 0.00" in agreement and "1 agreed, 1 disagreed (1 still to settle)" in agreement
    )
    assert first["drawing_id"] in agreement.split("Disagreements to settle")[1]
    from drawmatch.jobs import export
    from drawmatch.jobs.export import ExportConfig

    assert export.run(ExportConfig(out=str(out))).open_disagreements == 1
    settled = lin.post(
        "/review/settle",
        data={**first, "model": tag, "decision": "match", "csrf_token": lin_token},
        follow_redirects=False,
    )
    assert settled.status_code == 303
    after = lin.get("/review/agreement").text
    assert "(0 still to settle)" in after and "by Lin" in after.split("Settled")[1]
    current = AnnotationStore(db_path(out)).current_by_pair(first["drawing_id"])
    assert current[first["artwork_id"]].source == "settle"
    exported = export.run(ExportConfig(out=str(out)))
    assert exported.open_disagreements == 0 and exported.counts.decided_matches >= 2
    skip = lin.post(
        "/review/settle",
        data={**first, "model": tag, "decision": "skip", "csrf_token": lin_token},
    )
    assert skip.status_code == 400
