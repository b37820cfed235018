"""The workbench end to end in a real headless Chromium (Debian's, driven by Playwright): sign in,
filter the grid by country, open a drawing, mark a pair, reload, review candidates with the
keyboard (match, non-match, skip, undo), export; then double review by two annotators and the
disagreements page. Screenshots of the grid, a drawing page, the review queue and the
disagreements page are saved as test artefacts (the folder is printed; set DRAWMATCH_ARTEFACTS to
choose it)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from tests.conftest import needs_chromium, served

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    from drawmatch.workflows.demo import demo_data_dir
    from tests import serve_data

    return serve_data.build(
        tmp_path_factory.mktemp("browser"), n_drawings=30, n_artworks=120, demo=demo_data_dir()
    )


@pytest.fixture(scope="module")
def server(out):
    with served(out, "k=8", "page_size=24") as url:
        yield url


def test_an_expert_session_in_chromium(server, artefacts, chromium):
    from playwright.sync_api import expect

    problems: list[str] = []
    page = chromium.new_page(viewport={"width": 1440, "height": 1000})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # sign in (a page asked for before signing in comes back afterwards)
    page.goto(server + "/drawings")
    assert "/login" in page.url
    page.fill("input[name=name]", "Test Expert")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/drawings"))
    expect(page.locator("header .who")).to_contain_text("Test Expert")

    # the grid, filtered by country (the filter applies on change)
    page.select_option("select[name=country]", "FRA")
    page.wait_for_url(re.compile(r"country=FRA"))
    tiles = page.locator("li.tile a")
    expect(tiles.first).to_be_visible()
    ids = [t.get_attribute("href").split("/")[-1] for t in tiles.all()]
    assert ids and all("_FRA_" in i for i in ids)
    page.wait_for_function(
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(artefacts / "grid.png"), full_page=False)

    # a drawing: mark its first candidate as a match, with a note
    tiles.first.click()
    page.wait_for_url(re.compile(r"/drawings/[^?]+"))
    drawing = page.url.split("/drawings/")[1].split("?")[0]
    first = page.locator("li.pair").first
    artwork = first.locator("input[name=artwork_id]").get_attribute("value")
    first.locator("input[name=note]").fill("same subject, same pose")
    first.locator("button[value=match]").click()
    marked = page.locator("li.pair").first
    expect(marked).to_have_class(re.compile(r"\bmatch\b"))
    expect(marked.locator(".state")).to_contain_text("Match by Test Expert")
    page.wait_for_function(
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path=str(artefacts / "drawing.png"), full_page=False)

    # reload: still marked
    page.reload()
    again = page.locator("li.pair").first
    expect(again).to_have_class(re.compile(r"\bmatch\b"))
    expect(again.locator(".state")).to_contain_text("same subject, same pose")

    # the review queue by keyboard: match, non-match, skip (no decision: the count stands),
    # then undo the skip (the pair is offered again at once)
    page.goto(server + "/review")
    reviewed = []
    for key, decision, step in (("m", "match", 1), ("n", "non-match", 1), ("s", "skip", 0)):
        card = page.locator("#review-card")
        pair = (
            card.locator("input[name=drawing_id]").get_attribute("value"),
            card.locator("input[name=artwork_id]").get_attribute("value"),
        )
        progress = card.locator(".ptext").inner_text()
        done = int(progress.split(" of ")[0].replace(",", ""))
        page.keyboard.press(key)
        expect(page.locator("#review-card .ptext")).to_contain_text(f"{done + step} of")
        reviewed.append((*pair, decision))
    expect(page.locator("#review-card .ptext")).to_contain_text("1 skipped")
    assert len({(d, a) for d, a, _ in reviewed}) == 3
    page.keyboard.press("u")
    expect(page.locator("#review-card .notice")).to_contain_text("Undone: skip on")
    card = page.locator("#review-card")
    expect(card.locator("input[name=drawing_id]")).to_have_value(reviewed[2][0])
    expect(card.locator("input[name=artwork_id]")).to_have_value(reviewed[2][1])
    expect(card.locator(".ptext")).not_to_contain_text("skipped")
    page.screenshot(path=str(artefacts / "review.png"), full_page=False)

    # the export holds the decisions
    response = page.request.get(server + "/export.csv")
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(response.text())))
    exported = {(r["drawing_id"], r["artwork_id"]) for r in rows}
    assert (drawing, artwork) in exported
    for d, a, decision in reviewed:
        assert ((d, a) in exported) == (decision == "match")
    assert not problems, problems
    for name in ("grid.png", "drawing.png"):
        assert (artefacts / name).stat().st_size > 10_000


def review_by_keyboard(browser, url: str, name: str, keys: str) -> None:
    """Sign in as `name` in a browser context of its own and review with `keys`, one a card."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(url + "/review")
    page.fill("input[name=name]", name)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/review"))
    for key in keys:
        before = page.locator("#review-card .ptext").inner_text()
        page.keyboard.press(key)
        expect(page.locator("#review-card .ptext")).not_to_have_text(before)
    context.close()


def test_double_review_and_its_disagreements_in_chromium(tmp_path, artefacts, chromium):
    from playwright.sync_api import expect

    from drawmatch.workflows.demo import demo_data_dir
    from tests import serve_data

    fresh = serve_data.build(tmp_path, n_drawings=12, n_artworks=40, demo=demo_data_dir())
    with served(fresh, "k=8", "review.double=true") as url:
        # the same five candidates to two annotators, who disagree on the 2nd and the 5th
        review_by_keyboard(chromium, url, "Anna Expert", "mmnmn")
        review_by_keyboard(chromium, url, "Bruno Expert", "mnnmm")
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/review/agreement")
        page.fill("input[name=name]", "Clara Expert")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/review/agreement"))
        # Anna m m n m n, Bruno m n n m m: observed 3/5, chance .6*.6 + .4*.4 = .52
        expect(page.locator(".agreement")).to_contain_text("Cohen's κ = 0.17")
        expect(page.locator(".agreement")).to_contain_text("(2 still to settle)")
        rows = page.locator("li.disagreement")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("Anna Expert")
        expect(rows.first).to_contain_text("Bruno Expert")
        page.wait_for_function(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        page.screenshot(path=str(artefacts / "disagreements.png"), full_page=True)
        rows.first.locator("button[value=match]").click()
        expect(page.locator(".agreement")).to_contain_text("(1 still to settle)")
        expect(page.locator("ul.settled")).to_contain_text("by Clara Expert")
    assert (artefacts / "disagreements.png").stat().st_size > 10_000
