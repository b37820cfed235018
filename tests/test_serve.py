"""The workbench (`drawmatch serve`): every endpoint, bad input, safety, annotations, export."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from drawmatch.core.config import ConfigError, load_config
from drawmatch.data.annotations import AnnotationStore, db_path  # noqa: E402
from drawmatch.data.embeddings import read_embeddings  # noqa: E402
from drawmatch.retrieval.artwork_index import ArtworkIndex  # noqa: E402
from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from tests import serve_data  # noqa: E402
from tests.conftest import free_port, start_server, wait_up  # noqa: E402
from tests.serve_data import STYLED, VERSO, drawing_name  # noqa: E402

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return serve_data.build(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def app(out):
    return create_app(ServeConfig(out=str(out), k=5, page_size=5))


def signed_in(app, name: str = "Ada Lovelace") -> tuple[TestClient, str]:
    """A client with a session; returns it and its CSRF token."""
    client = TestClient(app, base_url=BASE)
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login", data={"nonce": nonce, "name": name, "next": "/drawings"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    grid = client.get("/drawings")
    token = re.search(r'name="csrf_token" value="([^"]+)"', grid.text).group(1)
    return client, token


@pytest.fixture(scope="module")
def client(app):
    return signed_in(app)


def _plain(page: str) -> str:
    return re.sub(r"<[^>]+>", "", page)


def _ids_on(page: str, prefix: str = "/drawings/") -> list[str]:
    return re.findall(rf'href="{re.escape(prefix)}([^"?]+)[?"]', page)


# -- signing in ------------------------------------------------------------------------------


def test_pages_need_a_signed_in_annotator(app):
    anonymous = TestClient(app, base_url=BASE)
    response = anonymous.get("/drawings?country=FRA", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=%2Fdrawings%3Fcountry%3DFRA")
    assert anonymous.get("/thumb/art01", follow_redirects=False).status_code == 303
    assert anonymous.get("/export.csv", follow_redirects=False).status_code == 303
    refused = anonymous.post(
        "/annotate", data={"drawing_id": "x", "artwork_id": "y", "decision": "match"}
    )
    assert refused.status_code == 401


def test_sign_in_checks_the_name_the_form_and_the_origin(app):
    anonymous = TestClient(app, base_url=BASE)
    page = anonymous.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    assert anonymous.post("/login", data={"nonce": nonce, "name": "<script>"}).status_code == 400
    assert anonymous.post("/login", data={"nonce": "forged", "name": "Eve"}).status_code == 403
    cross = anonymous.post(
        "/login", data={"nonce": nonce, "name": "Eve"}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    # an open redirect after sign-in goes home instead
    ok = anonymous.post(
        "/login",
        data={"nonce": nonce, "name": "Eve", "next": "//evil.example"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/drawings"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_a_shared_deployment_needs_tokens(out, tmp_path):
    with pytest.raises(ConfigError, match="tokens_csv"):
        load_config(ServeConfig, None, [f"out={out}", "host=0.0.0.0"])
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("annotator,token\nGrace Hopper,0123456789abcdef0123\n")
    config = load_config(
        ServeConfig,
        None,
        [
            f"out={out}",
            "host=0.0.0.0",
            f"tokens_csv={tokens}",
            "allowed_hosts=[workbench.example.org]",
            "load_model=false",
        ],
    )
    shared = TestClient(create_app(config), base_url=BASE)
    page = shared.get("/login")
    assert 'name="token"' in page.text and 'name="name"' not in page.text
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    wrong = shared.post("/login", data={"nonce": nonce, "token": "0123456789abcdef0124"})
    assert wrong.status_code == 400
    right = shared.post(
        "/login", data={"nonce": nonce, "token": "0123456789abcdef0123", "name": "Mallory"}
    )
    assert right.status_code == 200 and "Grace Hopper" in right.text and "Mallory" not in right.text


# -- browsing --------------------------------------------------------------------------------


def test_grid_filters_sorts_and_pages(client):
    http, _ = client
    page = http.get("/drawings?collection=all&page_size=99")
    assert "13 drawings" in _plain(page.text)  # 12 originals + 1 style copy, never the verso
    assert VERSO not in page.text
    french = http.get("/drawings?country=FRA&sort=year")
    ids = _ids_on(french.text)
    assert ids and all("_FRA_" in i for i in ids)
    assert "4 drawings" in _plain(french.text)
    years = [int(i[:4]) for i in ids]
    assert years == sorted(years)
    styled = http.get("/drawings?collection=styled")
    assert _ids_on(styled.text) == [STYLED]
    second = http.get("/drawings?page=2")
    assert "page 2 of 3" in second.text and len(_ids_on(second.text)) == 5
    assert "No drawing matches" in http.get("/drawings?country=XXX").text
    assert http.get("/drawings?q=0003").text.count('class="tile') == 1
    assert http.get("/drawings?sort=evil").status_code == 422
    assert http.get("/drawings?page=0").status_code == 422
    assert http.get("/drawings?state=bogus").status_code == 422


def test_drawing_page_ranks_artworks_like_the_index(client, out):
    http, _ = client
    tag = serve_data.model_tags(out)[0]
    drawing = drawing_name(2)
    page = http.get(f"/drawings/{drawing}?model={tag}&k=4")
    assert page.status_code == 200
    _ids, emb = read_embeddings(out, tag, ids=[drawing])
    expected, dist = ArtworkIndex(out, tag).search(emb, 4)
    shown = _ids_on(page.text, "/artworks/")
    assert shown == expected[0]
    assert "#1" in page.text and "#4" in page.text and "#0" not in page.text  # 1-based ranks
    assert f"distance {dist[0][0]:.3f}" in page.text
    assert "2003" in page.text and "FRA" not in page.text.split("<main>")[1].split("facts")[0]


def test_two_models_side_by_side(client, out):
    http, _ = client
    first, second = serve_data.model_tags(out)
    page = http.get(f"/drawings/{drawing_name(3)}?model={first}&compare={second}&k=3")
    assert page.status_code == 200
    assert page.text.count('class="column"') == 2
    assert f"· {first}" in page.text and f"· {second}" in page.text


def test_unknown_and_private_ids_are_not_found(client):
    http, _ = client
    for path in (
        f"/drawings/{VERSO}",
        "/drawings/nope",
        "/drawings/art01",  # an artwork is not a drawing
        f"/artworks/{drawing_name(1)}",
        f"/drawings/{drawing_name(1)}?model=other-model",
        f"/thumb/{VERSO}",
        f"/view/{VERSO}",
        "/thumb/" + "x" * 300,
        f"/review?model={VERSO}",
    ):
        assert http.get(path).status_code == 404, path
    assert http.get(f"/drawings/{drawing_name(1)}?k=0").status_code == 422
    assert http.get(f"/drawings/{drawing_name(1)}?k=1000").status_code == 422


def test_versos_never_appear_in_any_page(client, out):
    http, _ = client
    tag = serve_data.model_tags(out)[0]
    pages = [
        "/drawings?collection=all",
        f"/drawings/{drawing_name(0)}?model={tag}&k=20",
        f"/artworks/art01?model={tag}",
        f"/review?model={tag}",
    ]
    for path in pages:
        assert VERSO not in http.get(path).text, path


def test_similar_drawings_and_style_copies_on_a_drawing_page(client, out):
    http, _ = client
    page = http.get(f"/drawings/{drawing_name(0)}")
    assert "Similar drawings" in page.text
    assert len(re.findall(r'class="strip"', page.text)) == 1
    assert STYLED in page.text  # its oil-painting copy


def test_artwork_page_lists_close_drawings(client):
    http, _ = client
    page = http.get("/artworks/art01")
    assert page.status_code == 200 and "Work number 1" in page.text and "Painter 1" in page.text
    assert len(_ids_on(page.text)) == 4


# -- images and paths ------------------------------------------------------------------------


def test_thumbnails_are_made_once_and_cached(client, out):
    http, _ = client
    response = http.get(f"/thumb/{drawing_name(4)}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(response.content))
    assert max(img.size) <= 256
    assert list((out / "thumbnails" / "256").rglob("*.jpg"))
    view = http.get("/view/art02")
    assert view.status_code == 200 and Image.open(io.BytesIO(view.content)).format == "JPEG"


@pytest.mark.parametrize(
    "path",
    [
        "/thumb/..%2F..%2F..%2Fetc%2Fpasswd",
        "/thumb/%2e%2e%2fcatalogue.parquet",
        "/thumb/../../etc/passwd",
        "/view/..%5c..%5cetc%5cpasswd",
        "/view/%2Fetc%2Fpasswd",
        "/thumb/catalogue.parquet",
        "/view/.serve_secret",
        "/static/../catalogue.parquet",
        "/static/%2e%2e/app.py",
        "/static/..%2f..%2fcatalogue.parquet",
        "/thumb/%00",
        "/drawings/..%2F..%2Fetc%2Fpasswd",
        "/thumb/art01%00.png",
    ],
)
def test_path_traversal_is_not_found(client, path):
    http, _ = client
    response = http.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert b"root:" not in response.content


def test_images_outside_the_roots_are_refused_even_if_catalogued(tmp_path):
    """A catalogue row whose path escapes its root (tampered or a symlink) is never served."""
    import pandas as pd

    from drawmatch.data import catalogue as cat

    out = serve_data.build(tmp_path, n_drawings=3, n_artworks=3)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (20, 20), "red").save(secret)
    (tmp_path / "d" / "link.png").symlink_to(secret)
    table = cat.read_catalogue(out)
    extra = table[table["id"] == drawing_name(1)].copy()
    escape = extra.assign(id="escape", path="../secret.png")
    link = extra.assign(id="link", path="link.png")
    cat.write_catalogue(pd.concat([table, escape, link]), out)
    http, _ = signed_in(create_app(ServeConfig(out=str(out), load_model=False)))
    assert http.get(f"/thumb/{drawing_name(1)}").status_code == 200
    assert http.get("/thumb/escape").status_code == 404
    assert http.get("/view/link").status_code == 404


# -- annotating ------------------------------------------------------------------------------


def test_annotations_need_the_csrf_token_and_this_site(client):
    http, token = client
    data = {"drawing_id": drawing_name(5), "artwork_id": "art03", "decision": "match"}
    assert http.post("/annotate", data=data).status_code == 403
    assert http.post("/annotate", data=data, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    cross = http.post(
        "/annotate", data=data, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    site = http.post(
        "/annotate", data=data, headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}
    )
    assert site.status_code == 403
    ok = http.post(
        "/annotate",
        data=data,
        headers={"X-CSRF-Token": token, "Origin": BASE},
        follow_redirects=False,
    )
    assert ok.status_code == 303


def test_annotate_records_history_and_shows_the_latest(client, out):
    http, token = client
    tag = serve_data.model_tags(out)[0]
    drawing = drawing_name(6)
    store = AnnotationStore(db_path(out))
    before = len(store.history(drawing_id=drawing))
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    base = {
        "drawing_id": drawing,
        "artwork_id": "art04",
        "model": tag,
        "rank": "2",
        "distance": "0.125",
    }
    first = http.post(
        "/annotate", data={**base, "decision": "match", "note": "same bridge"}, headers=headers
    )
    assert first.status_code == 200 and "Match" in first.text and "Ada Lovelace" in first.text
    assert "same bridge" in first.text and first.text.lstrip().startswith("<li")
    second = http.post("/annotate", data={**base, "decision": "non-match"}, headers=headers)
    assert "Not a match" in second.text and "2 decisions" in second.text
    history = store.history(drawing_id=drawing)[before:]
    assert [d.decision for d in history] == ["match", "non-match"]
    assert history[0].annotator == "Ada Lovelace" and history[0].model == tag
    assert history[0].rank == 2 and history[0].distance == pytest.approx(0.125)
    assert store.current_by_pair(drawing)["art04"].decision == "non-match"
    page = http.get(f"/drawings/{drawing}?model={tag}")
    assert "Not a match" in page.text


@pytest.mark.parametrize(
    "change, status",
    [
        ({"drawing_id": VERSO}, 404),
        ({"drawing_id": "art01"}, 404),
        ({"artwork_id": drawing_name(1)}, 404),
        ({"artwork_id": "../../etc/passwd"}, 404),
        ({"decision": "maybe"}, 400),
        ({"model": "nope"}, 400),
        ({"rank": "-1"}, 400),
        ({"rank": "1e9"}, 400),
        ({"distance": "nan"}, 400),
        ({"distance": "abc"}, 400),
        ({"note": "x" * 3000}, 422),
        ({"drawing_id": "d" * 300}, 422),
    ],
)
def test_annotate_refuses_bad_input(client, change, status):
    http, token = client
    data = {"drawing_id": drawing_name(7), "artwork_id": "art01", "decision": "match", **change}
    response = http.post("/annotate", data=data, headers={"X-CSRF-Token": token})
    assert response.status_code == status, (change, response.text[:200])


def test_oversized_requests_are_refused(client):
    http, token = client
    response = http.post(
        "/annotate",
        data={
            "drawing_id": drawing_name(7),
            "artwork_id": "art01",
            "decision": "match",
            "note": "x" * 200_000,
        },
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 413


def test_grid_shows_and_filters_annotation_state(client):
    http, token = client
    drawing = drawing_name(8)
    http.post(
        "/annotate",
        data={"drawing_id": drawing, "artwork_id": "art05", "decision": "match"},
        headers={"X-CSRF-Token": token},
    )
    matched = http.get("/drawings?state=match")
    assert drawing in _ids_on(matched.text)
    assert drawing not in _ids_on(http.get("/drawings?state=unannotated&page=1").text)
    assert "badge match" in http.get("/drawings?q=" + drawing).text


def test_review_queue_goes_closest_first_and_counts(client, out):
    http, token = client
    tag = serve_data.model_tags(out)[1]
    page = http.get(f"/review?model={tag}")
    assert page.status_code == 200
    store = AnnotationStore(db_path(out))
    done_before = int(re.search(r"([\d,]+) of ([\d,]+) candidates", page.text).group(1))
    card = dict(
        re.findall(r'name="(drawing_id|artwork_id|rank|distance)" value="([^"]*)"', page.text)
    )
    cands = app_candidates(out, tag, store)
    assert (card["drawing_id"], card["artwork_id"]) == cands[0]
    response = http.post(
        "/review",
        data={**card, "model": tag, "decision": "skip"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert response.status_code == 200 and 'id="review-card"' in response.text
    nxt = dict(re.findall(r'name="(drawing_id|artwork_id)" value="([^"]*)"', response.text))
    assert (nxt["drawing_id"], nxt["artwork_id"]) == cands[1]
    # a skip is no decision: the count stands, and the pair comes back at the end
    assert (
        f"{done_before} of" in response.text and "skipped, shown again at the end" in response.text
    )
    last = store.history()[-1]
    assert last.decision == "skip" and last.rank == int(card["rank"]) and last.model == tag


def app_candidates(out: Path, tag: str, store: AnnotationStore) -> list[tuple[str, str]]:
    """Undecided and unskipped candidates of `tag`, closest first, never a verso (as the queue
    must order)."""
    import pandas as pd

    from drawmatch.data.neighbours import candidates_path

    table = pd.read_parquet(candidates_path(str(out), tag))
    table = table[table["drawing_id"] != VERSO].sort_values(["distance", "rank"], kind="stable")
    decided = store.decided_pairs() | set(store.skipped_pairs())
    return [
        (d, a) for d, a in zip(table["drawing_id"], table["artwork_id"]) if (d, a) not in decided
    ]


# -- upload ----------------------------------------------------------------------------------


def _png(size=(64, 48), seed=3) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _wait_for_model(http) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        models = http.get("/healthz").json()["models"]
        if (
            all(v in ("ready", "not loaded") for v in models.values())
            and "ready" in models.values()
        ):
            return
        time.sleep(0.2)
    raise AssertionError("query model did not load")


def test_upload_search_and_its_limits(out):
    app = create_app(ServeConfig(out=str(out), max_upload_bytes=200_000, max_upload_pixels=100_000))
    http, token = signed_in(app)
    _wait_for_model(http)
    tag = serve_data.model_tags(out)[0]
    data = (out.parent / "a" / "art03.png").read_bytes()
    found = http.post(
        "/upload",
        files={"image": ("photo.png", data, "image/png")},
        data={"csrf_token": token, "model": tag},
    )
    assert found.status_code == 200, found.text
    assert _ids_on(found.text, "/artworks/")[0] == "art03"  # the artwork itself comes first
    assert "#1 Work number 3" in found.text
    files = {"image": ("photo.png", data, "image/png")}
    assert http.post("/upload", files=files).status_code == 403  # no CSRF token
    text = http.post(
        "/upload",
        files={"image": ("x.png", b"not an image at all", "image/png")},
        data={"csrf_token": token},
    )
    assert text.status_code == 415
    exe = http.post(
        "/upload",
        files={"image": ("x.exe", data, "application/octet-stream")},
        data={"csrf_token": token},
    )
    assert exe.status_code == 415
    big = http.post(
        "/upload",
        files={"image": ("big.png", _png((400, 300)), "image/png")},
        data={"csrf_token": token},
    )
    assert big.status_code == 413  # over max_upload_bytes
    bomb = http.post(
        "/upload", files={"image": ("bomb.png", _bomb(), "image/png")}, data={"csrf_token": token}
    )
    assert bomb.status_code == 400 and "decompression bomb" in bomb.text
    truncated = http.post(
        "/upload",
        files={"image": ("t.png", data[: len(data) // 2], "image/png")},
        data={"csrf_token": token},
    )
    assert truncated.status_code == 400


def _bomb() -> bytes:
    """A tiny PNG file that decodes to 1000 x 1000 pixels (over max_upload_pixels)."""
    buf = io.BytesIO()
    Image.new("RGB", (1000, 1000), "white").save(buf, "PNG", optimize=True)
    assert len(buf.getvalue()) < 20_000
    return buf.getvalue()


def test_upload_answers_while_the_model_loads(out):
    app = create_app(ServeConfig(out=str(out), load_model=False))
    http, token = signed_in(app)
    data = (out.parent / "a" / "art03.png").read_bytes()
    response = http.post(
        "/upload", files={"image": ("p.png", data, "image/png")}, data={"csrf_token": token}
    )
    assert response.status_code == 503 and "still loading" in response.text


# -- export ----------------------------------------------------------------------------------


def test_export_holds_current_matches_only_and_never_a_verso(client, out):
    http, token = client
    store = AnnotationStore(db_path(out))
    store.add(VERSO, "art01", "match", "someone")  # written past the app: must not leave
    headers = {"X-CSRF-Token": token}
    http.post(
        "/annotate",
        data={"drawing_id": drawing_name(9), "artwork_id": "art06", "decision": "match"},
        headers=headers,
    )
    http.post(
        "/annotate",
        data={"drawing_id": drawing_name(10), "artwork_id": "art07", "decision": "match"},
        headers=headers,
    )
    http.post(
        "/annotate",
        data={"drawing_id": drawing_name(10), "artwork_id": "art07", "decision": "non-match"},
        headers=headers,
    )
    response = http.get("/export.csv")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["drawing_id", "artwork_id", "keep", "parent_id"]
    pairs = {(r["drawing_id"], r["artwork_id"]) for r in rows}
    assert (drawing_name(9), "art06") in pairs
    assert (drawing_name(10), "art07") not in pairs
    assert all(VERSO not in p for p in pairs)
    assert all(r["keep"] == "true" for r in rows)


def test_export_job_writes_the_same_pairs(client, out):
    from drawmatch.jobs import export
    from drawmatch.jobs.export import ExportConfig

    http, _ = client
    result = export.run(ExportConfig(out=str(out)))
    assert Path(result.path).read_text() == http.get("/export.csv").text


def test_security_headers_and_health(client):
    http, _ = client
    page = http.get("/drawings")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert http.get("/static/htmx.min.js").status_code == 200
    _wait_for_model(http)
    assert http.get("/healthz").json()["drawings"] == 13  # signed in: the counts
    anonymous = TestClient(http.app, base_url=BASE).get("/healthz")
    assert anonymous.json() == {"status": "ok"}  # anyone else: only that it is alive


def test_pages_link_the_stylesheet_the_report_shares(client):
    from drawmatch.reporting import shared_css

    http, _ = client
    page = http.get("/drawings").text
    assert page.index('href="/shared.css"') < page.index('href="/static/style.css"')
    css = http.get("/shared.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.text == shared_css() and "--ink" in css.text


def test_store_is_append_only_with_latest_state(tmp_path):
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.add("d1", "a1", "match", "x", note="first")
    store.add("d1", "a1", "non-match", "y")
    store.add("d1", "a2", "skip", "x")
    assert [d.decision for d in store.history()] == ["match", "non-match", "skip"]
    assert {(d.artwork_id, d.decision, d.annotator) for d in store.current()} == {
        ("a1", "non-match", "y"),
        ("a2", "skip", "x"),
    }
    assert store.drawing_states() == {"d1": "annotated"}
    with pytest.raises(ValueError):
        store.add("d1", "a1", "maybe", "x")
    import sqlite3

    conn = sqlite3.connect(tmp_path / "a.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_serve_entrypoint_refuses_bad_config(out):
    from drawmatch.cli import main

    assert main(["serve", f"out={out}", "port=99999"]) == 2
    assert main(["serve", f"out={out}", "host=0.0.0.0"]) == 2
    assert os.path.exists(out)


# -- many annotators at once, against real servers -------------------------------------------


@pytest.mark.slow
def test_concurrent_annotators_lose_nothing(out):
    """8 annotators, each sending 25 decisions one after another, spread over two server
    processes on the same database: every decision stored exactly once, each annotator's in
    the order sent, no request failing (no "database is locked")."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    ports = [free_port(), free_port()]
    procs = [start_server(out, port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, proc in zip(urls, procs):
            wait_up(url, proc)
        store = AnnotationStore(db_path(out))
        before = store.count()
        drawings = [drawing_name(i) for i in range(12)]

        def annotator(n: int) -> list[int]:
            name = f"Expert {n}"
            with httpx.Client(base_url=urls[n % 2], timeout=60) as http:
                page = http.get("/login")
                nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
                http.post("/login", data={"nonce": nonce, "name": name})
                token = re.search(
                    r'name="csrf_token" value="([^"]+)"', http.get("/drawings").text
                ).group(1)
                statuses = []
                for j in range(25):
                    response = http.post(
                        "/annotate",
                        data={
                            "drawing_id": drawings[(n + j) % 12],
                            "artwork_id": f"art{j % 10:02d}",
                            "decision": ("match", "non-match", "skip")[j % 3],
                            "note": f"{name} #{j}",
                        },
                        headers={"X-CSRF-Token": token, "HX-Request": "true"},
                    )
                    statuses.append(response.status_code)
                return statuses

        with ThreadPoolExecutor(8) as pool:
            statuses = [s for result in pool.map(annotator, range(8)) for s in result]
        assert statuses == [200] * 200
        added = store.history()[before:]
        assert len(added) == 200
        for n in range(8):
            notes = [d.note for d in added if d.annotator == f"Expert {n}"]
            assert notes == [f"Expert {n} #{j}" for j in range(25)]
        assert len({d.seq for d in added}) == 200
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


# -- the loop: annotate, export, split, train ------------------------------------------------


@pytest.mark.slow
def test_exported_pairs_split_and_train(ray_local, tmp_path):
    """Pairs annotated in the workbench, exported, split into folds and used to fine-tune."""
    from drawmatch.data.pairs import read_pairs
    from drawmatch.jobs import export, train
    from drawmatch.jobs import split as split_job
    from drawmatch.jobs.export import ExportConfig
    from drawmatch.jobs.split import SplitConfig
    from tests.conftest import tiny_train_config, tiny_training_set

    out, _fold = tiny_training_set(tmp_path)
    http, token = signed_in(create_app(ServeConfig(out=str(out), load_model=False)))
    for i in range(12):
        for decision in ("non-match", "match"):  # the latest decision counts
            response = http.post(
                "/annotate",
                data={
                    "drawing_id": f"draw{i:02d}",
                    "artwork_id": f"art{i:02d}",
                    "decision": decision,
                },
                headers={"X-CSRF-Token": token},
                follow_redirects=False,
            )
            assert response.status_code == 303
    http.post(
        "/annotate",
        data={"drawing_id": "draw00", "artwork_id": "art05", "decision": "non-match"},
        headers={"X-CSRF-Token": token},
    )
    exported = export.run(ExportConfig(out=str(out)))
    assert exported.pairs == 12
    pairs = read_pairs(exported.path)
    assert set(zip(pairs["drawing_id"], pairs["artwork_id"])) == {
        (f"draw{i:02d}", f"art{i:02d}") for i in range(12)
    }
    split_job.run(SplitConfig(out=str(out), pairs_csv=exported.path, n_folds=1))
    fold_csv = out / "folds" / "fold_00.csv"
    result = train.run(
        tiny_train_config(out, fold_csv, "run_name=from-workbench", "epochs=1", "num_workers=1")
    )
    assert result.summary["history"][0]["steps"] >= 1
    assert Path(result.best_model).exists()


# -- the jobs behind the pages ---------------------------------------------------------------


@pytest.mark.slow
def test_thumbnails_job_renders_every_showable_image_once(ray_local, tmp_path):
    from drawmatch.data import catalogue as cat
    from drawmatch.data.renditions import rendition_path
    from drawmatch.jobs import thumbnails
    from drawmatch.jobs.thumbnails import ThumbnailsConfig

    out = serve_data.build(tmp_path, n_drawings=3, n_artworks=2)
    config = ThumbnailsConfig(out=str(out), sizes=(64, 128), batch_size=2)
    result = thumbnails.run(config)
    assert result.images == 6 and result.made == 12 and not result.errors  # 3 + copy + 2
    table = cat.read_catalogue(out)
    sha = dict(zip(table["id"], table["sha256"]))
    assert not Path(rendition_path(out, sha[VERSO], 64)).exists()
    small = Image.open(rendition_path(out, sha["art00"], 64))
    assert max(small.size) == 64
    assert thumbnails.run(config).made == 0  # a rerun makes only what is missing


def test_similar_drawings_are_the_closest_by_cosine(out):
    import pandas as pd

    from drawmatch.data.neighbours import similar_dir

    tag = serve_data.model_tags(out)[0]
    table = pd.read_parquet(Path(similar_dir(str(out), tag)) / "drawings.parquet")
    ids = [drawing_name(i) for i in range(12)]
    _ids, emb = read_embeddings(out, tag, ids=ids)
    dist = 1.0 - emb @ emb.T
    np.fill_diagonal(dist, np.inf)
    for i, drawing in enumerate(ids):
        rows = table[table["drawing_id"] == drawing].sort_values("rank")
        assert rows["rank"].tolist() == [1, 2, 3, 4]  # 1-based, as people read ranks
        assert rows["similar_id"].tolist() == [ids[j] for j in np.argsort(dist[i])[:4]]
        assert rows["distance"].to_numpy() == pytest.approx(np.sort(dist[i])[:4], abs=1e-5)
    assert VERSO not in set(table["drawing_id"]) | set(table["similar_id"])
