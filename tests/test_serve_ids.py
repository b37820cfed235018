"""Ids in the workbench wrap only after `_`, `-` and `/` (the report's `breakable` filter puts a
`<wbr>` there) and never inside a word: no style of the workbench lets an id break anywhere."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from tests import serve_data  # noqa: E402
from tests.serve_data import STYLED  # noqa: E402
from tests.test_serve import signed_in  # noqa: E402

# STYLED, 2001_6-9_0000_BLG_R_A__oil, with a break opportunity after each _ and - (by hand)
WRAPPED = "2001_<wbr>6-<wbr>9_<wbr>0000_<wbr>BLG_<wbr>R_<wbr>A_<wbr>_<wbr>oil"


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    out = serve_data.build(tmp_path_factory.mktemp("ids"))
    client, _token = signed_in(create_app(ServeConfig(out=str(out), load_model=False)))
    return client


def test_ids_break_only_after_their_separators(http):
    page = http.get(f"/drawings/{STYLED}").text
    assert f"<h1>{WRAPPED}</h1>" in page
    assert f"› {WRAPPED}</nav>" in page
    grid = http.get("/drawings?collection=all&q=__oil").text
    assert re.findall(r'<span class="id">(.*?)</span>', grid) == [WRAPPED]
    # the id is left whole where it is not shown as text: links, image sources, the title
    assert f'href="/drawings/{STYLED}"' in grid and f"<title>Drawing {STYLED}" in page


def test_no_style_breaks_an_id_mid_word(http):
    shared = http.get("/shared.css").text
    style = http.get("/static/style.css").text
    for css in (shared, style):
        assert "break-all" not in css and "overflow-wrap: anywhere" not in css
    caption = re.search(r"\.tile \.cap \{([^}]*)\}", shared).group(1)
    assert "overflow-wrap: normal" in caption and "word-break: keep-all" in caption
