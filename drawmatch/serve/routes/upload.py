"""Searching by an uploaded photo of a drawing: its closest artworks under a model and a search
mode, shown beside the image. The file is checked (a name that states a verso, size, type, first
bytes, pixels) before it is decoded, and the search runs in a worker thread. Nothing is written
to disk; the upload is kept in memory for a while (`uploads.UploadCache`, by content hash) so
that a change of model or mode searches it again without a second upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from drawmatch.core.images import ImageError, open_image
from drawmatch.retrieval.queries import check_query, image_query
from drawmatch.serve import security
from drawmatch.serve.site import (
    MAX_ID,
    CheckedPost,
    ModelQuery,
    SignedIn,
    Site,
    SiteDep,
    check_mode,
)
from drawmatch.serve.uploads import Upload, preview_jpeg, upload_key
from drawmatch.serve.views import MODE_NAMES, artwork_card, box_view

router = APIRouter()

UPLOAD_TYPES = {"image/jpeg", "image/png", "image/webp"}


def magic_ok(data: bytes) -> bool:
    """JPEG, PNG or WebP by their first bytes."""
    return (
        data.startswith(b"\xff\xd8\xff")
        or data.startswith(b"\x89PNG\r\n\x1a\n")
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    )


def upload_page(
    site: Site,
    request: Request,
    session: security.Session,
    tag: str,
    mode: str,
    status: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """The upload page: the form, and the results or an error (`context`)."""
    context.setdefault("results", None)
    context.setdefault("error", None)
    response: Response = site.page(
        request,
        "upload.html",
        session,
        tag=tag,
        status=status,
        limit_mb=site.config.max_upload_bytes / 1e6,
        mode=mode,
        modes=MODE_NAMES,
        **context,
    )
    response.status_code = status_code
    return response


@router.get("/upload", response_class=HTMLResponse)
def upload_form(
    request: Request, site: SiteDep, session: SignedIn, model: ModelQuery = None
) -> Response:
    tag = site.tag_of(model)
    site.workbench.query_models.start(tag)
    status = site.workbench.query_models.status(tag)
    return upload_page(site, request, session, tag, "global", status)


def search_image(
    site: Site, embedder: Any, data: bytes, tag: str, mode: str, k: int
) -> tuple[list[dict[str, Any]], bytes]:
    """The k closest artworks to an uploaded image and its JPEG preview (ImageError if it
    cannot be read)."""
    wb = site.workbench
    img = open_image(
        "upload",
        draft_size=max(embedder.image_size, 1024 if mode == "verified" else 0),
        max_pixels=site.config.max_upload_pixels,
        data=data,
    )
    preview = preview_jpeg(img, site.config.view_size)
    vector = image_query(embedder, img).vector
    if mode == "global":
        found = wb.search_vector(tag, vector, k)
        return [dict(artwork_card(wb, a), rank=r, distance=d) for a, r, d in found], preview
    hits = [
        dict(artwork_card(wb, h.artwork), rank=h.rank, distance=h.distance, **box_view(h))
        for h in wb.region_top(tag, mode, vector, img, k)
        if wb.is_artwork(h.artwork)
    ]
    return hits, preview


@dataclass(frozen=True)
class Refused:
    """Why an upload is not searched: the status and the message the page shows."""

    status: int
    message: str


def refusal(site: Site, image: UploadFile, data: bytes) -> Refused | None:
    """Why an uploaded file cannot be searched: a name that states a verso,
    too large, not an image; None when it can."""
    limit = site.config.max_upload_bytes
    try:  # a file named as a verso is refused like the same name given to `drawmatch search`
        check_query(image.filename or "upload")
    except ValueError as exc:
        return Refused(400, str(exc))
    if len(data) > limit:
        return Refused(413, f"The image is larger than {limit / 1e6:g} MB.")
    if (image.content_type or "") not in UPLOAD_TYPES or not magic_ok(data):
        return Refused(415, "Upload a JPEG, PNG or WebP image.")
    return None


async def query_image(
    site: Site, image: UploadFile | None, kept: str
) -> tuple[bytes, str] | Refused:
    """The query's bytes and file name: a new upload (checked), or one kept from an earlier
    upload (`kept`: its key); else the status and message of the refusal."""
    if image is not None and image.filename:
        data = await image.read(site.config.max_upload_bytes + 1)
        refused = refusal(site, image, data)
        return refused if refused is not None else (data, image.filename[:100])
    if kept:
        upload = site.uploads.get(kept)
        if upload is None:
            return Refused(410, "That image is no longer kept on the server: upload it again.")
        return upload.data, upload.filename
    return Refused(400, "Choose an image to upload.")


@router.post("/upload", response_class=HTMLResponse)
async def upload(
    request: Request,
    site: SiteDep,
    session: CheckedPost,
    image: Annotated[UploadFile | None, File()] = None,
    kept: Annotated[str, Form(alias="upload", max_length=64)] = "",
    model: Annotated[str, Form(max_length=MAX_ID)] = "",
    k: Annotated[int | None, Form(ge=1, le=100)] = None,
    mode: Annotated[str, Form(max_length=20)] = "global",
) -> Response:
    """Search by a new upload, or again by a kept one (`upload`: its key) under another model
    or mode; the page shows the image beside its results and keeps it for the next change."""
    tag = site.tag_of(model or None)
    check_mode(mode)
    k = site.config.k if k is None else k
    query_models = site.workbench.query_models

    def fail(status_code: int, message: str) -> Response:
        status = query_models.status(tag)
        return upload_page(site, request, session, tag, mode, status, status_code, error=message)

    query = await query_image(site, image, kept)
    if isinstance(query, Refused):
        return fail(query.status, query.message)
    data, filename = query
    if site.workbench.models[tag].index is None:
        return fail(409, f"Model {tag} has no artwork index: run `drawmatch index`.")
    embedder = query_models.get(tag)
    if embedder is None:
        if query_models.status(tag) == "error":
            return fail(500, f"The model {tag} could not be loaded: see the server log.")
        return fail(503, "The model is still loading; try again in a few seconds.")
    try:
        results, preview = await run_in_threadpool(search_image, site, embedder, data, tag, mode, k)
    except ImageError as exc:
        return fail(400, f"This file cannot be read as an image ({exc.reason}).")
    except (FileNotFoundError, ValueError) as exc:  # no region index yet, or a stale one
        return fail(409, str(exc))
    key = upload_key(data)
    is_kept = site.uploads.put(Upload(key, data, str(filename), preview))
    return upload_page(
        site,
        request,
        session,
        tag,
        mode,
        "ready",
        results=results,
        filename=filename,
        upload=key if is_kept else None,
    )


@router.get("/upload/{key}/image")
def uploaded_image(site: SiteDep, session: SignedIn, key: str) -> Response:
    """The JPEG preview of a kept upload (404 once it is no longer kept)."""
    upload = site.uploads.get(key)
    if upload is None:
        raise HTTPException(404, "this upload is no longer kept")
    return Response(
        upload.preview, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )
