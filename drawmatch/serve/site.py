"""What every route of the workbench shares: the `Site` (the workbench's in-memory data, the
decision store, the session signer, the templates; kept on `app.state.site`), the checks of ids
and model tags, page rendering, and the dependencies for a signed-in annotator (`SignedIn`) and
for a state-changing request from this site with the session's CSRF token (`CheckedPost`)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Form, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates

from drawmatch.data.annotations import AnnotationStore
from drawmatch.reporting.html_report import breakable
from drawmatch.retrieval.region_search import SEARCH_MODES
from drawmatch.serve import security
from drawmatch.serve.config import ServeConfig
from drawmatch.serve.data import Workbench
from drawmatch.serve.uploads import UploadCache

MAX_ID = 256
MAX_NOTE = 2000

ModelQuery = Annotated[str | None, Query(max_length=MAX_ID)]


def package_dir(name: str) -> Path:
    """A folder shipped inside `drawmatch.serve` (templates, static)."""
    return Path(str(resources.files("drawmatch.serve") / name))


def make_templates() -> Jinja2Templates:
    """The page templates, with the `u` (URL part), `dist` (distance) and `breakable` (an id
    that wraps only after `_`, `-` and `/`, as in the report) filters."""
    templates = Jinja2Templates(directory=str(package_dir("templates")))
    templates.env.filters["u"] = lambda s: quote(str(s), safe="")
    templates.env.filters["dist"] = lambda d: f"{d:.3f}"
    templates.env.filters["breakable"] = breakable
    return templates


class LoginRequired(Exception):
    """A page or action asked for without a session (a GET goes to the sign-in form)."""


@dataclass
class Site:
    """The state the routes share, built once by `create_app`."""

    config: ServeConfig
    workbench: Workbench
    store: AnnotationStore
    signer: security.Signer
    tokens: dict[str, str] | None  # token -> annotator in a shared deployment, else None
    templates: Jinja2Templates
    uploads: UploadCache

    def page(
        self, request: Request, name: str, session: security.Session | None, **context: Any
    ) -> Any:
        """A rendered template, with what the page frame shows (annotator, CSRF token, models)."""
        context.update(
            request=request,
            annotator=session.annotator if session else None,
            csrf=session.csrf if session else "",
            tags=self.workbench.tags,
            default_tag=self.workbench.default_tag,
        )
        return self.templates.TemplateResponse(request, name, context)

    def error_page(self, request: Request, status: int, detail: str) -> Response:
        """The error page (JSON for htmx requests and the health check)."""
        if request.headers.get("hx-request") == "true" or request.url.path.startswith("/healthz"):
            return JSONResponse({"detail": detail}, status_code=status)
        return self.templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "detail": detail, "annotator": None, "csrf": ""},
            status_code=status,
        )

    def tag_of(self, model: str | None) -> str:
        """The model asked for, else the default one (404 if unknown or there is none)."""
        tag = model or self.workbench.default_tag
        if tag is None:
            raise HTTPException(404, "no embeddings under this output root: run `drawmatch embed`")
        if tag not in self.workbench.models:
            raise HTTPException(404, "no such model")
        return tag

    def optional_tag(self, model: str | None) -> str | None:
        """The model asked for (404 if unknown), else the default one; None if there is none."""
        return self.tag_of(model) if model or self.workbench.default_tag else None

    def drawing_of(self, key: str) -> str:
        """A showable drawing's id (404 otherwise)."""
        if len(key) > MAX_ID or not self.workbench.is_drawing(key):
            raise HTTPException(404, "no such drawing")
        return key

    def artwork_of(self, key: str) -> str:
        """A showable artwork's id (404 otherwise)."""
        if len(key) > MAX_ID or not self.workbench.is_artwork(key):
            raise HTTPException(404, "no such artwork")
        return key


def check_mode(mode: str) -> str:
    """A search mode (400 otherwise)."""
    if mode not in SEARCH_MODES:
        raise HTTPException(400, f"mode must be one of {', '.join(SEARCH_MODES)}")
    return mode


def site_of(request: Request) -> Site:
    """The app's shared state."""
    site: Site = request.app.state.site
    return site


SiteDep = Annotated[Site, Depends(site_of)]


def signed_in(request: Request, site: SiteDep) -> security.Session:
    """The signed-in annotator's session (LoginRequired without one)."""
    session = site.signer.read_session(request.cookies.get(security.SESSION_COOKIE))
    if session is None:
        raise LoginRequired()
    return session


SignedIn = Annotated[security.Session, Depends(signed_in)]


def checked_post(
    request: Request,
    site: SiteDep,
    session: SignedIn,
    csrf_token: Annotated[str | None, Form()] = None,
) -> security.Session:
    """The session of a state-changing request that comes from this site and carries the
    session's CSRF token (the htmx header or the `csrf_token` form field); 403 otherwise."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not security.same_origin(headers, site.config.hosts()):
        raise HTTPException(403, "cross-site request refused")
    given = request.headers.get(security.CSRF_HEADER) or csrf_token
    if not security.csrf_ok(session, given):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return session


CheckedPost = Annotated[security.Session, Depends(checked_post)]
