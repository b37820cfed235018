"""The workbench's ways in: every model loaded at start (no upload answers "still loading" once
the server is ready), the artworks grid and an artwork's page (search, pages, mark as a copy,
model selector), search by an uploaded image kept across model and mode changes, the rank of
each artwork under the other model in the two-model view, and the region frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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
