"""Double review stays blind outside the review card, through FastAPI's TestClient: one
annotator's decision on a pair still in double review is hidden from the others on drawing and
artwork pages and in the drawing and artwork grids, until a second annotator has reviewed it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from drawmatch.core.config import load_config  # noqa: E402
from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from tests import serve_data  # noqa: E402
from tests.serve_data import drawing_name  # noqa: E402
from tests.test_serve import signed_in  # noqa: E402

KNOWN = (drawing_name(5), "art05")


@pytest.fixture(scope="module")
def double(tmp_path_factory):
    """A workbench in double review with one known pair imported, and three annotators."""
    out = serve_data.build(tmp_path_factory.mktemp("blind"))
    known = Path(out).parent / "known.csv"
    known.write_text(f"drawing_id,artwork_id\n{KNOWN[0]},{KNOWN[1]}\n")
    config = load_config(
        ServeConfig,
        None,
        [f"out={out}", "load_model=false", "review.double=true", f"pairs_csv=[{known}]"],
    )
    app = create_app(config)
    tag = serve_data.model_tags(out)[0]
    return tag, {name: signed_in(app, name) for name in ("Ada", "Grace", "Lin")}


def annotate(who, tag: str, drawing: str, artwork: str, decision: str, hx: bool = False) -> str:
    """Decide a pair on its drawing page; returns the updated pair as htmx gets it (`hx`)."""
    http, token = who
    response = http.post(
        "/annotate",
        data={
            "csrf_token": token,
            "drawing_id": drawing,
            "artwork_id": artwork,
            "model": tag,
            "decision": decision,
        },
        headers={"HX-Request": "true"} if hx else {},
        follow_redirects=False,
    )
    assert response.status_code == (200 if hx else 303), response.text
    return response.text


def pair_item(page: str, artwork: str) -> str:
    """The `<li class="pair ...">` of `artwork` on a drawing page (the first one)."""
    found = re.search(rf'<li class="pair[^"]*" id="pair-[^"]*-{artwork}">.*?</li>', page, re.S)
    assert found, f"{artwork} not on the page"
    return found.group(0)


def seen(who, drawing: str, artwork: str) -> dict[str, object]:
    """What one annotator sees of a pair: its state on the drawing page, whether the drawing is
    listed under each annotation filter, among the artwork's copies, and the artwork's count."""
    http, _token = who
    item = pair_item(http.get(f"/drawings/{drawing}?k=10").text, artwork)
    state = re.search(r'<div class="state ([a-z-]+)"', item)
    listed = {
        f: f'href="/drawings/{drawing}"' in http.get(f"/drawings?state={f}&q={drawing}").text
        for f in ("unannotated", "annotated", "match")
    }
    artwork_page = http.get(f"/artworks/{artwork}").text.split("Drawings annotated as its copies")
    copies = re.search(r"(\d+) cop(?:y|ies)</span>", http.get(f"/artworks?q={artwork}").text)
    return {
        "state": state.group(1) if state else None,
        "by": re.findall(r"by (Ada|Grace|Lin)", item),
        "disputed": "The two reviews disagree" in item,
        "filters": [f for f, ok in listed.items() if ok],
        "copy": f'href="/drawings/{drawing}"' in artwork_page[1].split("<h2>")[0],
        "copies": int(copies.group(1)) if copies else 0,
    }


def test_a_decision_stays_hidden_until_a_second_annotator_reviews_the_pair(double):
    tag, people = double
    ada, grace, lin = people["Ada"], people["Grace"], people["Lin"]
    drawing, artwork = drawing_name(1), "art01"
    nothing = {
        "state": None,
        "by": [],
        "disputed": False,
        "filters": ["unannotated"],
        "copy": False,
        "copies": 0,
    }
    assert seen(grace, drawing, artwork) == nothing
    annotate(ada, tag, drawing, artwork, "match")
    mine = {**nothing, "state": "match", "by": ["Ada"], "filters": ["annotated", "match"]}
    assert seen(ada, drawing, artwork) == {**mine, "copy": True, "copies": 1}
    # Grace and Lin see nothing of it: not on the pages, not in the filters, not in the counts
    assert seen(grace, drawing, artwork) == nothing
    assert seen(lin, drawing, artwork) == nothing
    assert "Ada" not in grace[0].get(f"/drawings/{drawing}?k=10").text
    # Grace disagrees: two reviews, so everyone sees the latest decision and the disagreement
    annotate(grace, tag, drawing, artwork, "non-match")
    disputed = {
        **nothing,
        "state": "non-match",
        "by": ["Grace"],
        "disputed": True,
        "filters": ["annotated"],
    }
    for who in (ada, grace, lin):
        assert seen(who, drawing, artwork) == disputed
    # settled by Lin on the agreement page: a match, and no longer disputed
    settled = lin[0].post(
        "/review/settle",
        data={
            "csrf_token": lin[1],
            "drawing_id": drawing,
            "artwork_id": artwork,
            "model": tag,
            "decision": "match",
        },
        follow_redirects=False,
    )
    assert settled.status_code == 303
    outcome = {**mine, "by": ["Lin"], "copy": True, "copies": 1}
    for who in (ada, grace, lin):
        assert seen(who, drawing, artwork) == outcome


def test_skips_are_hidden_agreeing_reviews_and_known_pairs_are_shown(double):
    tag, people = double
    ada, grace, lin = people["Ada"], people["Grace"], people["Lin"]
    drawing, artwork = drawing_name(2), "art02"
    annotate(ada, tag, drawing, artwork, "skip")  # a skip is no review, and stays Ada's own
    assert seen(ada, drawing, artwork)["state"] == "skip"
    assert seen(grace, drawing, artwork)["state"] is None
    updated = annotate(grace, tag, drawing, artwork, "match", hx=True)
    assert 'title="1 decision(s) on this pair"' in updated and "Ada" not in updated
    assert seen(ada, drawing, artwork)["state"] == "skip"  # one review: still blind
    annotate(ada, tag, drawing, artwork, "match")
    agreed = {
        "state": "match",
        "by": ["Ada"],
        "disputed": False,
        "filters": ["annotated", "match"],
        "copy": True,
        "copies": 1,
    }
    for who in (ada, grace, lin):
        assert seen(who, drawing, artwork) == agreed
    # an imported known pair is not under review: everyone sees it
    for who in (ada, grace, lin):
        known = seen(who, *KNOWN)
        assert known["state"] == "match" and known["copy"] and known["filters"][-1] == "match"
