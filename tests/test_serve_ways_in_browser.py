"""The workbench's ways in, in a real headless Chromium (Debian's, driven by Playwright): the
artworks grid searched from its box (case ignored), an artwork's page, and an uploaded image
kept on the page while the model changes. A screenshot of the artworks grid is saved as a test
artefact (the folder is printed; set DRAWMATCH_ARTEFACTS to choose it)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import needs_chromium, served

pytestmark = [pytest.mark.slow, needs_chromium]

ALL_LOADED = "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from drawmatch.workflows.demo import demo_data_dir
    from tests import serve_data

    out = serve_data.build(
        tmp_path_factory.mktemp("ways-in"), n_drawings=12, n_artworks=40, demo=demo_data_dir()
    )
    # load_model=true: the server reports ready (/healthz 200) once both models have loaded
    with served(out, "k=6", "page_size=12", "load_model=true") as url:
        yield url, out


def _listed(out: Path, word: str) -> list[str]:
    """The artworks with a word of id, title or artist that begins with `word` (any case), in
    the grid's order: by artist, then title, then id (computed here from the catalogue, not by
    the workbench's code; the demo titles are plain ASCII)."""
    from drawmatch.data import catalogue as cat

    table = cat.read_catalogue(out)
    arts = table[table["collection"] == "artwork"]
    rows = [
        (a.lower(), re.sub(r"^[^0-9a-z]+", "", t.lower()), k)  # leading quotes ignored
        for k, t, a in zip(arts["id"], arts["title"], arts["artist"])
        if any(w.startswith(word.lower()) for w in re.split(r"[^0-9a-z]+", f"{k} {t} {a}".lower()))
    ]
    return [k for _a, _t, k in sorted(rows)]


def test_artworks_search_and_an_upload_kept_across_a_model_change(server, artefacts, chromium):
    from playwright.sync_api import expect

    from tests.serve_data import model_tags

    url, out = server
    problems: list[str] = []
    page = chromium.new_page(viewport={"width": 1440, "height": 1000})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/artworks")
    page.fill("input[name=name]", "Test Expert")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/artworks$"))

    # the grid: 40 artworks, 12 a page; then a search typed in capitals
    expect(page.locator("p.count")).to_contain_text("40 artworks · page 1 of 4")
    expect(page.locator("#artworks li.tile")).to_have_count(12)
    page.wait_for_function(ALL_LOADED)
    page.screenshot(path=str(artefacts / "artworks-grid.png"), full_page=False)
    titles = pd.Series(page.locator("#artworks .title").all_inner_texts())
    word = titles.str.split().str[0].value_counts().index[0]  # a word several titles share
    expected = _listed(out, word)
    assert expected
    page.fill("input[name=q]", word.upper())
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q="))
    cards = page.locator("#artworks li.tile a")
    expect(cards).to_have_count(min(len(expected), 12))
    shown = [c.get_attribute("href").split("/artworks/")[1] for c in cards.all()]
    assert shown == expected[:12]
    title = page.locator("#artworks .title").first.inner_text()
    cards.first.click()
    page.wait_for_url(re.compile(r"/artworks/[^?]+$"))
    expect(page.locator("h1")).to_have_text(title)
    expect(page.locator("form.mark-copy button")).to_have_text("Mark as a copy")

    # search by image: the upload stays on the page when the model changes
    first, second = model_tags(out)
    page.goto(url + "/upload")
    page.set_input_files("input[name=image]", str(out.parent / "a" / "art03.jpg"))
    page.select_option("form.upload select[name=model]", first)
    page.click("form.upload button[type=submit]")
    kept = page.locator(".upload-results .query img")
    expect(kept).to_be_visible()
    src = kept.get_attribute("src")
    assert re.fullmatch(r"/upload/[0-9a-f]{64}/image", src)
    expect(page.locator(".upload-results .results h2")).to_contain_text(first)
    with page.expect_navigation():
        page.select_option(".upload-results select[name=model]", second)
    expect(page.locator(".upload-results .results h2")).to_contain_text(second)
    assert page.locator(".upload-results .query img").get_attribute("src") == src
    results = page.locator(".upload-results .results li a")
    expect(results.first).to_have_attribute("href", re.compile(r"^/artworks/art03\?"))
    page.wait_for_function(ALL_LOADED)
    width = page.evaluate("document.querySelector('.upload-results .query img').naturalWidth")
    assert width > 0  # the kept image is shown, not a broken link
    page.screenshot(path=str(artefacts / "upload-kept.png"), full_page=False)
    assert not problems, problems
