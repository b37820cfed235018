"""The workbench web app (FastAPI, server-rendered Jinja2 pages, htmx for in-page updates).

Every image is served by catalogue id (never by path), only for showable rows (status ok, never a
verso), from under the catalogue's roots; every id and parameter is checked; state-changing
requests need a signed-in annotator and the session's CSRF token.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drawmatch.core import storage
from drawmatch.core.images import ImageError, open_image
from drawmatch.data.annotations import (
    DECISIONS,
    AnnotationStore,
    Decision,
    db_path,
    pairs_csv_text,
    pairs_frame,
)
from drawmatch.data.renditions import ensure_rendition
from drawmatch.models.preprocess import eval_resize
from drawmatch.reporting.sheets import whole_image
from drawmatch.retrieval.region_search import SEARCH_MODES
from drawmatch.serve import security
from drawmatch.serve.config import ServeConfig
from drawmatch.serve.data import SORTS, RegionHit, Workbench

log = logging.getLogger("drawmatch.serve")

MAX_ID = 256
MAX_NOTE = 2000
UPLOAD_TYPES = {"image/jpeg", "image/png", "image/webp"}
FORM_LIMIT = 64 * 1024
CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("drawmatch.serve") / name))


def _magic_ok(data: bytes) -> bool:
    """JPEG, PNG or WebP by their first bytes."""
    return (
        data.startswith(b"\xff\xd8\xff")
        or data.startswith(b"\x89PNG\r\n\x1a\n")
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


class BodyLimit:
    """Refuse request bodies over a limit (413) while they stream in, Content-Length or not:
    uploads up to `upload_limit`, any other request up to `FORM_LIMIT`."""

    def __init__(self, app: ASGIApp, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit + FORM_LIMIT if scope["path"] == "/upload" else FORM_LIMIT
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _plain(send, 413, "request too large")
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _plain(send, 413, "request too large")


class _TooLarge(Exception):
    pass


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LoginRequired(Exception):
    pass


def create_app(config: ServeConfig, workbench: Workbench | None = None) -> FastAPI:
    """The app over `config.out` (loads the workbench's in-memory indexes unless given one)."""
    wb = workbench or Workbench(config.out, config.load_model, config.model_tag)
    store = AnnotationStore(db_path(wb.out))
    signer = security.Signer(security.load_secret(wb.out))
    tokens = security.read_tokens(config.tokens_csv) if config.tokens_csv else None
    templates = Jinja2Templates(directory=str(_package_dir("templates")))
    templates.env.filters["u"] = lambda s: quote(str(s), safe="")
    templates.env.filters["dist"] = lambda d: f"{d:.3f}"
    app = FastAPI(title="drawmatch workbench", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workbench = wb
    app.state.store = store
    app.mount("/static", StaticFiles(directory=str(_package_dir("static"))), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    app.add_middleware(BodyLimit, upload_limit=config.max_upload_bytes)  # type: ignore[arg-type]

    # -- helpers -------------------------------------------------------------------------------
    def session_of(request: Request) -> security.Session | None:
        return signer.read_session(request.cookies.get(security.SESSION_COOKIE))

    def require(request: Request) -> security.Session:
        session = session_of(request)
        if session is None:
            raise LoginRequired()
        return session

    def check_post(request: Request, session: security.Session, form_token: str | None) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not security.same_origin(headers, request.headers.get("host")):
            raise HTTPException(403, "cross-site request refused")
        given = request.headers.get(security.CSRF_HEADER) or form_token
        if not security.csrf_ok(session, given):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")

    def tag_of(model: str | None) -> str:
        tag = model or wb.default_tag
        if tag is None:
            raise HTTPException(404, "no embeddings under this output root: run `drawmatch embed`")
        if tag not in wb.models:
            raise HTTPException(404, "no such model")
        return tag

    def optional_tag(model: str | None) -> str | None:
        """The model asked for (404 if unknown), else the default one; None if there is none."""
        return tag_of(model) if model or wb.default_tag else None

    def drawing_of(key: str) -> str:
        if len(key) > MAX_ID or not wb.is_drawing(key):
            raise HTTPException(404, "no such drawing")
        return key

    def artwork_of(key: str) -> str:
        if len(key) > MAX_ID or not wb.is_artwork(key):
            raise HTTPException(404, "no such artwork")
        return key

    def page(request: Request, name: str, session: security.Session | None, **context: Any) -> Any:
        context.update(
            request=request,
            annotator=session.annotator if session else None,
            csrf=session.csrf if session else "",
            tags=wb.tags,
            default_tag=wb.default_tag,
        )
        return templates.TemplateResponse(request, name, context)

    def artwork_card(artwork: str) -> dict[str, Any]:
        row = wb.row(artwork)
        return {"id": artwork, "artist": row.get("artist", ""), "title": row.get("title", "")}

    def pair_view(
        drawing: str,
        artwork: str,
        rank: int | None,
        dist: float | None,
        tag: str,
        current: Decision | None,
        history: int,
        hit: RegionHit | None = None,
    ) -> dict[str, Any]:
        view = artwork_card(artwork)
        view.update(
            drawing=drawing, rank=rank, distance=dist, model=tag, current=current, history=history
        )
        view.update(box_view(hit))
        return view

    def check_mode(mode: str) -> str:
        if mode not in SEARCH_MODES:
            raise HTTPException(400, f"mode must be one of {', '.join(SEARCH_MODES)}")
        return mode

    def region_results(
        tag: str, mode: str, vector: np.ndarray | None, image: Any, k: int
    ) -> tuple[list[RegionHit], str | None]:
        """A region-mode ranking, or no hits and the reason (no region index yet, a stale one)."""
        if vector is None:
            return [], None
        try:
            return wb.region_top(tag, mode, vector, image, k), None
        except (FileNotFoundError, ValueError) as exc:
            return [], str(exc)

    # -- errors --------------------------------------------------------------------------------
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return _error_page(templates, request, 401, "Sign in first.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_page(templates, request, exc.status_code, str(exc.detail))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> Response:
        return _error_page(templates, request, 400, "bad request")

    # -- sign in -------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/drawings") -> Response:
        nonce = secrets.token_urlsafe(16)
        response = page(
            request,
            "login.html",
            None,
            nonce=nonce,
            next=_safe_next(next),
            tokens=tokens is not None,
            error=None,
        )
        response.set_cookie(
            security.LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict"
        )
        return response

    @app.post("/login")
    def login(
        request: Request,
        nonce: str = Form(""),
        name: str = Form(""),
        token: str = Form(""),
        next: str = Form("/drawings"),
    ) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        cookie = request.cookies.get(security.LOGIN_COOKIE, "")
        if not security.same_origin(headers, request.headers.get("host")) or not (
            cookie and nonce and secrets.compare_digest(cookie, nonce)
        ):
            raise HTTPException(403, "sign-in form expired or sent from another site: reload")
        if tokens is not None:
            annotator = security.annotator_for_token(tokens, token.strip())
            error = None if annotator else "Unknown token."
        else:
            annotator = name.strip()
            error = (
                None
                if security.valid_name(annotator)
                else ("Give your name (letters, digits, spaces, . ' @ -; up to 64 characters).")
            )
        if error or not annotator:
            response = page(
                request,
                "login.html",
                None,
                nonce=nonce,
                next=_safe_next(next),
                tokens=tokens is not None,
                error=error,
            )
            response.status_code = 400
            return response
        value, _session = signer.session_cookie(annotator)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            security.SESSION_COOKIE,
            value,
            max_age=security.SESSION_MAX_AGE,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(security.LOGIN_COOKIE)
        return response

    @app.post("/logout")
    def logout(request: Request, csrf_token: str | None = Form(None)) -> Response:
        session = require(request)
        check_post(request, session, csrf_token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(security.SESSION_COOKIE)
        return response

    # -- pages ---------------------------------------------------------------------------------
    @app.get("/")
    def home() -> Response:
        return RedirectResponse("/drawings", status_code=303)

    @app.get("/healthz")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "drawings": len(wb.grid),
            "artworks": len(wb.artwork_ids),
            "models": {t: wb.query_models.status(t) for t in wb.tags},
        }

    @app.get("/drawings", response_class=HTMLResponse)
    def grid(
        request: Request,
        year: str = Query("", max_length=16),
        age_group: str = Query("", max_length=32),
        country: str = Query("", max_length=64),
        collection: Literal["originals", "styled", "all"] = "originals",
        state: Literal["all", "unannotated", "annotated", "match"] = "all",
        q: str = Query("", max_length=MAX_ID),
        sort: Literal["id", "year", "country", "age"] = "id",
        page_no: int = Query(1, alias="page", ge=1, le=1_000_000),
    ) -> Response:
        session = require(request)
        filters = {"year": year, "age_group": age_group, "country": country}
        states = store.drawing_states() if state != "all" else None
        rows = wb.select(filters, collection, states, state, q.strip(), sort)
        size = config.page_size
        pages = max(1, math.ceil(len(rows) / size))
        page_no = min(page_no, pages)
        shown = [str(wb.grid_ids[i]) for i in rows[(page_no - 1) * size : page_no * size]]
        badges = store.drawing_states(shown)
        tiles = [dict(wb.tile(key), state=badges.get(key, "")) for key in shown]
        params = {k: v for k, v in filters.items() if v}
        params.update(collection=collection, state=state, sort=sort)
        if q:
            params["q"] = q
        return page(
            request,
            "grid.html",
            session,
            tiles=tiles,
            total=len(rows),
            page_no=page_no,
            pages=pages,
            filters=filters,
            collection=collection,
            state=state,
            q=q,
            sort=sort,
            sorts=list(SORTS),
            values=wb.values,
            params=params,
        )

    @app.get("/drawings/{drawing_id}", response_class=HTMLResponse)
    def drawing(
        request: Request,
        drawing_id: str,
        model: str | None = Query(None, max_length=MAX_ID),
        compare: str | None = Query(None, max_length=MAX_ID),
        k: int = Query(config.k, ge=1, le=100),
        mode: str = Query("global", max_length=20),
    ) -> Response:
        session = require(request)
        key = drawing_of(drawing_id)
        tag = optional_tag(model)
        other = tag_of(compare) if compare and tag else None
        check_mode(mode)
        current = store.current_by_pair(key)
        counts = _history_counts(store.history(drawing_id=key))
        columns: list[dict[str, Any]] = []
        image = wb.drawing_image(key) if mode == "verified" else None
        for t in [t for t in (tag, other) if t]:
            problem = None
            if mode == "global":
                pairs = [
                    pair_view(key, a, r, d, t, current.get(a), counts.get(a, 0))
                    for a, r, d in wb.top_artworks(t, key, k)
                ]
            else:
                hits, problem = region_results(t, mode, wb.models[t].drawing_vector(key), image, k)
                pairs = [
                    pair_view(
                        key,
                        h.artwork,
                        h.rank,
                        h.distance,
                        t,
                        current.get(h.artwork),
                        counts.get(h.artwork, 0),
                        h,
                    )
                    for h in hits
                    if wb.is_artwork(h.artwork)
                ]
            columns.append(
                {
                    "tag": t,
                    "embedded": key in wb.models[t].drawing_rows
                    or (mode == "global" and wb.models[t].by_drawing is not None),
                    "pairs": pairs,
                    "problem": problem,
                }
            )
        listed = {p["id"] for c in columns for p in c["pairs"]}
        elsewhere = [
            pair_view(key, a, dec.rank, dec.distance, dec.model or tag or "", dec, counts.get(a, 0))
            for a, dec in current.items()
            if a not in listed and wb.is_artwork(a)
        ]
        info = wb.row(key)
        return page(
            request,
            "drawing.html",
            session,
            drawing=key,
            info=info,
            tag=tag,
            compare=other,
            k=k,
            mode=mode,
            modes=MODE_NAMES,
            columns=columns,
            elsewhere=elsewhere,
            similar=wb.similar_drawings(tag, key, 12) if tag else [],
            has_similar=tag is not None and wb.models[tag].similar is not None,
            copies=wb.copies.get(key, []),
        )

    @app.get("/artworks/{artwork_id}", response_class=HTMLResponse)
    def artwork(
        request: Request, artwork_id: str, model: str | None = Query(None, max_length=MAX_ID)
    ) -> Response:
        session = require(request)
        key = artwork_of(artwork_id)
        tag = optional_tag(model)
        copies = [
            d
            for d in store.current(artwork_id=key)
            if d.decision == "match" and wb.is_drawing(d.drawing_id)
        ]
        return page(
            request,
            "artwork.html",
            session,
            artwork=key,
            info=wb.row(key),
            tag=tag,
            copies=copies,
            near=wb.drawings_near_artwork(tag, key, 24) if tag else [],
        )

    @app.post("/annotate", response_class=HTMLResponse)
    def annotate(
        request: Request,
        drawing_id: str = Form(..., max_length=MAX_ID),
        artwork_id: str = Form(..., max_length=MAX_ID),
        decision: str = Form(...),
        model: str = Form("", max_length=MAX_ID),
        rank: str = Form("", max_length=12),
        distance: str = Form("", max_length=32),
        note: str = Form("", max_length=MAX_NOTE),
        csrf_token: str | None = Form(None),
    ) -> Response:
        session = require(request)
        check_post(request, session, csrf_token)
        key, art, tag, shown_rank, shown_dist = _checked_pair(
            drawing_id, artwork_id, decision, model, rank, distance
        )
        stored = store.add(
            key, art, decision, session.annotator, tag, shown_rank, shown_dist, note.strip()
        )
        if request.headers.get("hx-request") != "true":
            target = f"/drawings/{quote(key, safe='')}" + (f"?model={quote(tag)}" if tag else "")
            return RedirectResponse(target, status_code=303)
        history = len(store.history(drawing_id=key, artwork_id=art))
        view = pair_view(
            key, art, shown_rank, shown_dist, tag or wb.default_tag or "", stored, history
        )
        return page(request, "_pair.html", session, p=view)

    def _checked_pair(
        drawing_id: str, artwork_id: str, decision: str, model: str, rank: str, distance: str
    ) -> tuple[str, str, str | None, int | None, float | None]:
        key = drawing_of(drawing_id)
        art = artwork_of(artwork_id)
        if decision not in DECISIONS:
            raise HTTPException(400, f"decision must be one of {', '.join(DECISIONS)}")
        tag = None
        if model:
            if model not in wb.models:
                raise HTTPException(400, "no such model")
            tag = model
        shown_rank = None
        if rank:
            if not rank.isdigit() or not 1 <= int(rank) <= 1_000_000:
                raise HTTPException(400, "rank must be a whole number >= 1")
            shown_rank = int(rank)
        shown_dist = None
        if distance:
            try:
                shown_dist = float(distance)
            except ValueError:
                raise HTTPException(400, "distance must be a number") from None
            if not math.isfinite(shown_dist) or not -1.0 <= shown_dist <= 3.0:
                raise HTTPException(400, "distance out of range")
        return key, art, tag, shown_rank, shown_dist

    def review_context(tag: str) -> dict[str, Any]:
        decided = store.decided_pairs()
        nxt = wb.next_candidates(tag, decided, 1)
        done, total = wb.reviewed(tag, decided)
        card = None
        if nxt:
            d, a, r, dist = nxt[0]
            info = wb.row(d)
            card = {"drawing": d, "info": info, "rank": r, "distance": dist, **artwork_card(a)}
        return {
            "card": card,
            "tag": tag,
            "done": done,
            "total": total,
            "percent": (100.0 * done / total) if total else 0.0,
            "has_candidates": wb.models[tag].candidates is not None,
        }

    @app.get("/review", response_class=HTMLResponse)
    def review(request: Request, model: str | None = Query(None, max_length=MAX_ID)) -> Response:
        session = require(request)
        return page(request, "review.html", session, **review_context(tag_of(model)))

    @app.post("/review", response_class=HTMLResponse)
    def review_decide(
        request: Request,
        drawing_id: str = Form(..., max_length=MAX_ID),
        artwork_id: str = Form(..., max_length=MAX_ID),
        decision: str = Form(...),
        model: str = Form(..., max_length=MAX_ID),
        rank: str = Form("", max_length=12),
        distance: str = Form("", max_length=32),
        note: str = Form("", max_length=MAX_NOTE),
        csrf_token: str | None = Form(None),
    ) -> Response:
        session = require(request)
        check_post(request, session, csrf_token)
        key, art, tag, shown_rank, shown_dist = _checked_pair(
            drawing_id, artwork_id, decision, model, rank, distance
        )
        tag = tag_of(tag)
        store.add(key, art, decision, session.annotator, tag, shown_rank, shown_dist, note.strip())
        if request.headers.get("hx-request") != "true":
            return RedirectResponse(f"/review?model={quote(tag)}", status_code=303)
        return page(request, "_review_card.html", session, **review_context(tag))

    @app.get("/upload", response_class=HTMLResponse)
    def upload_form(
        request: Request, model: str | None = Query(None, max_length=MAX_ID)
    ) -> Response:
        session = require(request)
        tag = tag_of(model)
        wb.query_models.start(tag)
        return page(
            request,
            "upload.html",
            session,
            tag=tag,
            results=None,
            error=None,
            status=wb.query_models.status(tag),
            limit_mb=config.max_upload_bytes / 1e6,
            mode="global",
            modes=MODE_NAMES,
        )

    @app.post("/upload", response_class=HTMLResponse)
    async def upload(
        request: Request,
        image: Annotated[UploadFile, File()],
        model: str = Form("", max_length=MAX_ID),
        k: int = Form(config.k, ge=1, le=100),
        mode: str = Form("global", max_length=20),
        csrf_token: str | None = Form(None),
    ) -> Response:
        session = require(request)
        check_post(request, session, csrf_token)
        tag = tag_of(model or None)
        check_mode(mode)

        def fail(status: int, message: str) -> Response:
            response = page(
                request,
                "upload.html",
                session,
                tag=tag,
                results=None,
                error=message,
                status=wb.query_models.status(tag),
                limit_mb=config.max_upload_bytes / 1e6,
                mode=mode,
                modes=MODE_NAMES,
            )
            response.status_code = status
            return response

        data = await image.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            return fail(413, f"The image is larger than {config.max_upload_bytes / 1e6:g} MB.")
        if (image.content_type or "") not in UPLOAD_TYPES or not _magic_ok(data):
            return fail(415, "Upload a JPEG, PNG or WebP image.")
        if wb.models[tag].index is None:
            return fail(409, f"Model {tag} has no artwork index: run `drawmatch index`.")
        embedder = wb.query_models.get(tag)
        if embedder is None:
            state = wb.query_models.status(tag)
            if state == "error":
                return fail(500, f"The model {tag} could not be loaded: see the server log.")
            return fail(503, "The model is still loading; try again in a few seconds.")

        def search() -> list[dict[str, Any]]:
            img = open_image(
                "upload",
                draft_size=max(embedder.image_size, 1024 if mode == "verified" else 0),
                max_pixels=config.max_upload_pixels,
                data=data,
            )
            vector = embedder.embed_images(eval_resize(img, embedder.image_size)[None])
            if mode == "global":
                found = wb.search_vector(tag, vector, k)
                return [dict(artwork_card(a), rank=r, distance=d) for a, r, d in found]
            return [
                dict(artwork_card(h.artwork), rank=h.rank, distance=h.distance, **box_view(h))
                for h in wb.region_top(tag, mode, vector, img, k)
                if wb.is_artwork(h.artwork)
            ]

        try:
            results = await run_in_threadpool(search)
        except ImageError as exc:
            return fail(400, f"This file cannot be read as an image ({exc.reason}).")
        except (FileNotFoundError, ValueError) as exc:  # no region index yet, or a stale one
            return fail(409, str(exc))
        return page(
            request,
            "upload.html",
            session,
            tag=tag,
            results=results,
            error=None,
            status="ready",
            limit_mb=config.max_upload_bytes / 1e6,
            filename=(image.filename or "upload")[:100],
            mode=mode,
            modes=MODE_NAMES,
        )

    @app.get("/export.csv")
    def export(request: Request) -> Response:
        require(request)
        table = pairs_frame(store, allowed=set(wb.sources))
        return Response(
            pairs_csv_text(table),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="pairs.csv"'},
        )

    # -- images --------------------------------------------------------------------------------
    def rendition(key: str, size: int) -> Response:
        if len(key) > MAX_ID or key not in wb.sources:
            raise HTTPException(404, "no such image")
        source = wb.sources[key]
        root = wb.roots.get(wb.root_of[key], "")
        if not storage.is_uri(source):
            real = os.path.realpath(source)
            if not real.startswith(os.path.realpath(root) + os.sep):
                raise HTTPException(404, "no such image")
        try:
            data, _made = ensure_rendition(
                wb.out, source, wb.sha[key], size, max_pixels=config.max_image_pixels
            )
        except (ImageError, OSError, ValueError):
            raise HTTPException(404, "this image cannot be shown") from None
        return Response(
            data,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{wb.sha[key]}-{size}"'},
        )

    @app.get("/thumb/{image_id}")
    def thumb(request: Request, image_id: str) -> Response:
        require(request)
        return rendition(image_id, config.thumb_size)

    @app.get("/view/{image_id}")
    def view(request: Request, image_id: str) -> Response:
        require(request)
        return rendition(image_id, config.view_size)

    return app


MODE_NAMES = {
    "global": "whole image",
    "region": "best region",
    "fused": "whole image + regions",
    "verified": "fused + keypoint check",
}


def box_view(hit: RegionHit | None) -> dict[str, Any]:
    """The template values of a region hit's box: CSS percentages of the artwork's thumbnail
    (`box`: left, top, width, height; None when the whole artwork matched best, which needs no
    frame) and the evidence behind it."""
    if hit is None:
        return {"box": None, "inliers": None, "verified": False}
    box = None
    if hit.box is not None and not whole_image(hit.box):
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in hit.box)
        box = {
            "left": round(100 * x0, 2),
            "top": round(100 * y0, 2),
            "width": round(100 * (x1 - x0), 2),
            "height": round(100 * (y1 - y0), 2),
        }
    return {"box": box, "inliers": hit.inliers, "verified": hit.verified}


def _history_counts(history: list[Decision]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in history:
        counts[d.artwork_id] = counts.get(d.artwork_id, 0) + 1
    return counts


def _safe_next(target: str) -> str:
    """A local path to go to after signing in (never another site)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/drawings"
    return target


def _error_page(templates: Jinja2Templates, request: Request, status: int, detail: str) -> Response:
    if request.headers.get("hx-request") == "true" or request.url.path.startswith("/healthz"):
        return JSONResponse({"detail": detail}, status_code=status)
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "detail": detail, "annotator": None, "csrf": ""},
        status_code=status,
    )
