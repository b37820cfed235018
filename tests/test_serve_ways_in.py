"""The workbench's ways in: every model loaded at start (no upload answers "still loading" once
the server is ready), the artworks grid and an artwork's page (search, pages, mark as a copy,
model selector), search by an uploaded image kept across model and mode changes, the rank of
each artwork under the other model in the two-model view, and the region frames."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from tests import serve_data  # noqa: E402
from tests.test_serve import BASE, _ids_on, signed_in  # noqa: E402


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return serve_data.build(tmp_path_factory.mktemp("ways_in"))


def wait_ready(http: TestClient) -> dict:
    """The signed-in health check once it answers 200 (every model loaded; 2 minutes at most)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        health = http.get("/healthz")
        if health.status_code == 200:
            return health.json()
        assert health.status_code == 503 and health.json()["status"] == "loading"
        time.sleep(0.2)
    raise AssertionError("the models did not load")


# -- every model at start --------------------------------------------------------------------


def test_every_model_loads_at_start_and_health_says_when(out, monkeypatch):
    from drawmatch.models import embedder

    gate = threading.Event()
    real = embedder.embedder_for

    def held(root, tag):  # the real loader, held back until the test lets it go
        gate.wait(60)
        return real(root, tag)

    monkeypatch.setattr(embedder, "embedder_for", held)
    app = create_app(ServeConfig(out=str(out)))
    http, token = signed_in(app)
    anonymous = TestClient(app, base_url=BASE)
    loading = anonymous.get("/healthz")
    assert loading.status_code == 503 and loading.json() == {"status": "loading"}
    assert set(http.get("/healthz").json()["models"].values()) == {"loading"}
    gate.set()
    health = wait_ready(http)
    tags = serve_data.model_tags(out)
    assert len(tags) == 2 and health["models"] == {t: "ready" for t in tags}
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    data = (out.parent / "a" / "art03.png").read_bytes()
    for tag in reversed(tags):  # the second model too answers on its first search
        found = http.post(
            "/upload",
            files={"image": ("photo.png", data, "image/png")},
            data={"csrf_token": token, "model": tag},
        )
        assert found.status_code == 200, found.text
        assert _ids_on(found.text, "/artworks/")[0] == "art03"


def test_without_load_model_the_server_is_ready_at_once(out):
    http, _ = signed_in(create_app(ServeConfig(out=str(out), load_model=False)))
    health = http.get("/healthz")
    assert health.status_code == 200
    assert set(health.json()["models"].values()) == {"not loaded"}


# -- the artworks grid -----------------------------------------------------------------------


def test_artwork_search_ignores_case_and_accents_and_needs_every_word():
    import pandas as pd

    from drawmatch.serve.grid import ArtworkGrid

    grid = ArtworkGrid(
        pd.DataFrame(
            {
                "id": ["nymph", "stvic", "anon1", "pomme", "impr"],
                "title": [
                    "Les Nymphéas",
                    "La Montagne Sainte-Victoire",
                    "Bowl of pears",
                    None,
                    "“Impression”, soleil levant",
                ],
                "artist": ["Claude Monet", "Paul Cézanne", None, "Paul CÉZANNE", "Claude Monet"],
            }
        )
    )
    # by artist (accents and case ignored), then title (leading quotes ignored); unknown last
    assert grid.ids == ["impr", "nymph", "pomme", "stvic", "anon1"]
    assert grid.search("cezanne") == ["pomme", "stvic"]
    assert grid.search("  CÉZANNE   victoire ") == ["stvic"]  # every word, in any field
    assert grid.search("nympheas monet") == ["nymph"]
    assert grid.search("ANON") == ["anon1"]  # the id
    assert grid.search("") == grid.ids
    assert grid.search("%") == [] and grid.search("P.ul") == []  # literal, never a pattern
    assert grid.search("sainte-vic") == ["stvic"] and grid.search("victoire") == ["stvic"]
    assert grid.search("ymph") == [] and grid.search("ears") == []  # words begin a word
    assert grid.search("impression") == ["impr"]  # after a quote
    assert grid.cards["pomme"] == {"id": "pomme", "title": "", "artist": "Paul CÉZANNE"}


@pytest.fixture(scope="module")
def client(out):
    return signed_in(create_app(ServeConfig(out=str(out), k=5, page_size=4, load_model=False)))


def _cards(page: str) -> list[str]:
    return re.findall(r'<a href="/artworks/([^"?]+)">', page)


def test_artworks_grid_searches_and_pages(client):
    http, _ = client
    first = http.get("/artworks")
    assert first.status_code == 200
    assert '<a href="/artworks" class="on">Artworks</a>' in first.text  # in the navigation
    # 10 artworks by Painter 0, 1, 2, then title: 4 a page
    assert _cards(first.text) == ["art00", "art03", "art06", "art09"]
    assert "page 1 of 3" in first.text and "<strong>10</strong> artworks" in first.text
    assert _cards(http.get("/artworks?page=3").text) == ["art05", "art08"]
    assert _cards(http.get("/artworks?page=999").text) == ["art05", "art08"]  # the last page
    assert http.get("/artworks?page=0").status_code == 422
    assert http.get("/artworks?page=-1").status_code == 422
    found = http.get("/artworks", params={"q": "painter 1"})
    assert _cards(found.text) == ["art01", "art04", "art07"]
    assert _cards(http.get("/artworks", params={"q": "NUMBER 7"}).text) == ["art07"]
    assert _cards(http.get("/artworks", params={"q": "art02"}).text) == ["art02"]
    for query in ("%", "_", "'", '"', "*", "art0%", ".*"):
        page = http.get("/artworks", params={"q": query})
        assert page.status_code == 200 and _cards(page.text) == [], query
    html = http.get("/artworks", params={"q": '<script>alert("x")</script>'})
    assert html.status_code == 200 and "<script>alert" not in html.text
    assert "&lt;script&gt;" in html.text  # shown back, escaped
    assert http.get("/artworks", params={"q": "x" * 200}).status_code == 200
    assert http.get("/artworks", params={"q": "x" * 201}).status_code == 422
    pager = http.get("/artworks", params={"q": "work"}).text
    assert 'href="/artworks?q=work&amp;page=2"' in pager  # the query is kept across pages


def test_artwork_page_marks_a_copy_and_chooses_the_model(client, out):
    from drawmatch.data.annotations import AnnotationStore, db_path

    http, token = client
    tags = serve_data.model_tags(out)
    page = http.get("/artworks/art02", params={"model": tags[1]})
    assert page.status_code == 200
    assert f'<option value="{tags[1]}" selected>' in page.text  # the model selector
    assert "/drawings/" in page.text and f"· {tags[1]}" in page.text
    store = AnnotationStore(db_path(out))
    before = store.count()
    drawing = serve_data.drawing_name(4)
    form = {"csrf_token": token, "drawing_id": drawing, "model": tags[1], "note": "same pose"}
    done = http.post("/artworks/art02/copies", data=form, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/artworks/art02?model={tags[1]}"
    [decision] = store.current(drawing_id=drawing, artwork_id="art02")
    assert (decision.decision, decision.annotator, decision.model, decision.note) == (
        "match",
        "Ada Lovelace",
        tags[1],
        "same pose",
    )
    shown = http.get("/artworks/art02").text
    assert f'href="/drawings/{drawing}"' in shown.split("Drawings that most resemble it")[0]
    grid = http.get("/artworks", params={"q": "art02"}).text
    assert "1 copy" in grid  # the card counts it
    refused = {
        "unknown": (dict(form, drawing_id="no_such_drawing"), 404),
        "verso": (dict(form, drawing_id=serve_data.VERSO), 400),
        "artwork as drawing": (dict(form, drawing_id="art03"), 404),
        "too long": (dict(form, drawing_id="d" * 300), 422),
        "no token": ({k: v for k, v in form.items() if k != "csrf_token"}, 403),
    }
    for name, (data, status) in refused.items():
        response = http.post("/artworks/art02/copies", data=data, follow_redirects=False)
        assert response.status_code == status, name
    verso = http.post("/artworks/art02/copies", data=dict(form, drawing_id=serve_data.VERSO))
    assert "names a verso" in verso.text
    foreign = http.post(
        "/artworks/art02/copies", data=form, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert http.post("/artworks/nope/copies", data=form).status_code == 404
    assert store.count() == before + 1  # nothing else was recorded


# -- search by image, kept across changes ----------------------------------------------------


@pytest.fixture(scope="module")
def loaded(out):
    """A client of a workbench whose models have all loaded."""
    http, token = signed_in(create_app(ServeConfig(out=str(out), k=5)))
    wait_ready(http)
    return http, token


def test_an_upload_is_shown_and_searched_again_under_another_model(loaded, out):
    import hashlib
    import io

    from PIL import Image

    http, token = loaded
    tags = serve_data.model_tags(out)
    data = (out.parent / "a" / "art03.png").read_bytes()
    key = hashlib.sha256(data).hexdigest()
    first = http.post(
        "/upload",
        files={"image": ("photo.png", data, "image/png")},
        data={"csrf_token": token, "model": tags[0]},
    )
    assert first.status_code == 200, first.text
    assert f'<img class="large" src="/upload/{key}/image"' in first.text
    assert f'<input type="hidden" name="upload" value="{key}">' in first.text
    preview = http.get(f"/upload/{key}/image")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(preview.content))
    original = Image.open(io.BytesIO(data))
    assert shown.format == "JPEG" and shown.size == original.size  # 70 x 90: under view_size
    assert not shown.info.get("exif")  # re-encoded pixels, no metadata of the file
    for tag in tags:  # the kept image, under each model: the same ranking as a fresh upload
        again = http.post(
            "/upload", data={"csrf_token": token, "upload": key, "model": tag, "mode": "global"}
        )
        fresh = http.post(
            "/upload",
            files={"image": ("photo.png", data, "image/png")},
            data={"csrf_token": token, "model": tag},
        )
        assert again.status_code == 200, again.text
        assert f"· {tag} ·" in again.text and f"/upload/{key}/image" in again.text
        assert _ids_on(again.text, "/artworks/") == _ids_on(fresh.text, "/artworks/")
        assert _ids_on(again.text, "/artworks/")[0] == "art03"
    gone = http.post("/upload", data={"csrf_token": token, "upload": "0" * 64})
    assert gone.status_code == 410 and "upload it again" in gone.text
    assert http.post("/upload", data={"csrf_token": token, "upload": "../x"}).status_code == 410
    assert http.post("/upload", data={"csrf_token": token, "upload": "a" * 65}).status_code == 422
    assert http.post("/upload", data={"csrf_token": token}).status_code == 400
    assert http.post("/upload", data={"upload": key}).status_code == 403  # no CSRF token
    assert http.get("/upload/" + "0" * 64 + "/image").status_code == 404
    assert http.get("/upload/..%2F..%2Fcatalogue.parquet/image").status_code == 404
    anonymous = TestClient(http.app, base_url=BASE)
    assert anonymous.get(f"/upload/{key}/image", follow_redirects=False).status_code == 303


def test_uploads_kept_within_their_memory_budget():
    from drawmatch.serve.uploads import Upload, UploadCache, upload_key

    def made(text: str, size: int) -> Upload:
        data = text.encode() * size
        return Upload(upload_key(data), data, f"{text}.png", b"")

    a, b, c = made("a", 40), made("b", 40), made("c", 40)
    cache = UploadCache(budget=100)
    assert cache.put(a) and cache.put(b)
    assert cache.get(a.key) == a  # a is now the most recently used
    assert cache.put(c)  # 120 bytes > 100: b, the least recently used, goes
    assert cache.get(b.key) is None and cache.get(a.key) == a and cache.get(c.key) == c
    assert cache.used == 80
    assert not cache.put(made("d", 101)) and cache.used == 80  # alone over the budget
    assert cache.get("A" * 64) is None and cache.get(a.key + "\n") is None


def test_an_upload_not_kept_is_still_searched(out):
    http, token = signed_in(create_app(ServeConfig(out=str(out), kept_upload_bytes=0)))
    wait_ready(http)
    data = (out.parent / "a" / "art03.png").read_bytes()
    found = http.post(
        "/upload", files={"image": ("p.png", data, "image/png")}, data={"csrf_token": token}
    )
    assert found.status_code == 200 and _ids_on(found.text, "/artworks/")[0] == "art03"
    assert "/upload/" not in found.text.split("Your image")[1].split("Closest artworks")[0]
    assert "too large to keep" in found.text


# -- two models side by side -----------------------------------------------------------------


def _brute_force_ranks(out: Path, tag: str, drawing: str) -> list[str]:
    """Every artwork of the gallery by cosine distance to the drawing (numpy, not FAISS; the
    drawing's vector in float16, as the workbench keeps it)."""
    import numpy as np

    from drawmatch.data.embeddings import read_embeddings

    ids, emb = read_embeddings(out, tag)
    row = {k: i for i, k in enumerate(ids)}
    arts = sorted(k for k in ids if k.startswith("art"))
    query = emb[row[drawing]].astype(np.float16).astype(np.float32)
    dist = 1.0 - emb[[row[a] for a in arts]] @ query
    return [arts[i] for i in np.argsort(dist, kind="stable")]


def test_the_two_model_view_gives_each_artworks_rank_under_the_other_model(client, out):
    http, _ = client
    first, second = serve_data.model_tags(out)
    seen = set()
    for i in range(12):
        drawing = serve_data.drawing_name(i)
        page = http.get(f"/drawings/{drawing}", params={"model": first, "compare": second, "k": 3})
        assert page.status_code == 200
        columns = page.text.split('<div class="column">')[1:]
        assert len(columns) == 2
        for tag, other, column in ((first, second, columns[0]), (second, first, columns[1])):
            mine = _brute_force_ranks(out, tag, drawing)[:3]
            theirs = _brute_force_ranks(out, other, drawing)[:3]
            pairs = re.findall(
                r'id="pair-[^"]*-(art\d\d)">.*?<span class="rank">#(\d) here</span>'
                r'<span class="there" title="its rank under ([^"]+)">([^<]+)</span>',
                column,
                flags=re.S,
            )
            assert [(a, int(r)) for a, r, _t, _x in pairs] == [
                (a, n + 1) for n, a in enumerate(mine)
            ]
            for artwork, _rank, named, there in pairs:
                assert named == other
                want = (
                    f"#{theirs.index(artwork) + 1} there"
                    if artwork in theirs
                    else "not in top 3 there"
                )
                assert there == want
                seen.add(there.startswith("#"))
    assert seen == {True, False}  # both cases were met
    single = http.get(f"/drawings/{serve_data.drawing_name(0)}", params={"model": first})
    assert 'class="there"' not in single.text and " here</span>" not in single.text


# -- frames on region results ----------------------------------------------------------------


def _ranking(rows: list[tuple]) -> Any:
    import pandas as pd

    columns = ["artwork_id", "score", "global_score", "inliers", "box"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["rank"] = range(1, len(frame) + 1)
    frame["distance"] = 1.0 - frame["score"].clip(upper=1.0)
    for i, name in enumerate(("box_x0", "box_y0", "box_x1", "box_y1")):
        frame[name] = [b[i] for b in frame["box"]]
    return frame


NAN4 = (float("nan"),) * 4


def test_a_frame_only_where_the_region_or_the_keypoints_raised_the_score():
    from drawmatch.serve.data import region_hits
    from drawmatch.serve.views import box_view

    table = _ranking(
        [  # artwork, score, whole-image score, inliers, box
            ("keypoints", 100 + 15 + 0.6, 0.5, 15, (0.1, 0.1, 0.5, 0.5)),  # verified: bonus
            ("whole", 0.8, 0.8, 0, (0.2, 0.2, 0.6, 0.6)),  # fused = global: no region used
            ("region", 0.75, 0.7, 2, (0.0, 0.5, 0.5, 1.0)),  # the region raised it; 2 keypoints
            ("unchecked", 0.6, 0.6, -1, NAN4),
        ]
    )
    views = {h.artwork: box_view(h) for h in region_hits(table, "verified", min_inliers=5)}
    assert views["keypoints"] == {
        "box": {"left": 10.0, "top": 10.0, "width": 40.0, "height": 40.0},
        "inliers": 15,
        "verified": True,
    }
    assert views["whole"] == {"box": None, "inliers": None, "verified": False}  # never "0"
    assert views["region"] == {
        "box": {"left": 0.0, "top": 50.0, "width": 50.0, "height": 50.0},
        "inliers": 2,
        "verified": False,
    }
    assert views["unchecked"] == {"box": None, "inliers": None, "verified": False}
    # fused: the same rule without keypoints; region: the best region's score is the score
    fused = {h.artwork: h.box for h in region_hits(table, "fused", min_inliers=5)}
    assert fused == {
        "keypoints": (0.1, 0.1, 0.5, 0.5),  # 100.6 > 0.5: the region term raised it
        "whole": None,
        "region": (0.0, 0.5, 0.5, 1.0),
        "unchecked": None,
    }
    region = {h.artwork: h.box for h in region_hits(table, "region", min_inliers=5)}
    assert region["whole"] == (0.2, 0.2, 0.6, 0.6) and region["unchecked"] is None


# -- the demo's made-up metadata -------------------------------------------------------------


def test_the_demo_overrides_cover_every_demo_drawing_and_say_they_are_made_up():
    import pandas as pd

    from drawmatch.data.imaj import read_overrides
    from drawmatch.workflows.demo import OVERRIDES, demo_data_dir

    overrides = read_overrides(demo_data_dir() / OVERRIDES)  # valid as ingest reads it
    drawings = pd.read_csv(demo_data_dir() / "drawings.csv")
    assert sorted(overrides) == sorted(drawings["id"])
    for values in overrides.values():
        assert set(values) == {"year", "age_group", "country_iso3", "source"}
        assert 1994 <= int(values["year"]) <= 2020  # the IMAJ collection's years
        assert "made up" in str(values["source"])
    assert len({v["age_group"] for v in overrides.values()}) >= 3
    assert len({v["country_iso3"] for v in overrides.values()}) >= 5


def test_the_demo_ingest_fills_the_year_age_and_country_filters(ray_local, tmp_path):
    from drawmatch.data import catalogue as cat
    from drawmatch.data.imaj import read_overrides
    from drawmatch.runtime.ray_setup import RayConfig
    from drawmatch.serve.grid import DrawingGrid
    from drawmatch.workflows.demo import OVERRIDES, demo_data_dir, ingest_data

    ingest_data(demo_data_dir(), str(tmp_path), RayConfig())
    catalogue = cat.read_catalogue(tmp_path)
    drawings = catalogue[catalogue["collection"] == "drawing"].set_index("id")
    overrides = read_overrides(demo_data_dir() / OVERRIDES)
    assert len(drawings) == len(overrides) == 30
    for key, values in overrides.items():
        row = drawings.loc[key]
        assert (int(row["year"]), row["age_group"], row["country_iso3"]) == (
            values["year"],
            values["age_group"],
            values["country_iso3"],
        )
        assert "made up" in row["source"]
    grid = DrawingGrid(drawings.reset_index())
    for name in ("year", "age_group", "country"):  # every filter offers values, counting 30
        assert grid.values[name] and sum(n for _v, n in grid.values[name]) == 30
