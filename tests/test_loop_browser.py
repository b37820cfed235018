"""The experts' loop, closed, on tiny data with real parts: the workbench serves a model's
batch-search candidates with a file of known pairs imported; an expert in Chromium decides in the
review queue by keyboard (match, non-match, skip, then a match undone); `drawmatch export` writes
the known pairs with the match and the non-match as a negative; `drawmatch retrain` trains,
embeds and indexes a new model, which the workbench's model menu and the report then list."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import pytest

from drawmatch.cli import main
from drawmatch.data.neighbours import candidates_path
from drawmatch.jobs import index, search
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.search import SearchConfig
from tests.conftest import needs_chromium, served
from tests.test_retrain import TINY_ROUND, reviewed, run_retrain

pytestmark = [pytest.mark.slow, needs_chromium]

KNOWN = [f"draw{i:02d}" for i in range(2, 12)]  # draw02-art02 ... draw11-art11 are known


def queue_order(out: Path, tag: str) -> tuple[list[tuple[str, str]], int]:
    """The review queue read from the candidates file: its pairs closest first (ties by rank)
    with the known pairs left out, and how many known pairs are among the candidates."""
    table = pd.read_parquet(candidates_path(str(out), tag))
    table = table.sort_values(["distance", "rank"], kind="stable")
    known = {(d, "art" + d[4:]) for d in KNOWN}
    pairs = list(zip(table["drawing_id"], table["artwork_id"]))
    return [p for p in pairs if p not in known], sum(p in known for p in pairs)


def expect_card(page, pair: tuple[str, str]) -> None:
    """Wait until the review card on `page` shows `pair` (drawing, artwork)."""
    from playwright.sync_api import expect

    box = page.locator("#review-card")
    expect(box.locator("input[name=drawing_id]")).to_have_value(pair[0])
    expect(box.locator("input[name=artwork_id]")).to_have_value(pair[1])


def review_in_chromium(browser, url: str, order: list[tuple[str, str]], known: int) -> None:
    """Sign in and decide the first four cards of `order` by keyboard: match, non-match, skip,
    match; then undo the last match. Checks the card and the progress after each key (`known`
    candidates count as reviewed from the start)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/review")
    page.fill("input[name=name]", "Loop Expert")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/review"))
    progress = page.locator("#review-card .ptext")
    total = len(order) + known
    expect(progress).to_contain_text(f"{known} of {total} candidates reviewed")
    expect_card(page, order[0])
    steps = (("m", 1, order[1]), ("n", 2, order[2]), ("s", 2, order[3]), ("m", 3, order[4]))
    for key, done, next_card in steps:
        page.keyboard.press(key)
        expect_card(page, next_card)
        expect(progress).to_contain_text(f"{known + done} of {total}")
    expect(progress).to_contain_text("1 skipped")
    page.keyboard.press("u")
    expect(page.locator("#review-card .notice")).to_contain_text(
        f"Undone: match on {order[3][0]} / {order[3][1]}"
    )
    expect(progress).to_contain_text(f"{known + 2} of {total}")
    expect_card(page, order[3])  # the undone pair is offered again at once
    assert not problems, problems
    page.close()


def pairs_in(path: Path) -> set[tuple[str, str]]:
    return {(r["drawing_id"], r["artwork_id"]) for r in csv.DictReader(path.open())}


def test_review_export_retrain_and_the_new_model_is_listed(ray_local, tmp_path, chromium, capsys):
    from drawmatch.serve.app import create_app
    from drawmatch.serve.config import ServeConfig
    from tests.test_serve import signed_in

    out, old_tag = reviewed(tmp_path)
    index.run(IndexConfig(out=str(out)))
    search.run(SearchConfig(out=str(out), batch=True, k=3))
    order, known_candidates = queue_order(out, old_tag)
    assert len(order) >= 5
    known_file = tmp_path / "known_pairs.csv"
    known_file.write_text("drawing_id,artwork_id\n" + "".join(f"{d},art{d[4:]}\n" for d in KNOWN))
    with served(out, f"pairs_csv=[{known_file}]") as url:
        review_in_chromium(chromium, url, order, known_candidates)
    matched, rejected, skipped, undone = order[:4]

    assert main(["export", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(KNOWN) + 1} pairs written to" in printed
    exported = out / "annotations" / "pairs.csv"
    known = {(d, f"art{d[4:]}") for d in KNOWN}
    assert pairs_in(exported) == known | {matched}
    assert pairs_in(exported.parent / "negatives.csv") == {rejected}
    assert skipped not in pairs_in(exported) and undone not in pairs_in(exported)

    assert run_retrain(f"out={out}", "name=round-1", *TINY_ROUND) == 0
    where = out / "retrain" / "round-1"
    assert (where / "pairs.csv").read_text() == exported.read_text()
    assert (where / "negatives.csv").read_text() == (exported.parent / "negatives.csv").read_text()
    new_tag = next(Path(p).name for p in (out / "embeddings").iterdir() if p.name != old_tag)
    assert new_tag.startswith("tiny-") and "-ft-" in new_tag

    http, _ = signed_in(create_app(ServeConfig(out=str(out), load_model=False)))
    menu = http.get("/review").text.split('<select name="model">')[1].split("</select>")[0]
    assert re.findall(r'<option value="([^"]+)"', menu) == sorted([old_tag, new_tag])
    report = (out / "report" / "index.html").read_text()
    assert old_tag in report and new_tag in report
