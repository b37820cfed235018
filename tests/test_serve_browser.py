"""The workbench end to end in a real headless Chromium (Debian's, driven by Playwright): sign in,
filter the grid by country, open a drawing, mark a pair, reload, review three candidates with the
keyboard, export. Screenshots of the grid and of a drawing page are saved as test artefacts (the
folder is printed; set DRAWMATCH_ARTEFACTS to choose it)."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest

from tests.conftest import needs_chromium, served

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from drawmatch.workflows.demo import demo_data_dir
    from tests import serve_data

    out = serve_data.build(
        tmp_path_factory.mktemp("browser"), n_drawings=30, n_artworks=120, demo=demo_data_dir()
    )
    with served(out, "k=8", "page_size=24") as url:
        yield url


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    chosen = os.environ.get("DRAWMATCH_ARTEFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test screenshots: {folder}")
    return folder


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

    # the review queue, three candidates with the keyboard
    page.goto(server + "/review")
    reviewed = []
    for key, decision in (("m", "match"), ("n", "non-match"), ("s", "skip")):
        card = page.locator("#review-card")
        pair = (
            card.locator("input[name=drawing_id]").get_attribute("value"),
            card.locator("input[name=artwork_id]").get_attribute("value"),
        )
        progress = card.locator(".ptext").inner_text()
        done = int(progress.split(" of ")[0].replace(",", ""))
        page.keyboard.press(key)
        expect(page.locator("#review-card .ptext")).to_contain_text(f"{done + 1} of")
        reviewed.append((*pair, decision))
    assert len({(d, a) for d, a, _ in reviewed}) == 3
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
