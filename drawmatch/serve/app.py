"""The workbench web app (FastAPI, server-rendered Jinja2 pages, htmx for in-page updates).

Every request must name the workbench in `Host` (`hosts.py`, against DNS rebinding). Every image
is served by catalogue id (never by path), only for showable rows (status ok, never a
verso), from under the catalogue's roots; every id and parameter is checked; state-changing
requests need a signed-in annotator and the session's CSRF token.

`create_app` builds the shared `Site` (`site.py`), the guards (`middleware.py`) and the error
pages, and includes one router per concern (`routes/`).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from drawmatch.data import catalogue as cat
from drawmatch.data.annotations import AnnotationStore, db_path, read_known_pairs
from drawmatch.reporting import shared_css
from drawmatch.serve import security
from drawmatch.serve.config import ServeConfig
from drawmatch.serve.data import Workbench
from drawmatch.serve.middleware import BodyLimit, HostCheck, security_headers
from drawmatch.serve.routes import auth, browse, images, review, upload
from drawmatch.serve.site import LoginRequired, Site, make_templates, package_dir, site_of
from drawmatch.serve.uploads import UploadCache

log = logging.getLogger("drawmatch.serve")


def create_app(config: ServeConfig, workbench: Workbench | None = None) -> FastAPI:
    """The app over `config.out` (loads the workbench's in-memory indexes unless given one)."""
    wb = workbench or Workbench(config.out, config.load_model, config.model_tag)
    known = (
        read_known_pairs(config.pairs_csv, cat.read_catalogue(wb.out)) if config.pairs_csv else []
    )
    store = AnnotationStore(db_path(wb.out))
    for name, pairs in known:
        added, seen, decided = store.import_pairs(name, pairs)
        log.info(
            "known pairs %s: %d imported, %d imported before, %d already decided in the workbench",
            name,
            added,
            seen,
            decided,
        )
    site = Site(
        config=config,
        workbench=wb,
        store=store,
        signer=security.Signer(security.load_secret(wb.out)),
        tokens=security.read_tokens(config.tokens_csv) if config.tokens_csv else None,
        templates=make_templates(),
        uploads=UploadCache(config.kept_upload_bytes),
    )
    app = FastAPI(title="drawmatch workbench", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.site = site
    app.state.workbench = wb
    app.state.store = site.store
    app.mount("/static", StaticFiles(directory=str(package_dir("static"))), name="static")
    css = shared_css()
    app.get("/shared.css", include_in_schema=False)(lambda: Response(css, media_type="text/css"))
    app.middleware("http")(security_headers)
    app.add_middleware(BodyLimit, upload_limit=config.max_upload_bytes)  # type: ignore[arg-type]
    app.add_middleware(HostCheck, hosts=config.hosts())  # type: ignore[arg-type]  # outermost
    app.add_exception_handler(LoginRequired, login_required)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ValueError, bad_value)  # type: ignore[arg-type]
    for module in (auth, browse, review, upload, images):
        app.include_router(module.router)
    return app


async def login_required(request: Request, exc: LoginRequired) -> Response:
    """A page asked for without a session goes to the sign-in form (and comes back after); an
    action is refused (401)."""
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return site_of(request).error_page(request, 401, "Sign in first.")


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return site_of(request).error_page(request, exc.status_code, str(exc.detail))


async def bad_value(request: Request, exc: ValueError) -> Response:
    return site_of(request).error_page(request, 400, "bad request")
