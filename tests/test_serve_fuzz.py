"""The workbench's routes fuzzed from its OpenAPI schema (schemathesis), in-process and signed in:
whatever a client sends, the answer is a page, a redirect or a 4xx refusal, never a server error
and never a traceback. The schema is built here from the app; the app itself serves none."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from drawmatch.serve import security  # noqa: E402
from drawmatch.serve.app import create_app  # noqa: E402
from drawmatch.serve.config import ServeConfig  # noqa: E402
from tests import serve_data  # noqa: E402

BASE = "http://127.0.0.1:8000"
EXAMPLES = 12  # per operation and generation mode
LEAKS = ("Traceback", 'File "', "Exception", "sqlite3.", "/site-packages/")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    out: Path = serve_data.build(tmp_path_factory.mktemp("serve-fuzz"))
    app = create_app(ServeConfig(out=str(out), k=5, page_size=5))
    health = TestClient(app, base_url=BASE)
    value, _ = app.state.site.signer.session_cookie("Fuzz Tester")
    health.cookies.set(security.SESSION_COOKIE, value)
    deadline = time.time() + 120  # uploads are searched once the query model has loaded
    while "ready" not in health.get("/healthz").json()["models"].values():
        assert time.time() < deadline, "query model did not load"
        time.sleep(0.2)
    return app


def check(response, case) -> None:
    """What a user may see: no server error, no traceback or internals in a page."""
    where = f"{case.method} {case.formatted_path}"
    assert 200 <= response.status_code < 500, f"{where}: {response.status_code}"
    for leak in LEAKS:
        assert leak not in response.text, f"{where}: {leak!r} in the answer"


def test_fuzzed_requests_get_a_page_or_a_4xx(app):
    schema = schemathesis.openapi.from_dict(app.openapi())
    cookie, session = app.state.site.signer.session_cookie("Fuzz Tester")
    cookies = {security.SESSION_COOKIE: cookie}
    headers = {"X-CSRF-Token": session.csrf, "Origin": BASE}
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        takes_input = bool(list(operation.iter_parameters()) or operation.body)
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * takes_input
        for mode in modes:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case) -> None:
                response = case.call(app=app, base_url=BASE, headers=headers, cookies=cookies)
                sent[case.operation.label] += 1
                statuses[response.status_code] += 1
                check(response, case)

            try:
                fuzz()
            except Unsatisfiable:  # every value is valid (an unconstrained id): nothing to negate
                assert mode == GenerationMode.NEGATIVE, operation.label
    print(f"fuzzed {sum(sent.values())} requests: {dict(sent)}; statuses {dict(statuses)}")
    assert set(sent) == {op.label for op in operations}  # every route was reached
    assert any(400 <= s < 500 for s in statuses)  # bad input was sent, and refused
