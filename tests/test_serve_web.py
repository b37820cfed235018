"""The workbench against a hostile web: DNS rebinding (foreign `Host` and `Origin`), what the
health check tells strangers, and uploads named as versos."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from drawmatch.core.config import ConfigError, load_config  # noqa: E402
from drawmatch.retrieval.queries import check_query  # noqa: E402
from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from drawmatch.serve.hosts import allowed_hosts  # noqa: E402
from drawmatch.serve.security import same_origin  # noqa: E402
from tests import serve_data  # noqa: E402
from tests.serve_data import VERSO  # noqa: E402
from tests.test_serve import BASE, signed_in  # noqa: E402

EVIL = "http://evil.example:8000"
# one of each kind of route: page, image, export, static file, shared stylesheet, sign-in form
GETS = ("/drawings", "/thumb/art01", "/export.csv", "/static/htmx.min.js", "/shared.css", "/login")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return serve_data.build(tmp_path_factory.mktemp("serve-web"))


@pytest.fixture(scope="module")
def app(out):
    return create_app(ServeConfig(out=str(out), load_model=False))


def sign_in_at(app, base_url: str) -> TestClient:
    """A client at `base_url` that tried to sign in (form, then POST with its own Origin)."""
    http = TestClient(app, base_url=base_url)
    page = http.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    http.post(
        "/login",
        data={"nonce": nonce.group(1) if nonce else "x", "name": "Mallory"},
        headers={"Origin": base_url},
        follow_redirects=False,
    )
    return http


# -- DNS rebinding ---------------------------------------------------------------------------


def test_a_rebound_name_cannot_sign_in_or_read_anything(app):
    """A page of evil.example whose name now resolves to 127.0.0.1: same Host, same Origin."""
    http = sign_in_at(app, EVIL)
    for path in GETS:
        response = http.get(path, follow_redirects=False)
        assert response.status_code == 400, path
        assert "unknown host" in response.text and "Mallory" not in response.text
    refused = http.post("/login", data={"name": "Mallory"}, headers={"Origin": EVIL})
    assert refused.status_code == 400
    assert http.get("/healthz").status_code == 400


def test_a_session_cookie_does_not_open_a_foreign_host(app):
    http, token = signed_in(app)
    for path in GETS:
        response = http.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 400, path
    annotate = http.post(
        "/annotate",
        data={"drawing_id": serve_data.drawing_name(0), "artwork_id": "art01", "decision": "skip"},
        headers={"Host": "evil.example", "Origin": "http://evil.example", "X-CSRF-Token": token},
    )
    assert annotate.status_code == 400


@pytest.mark.parametrize(
    "base_url",
    [BASE, "http://127.0.0.1", "http://localhost:8000", "http://localhost", "http://[::1]:8000"],
)
def test_the_loopback_names_with_or_without_the_port_work(app, base_url):
    http = sign_in_at(app, base_url)
    assert http.get("/drawings").status_code == 200
    assert http.get("/export.csv").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:8001", "localhost.", "127.0.0.1.evil.example", ""])
def test_near_misses_of_the_loopback_names_are_refused(app, host):
    assert TestClient(app).get("/login", headers={"Host": host}).status_code == 400


def test_origin_is_compared_with_the_configured_hosts_not_the_request_host(app):
    http, token = signed_in(app)
    data = {"drawing_id": serve_data.drawing_name(1), "artwork_id": "art01", "decision": "skip"}
    for origin, status in (("http://localhost:8000", 200), ("http://evil.example:8000", 403)):
        headers = {"Origin": origin, "X-CSRF-Token": token, "HX-Request": "true"}
        assert http.post("/annotate", data=data, headers=headers).status_code == status, origin


def test_allowed_hosts_admit_a_shared_deployments_name(out):
    app = create_app(
        ServeConfig(out=str(out), load_model=False, allowed_hosts=("workbench.example.org",))
    )
    http = sign_in_at(app, "https://workbench.example.org")
    assert http.get("/drawings").status_code == 200
    assert http.get("/export.csv").status_code == 200
    assert sign_in_at(app, "https://other.example.org").get("/drawings").status_code == 400


def test_allowed_hosts_are_checked_and_needed_on_every_address(out, tmp_path):
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("annotator,token\nGrace Hopper,0123456789abcdef0123\n")
    shared = [f"out={out}", "host=0.0.0.0", f"tokens_csv={tokens}", "load_model=false"]
    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_config(ServeConfig, None, shared)
    with pytest.raises(ConfigError, match="allowed_hosts"):
        load_config(ServeConfig, None, [*shared, "allowed_hosts=[evil@example.org]"])
    config = load_config(ServeConfig, None, [*shared, "allowed_hosts=[wb.example.org:443]"])
    assert config.hosts().admits("wb.example.org:443")
    assert not config.hosts().admits("wb.example.org:80")


HOSTS = allowed_hosts("127.0.0.1", 8000, ["wb.example.org"])
LOCAL = ("localhost", "127.0.0.1", "[::1]")
EXACT = {*LOCAL, *(f"{name}:8000" for name in LOCAL)}
GOOD = [*EXACT, "wb.example.org", "wb.example.org:8443"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GOOD), st.text(max_size=12), st.text(max_size=12))
def test_a_host_is_admitted_only_as_configured(good, before, after):
    """Anything added around an admitted host (user info, a suffix domain, a path, another
    port, odd characters) is refused unless the result is itself a configured form, in `Host`
    and in `Origin` alike."""
    value = before + good + after
    assert HOSTS.admits(good) and same_origin({"origin": f"http://{good}"}, HOSTS)
    shared = re.fullmatch(r"wb\.example\.org(?::(\d{1,5}))?", value.lower())
    port_ok = shared is not None and (shared.group(1) is None or int(shared.group(1)) <= 65535)
    assert HOSTS.admits(value) == (value.lower() in EXACT or port_ok), value
    assert HOSTS.admits(value) or not same_origin({"origin": f"http://{value}"}, HOSTS)


# -- the health check ------------------------------------------------------------------------


def test_health_tells_strangers_only_that_it_is_alive(app):
    assert TestClient(app, base_url=BASE).get("/healthz").json() == {"status": "ok"}
    http, _ = signed_in(app)
    counts = http.get("/healthz").json()
    assert counts["drawings"] == 13 and counts["artworks"] > 0 and counts["models"]


# -- uploads named as versos -----------------------------------------------------------------


@pytest.mark.parametrize("name", [f"{VERSO}.png", "scan_V_.png", f"photos/{VERSO}.PNG"])
def test_an_upload_named_as_a_verso_is_refused_like_the_cli(app, out, name):
    http, token = signed_in(app)
    data = (out.parent / "d" / f"{VERSO}.png").read_bytes()
    response = http.post(
        "/upload", files={"image": (name, data, "image/png")}, data={"csrf_token": token}
    )
    with pytest.raises(ValueError) as cli:
        check_query(name)
    assert response.status_code == 400
    assert str(cli.value) in html.unescape(response.text)
    assert "/artworks/" not in response.text  # nothing was searched


def test_a_trailing_newline_is_not_a_host_or_a_name():
    """`$` in a pattern also matches before a final newline: hosts and annotator names are
    matched to their very end."""
    from drawmatch.serve import security

    assert HOSTS.admits("wb.example.org") and not HOSTS.admits("wb.example.org\n")
    assert not HOSTS.admits("localhost:8000\n")
    assert security.valid_name("Ada") and not security.valid_name("Ada\n")
