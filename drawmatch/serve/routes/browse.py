"""Browsing: the drawing grid (filters, sorts, pages, annotation state), a drawing's page (its
closest artworks under one or two models and a search mode, its decisions, similar drawings and
style copies), the artworks grid (search by title, artist and id) and an artwork's page (its
matched and closest drawings under a chosen model; mark a drawing as its copy)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from drawmatch.data.annotations import Decision
from drawmatch.data.imaj import is_verso_name
from drawmatch.serve import blinding, security
from drawmatch.serve.data import RegionHit, Workbench
from drawmatch.serve.grid import SORTS
from drawmatch.serve.site import (
    MAX_ID,
    MAX_NOTE,
    CheckedPost,
    ModelQuery,
    SignedIn,
    Site,
    SiteDep,
    check_mode,
)
from drawmatch.serve.views import MODE_NAMES, history_counts, pair_view

router = APIRouter()


@router.get("/")
def home() -> Response:
    return RedirectResponse("/drawings", status_code=303)


@router.get("/healthz")
def health(request: Request, site: SiteDep) -> Response:
    """Readiness for anyone: 200 `ok` once every model of the model menu is loaded, 503
    `loading` before; the collection's counts and each model's state once signed in."""
    wb = site.workbench
    loading = wb.query_models.loading()
    body: dict[str, Any] = {"status": "loading" if loading else "ok"}
    if site.signer.read_session(request.cookies.get(security.SESSION_COOKIE)) is not None:
        body.update(
            drawings=len(wb.grid),
            artworks=len(wb.artwork_ids),
            models={t: wb.query_models.status(t) for t in wb.tags},
        )
    return JSONResponse(body, status_code=503 if loading else 200)


def seen_by(
    site: Site, annotator: str, drawing_id: str | None = None, artwork_id: str | None = None
) -> blinding.Visible:
    """The decisions (of one drawing and/or artwork) `annotator` may see: in double review, not
    the others' decisions on pairs still in double review (`blinding`)."""
    history = site.store.history(drawing_id=drawing_id, artwork_id=artwork_id)
    return blinding.visible(history, annotator, site.config.review.double)


def grid_states(site: Site, annotator: str, ids: list[str] | None = None) -> dict[str, str]:
    """drawing id -> its annotation state (`match` or `annotated`) as `annotator` may see it,
    optionally only for `ids`."""
    if not site.config.review.double:
        return site.store.drawing_states(ids)
    states = blinding.drawing_states(seen_by(site, annotator).current)
    return states if ids is None else {k: states[k] for k in ids if k in states}


@router.get("/drawings", response_class=HTMLResponse)
def grid(
    request: Request,
    site: SiteDep,
    session: SignedIn,
    year: Annotated[str, Query(max_length=16)] = "",
    age_group: Annotated[str, Query(max_length=32)] = "",
    country: Annotated[str, Query(max_length=64)] = "",
    collection: Literal["originals", "styled", "all"] = "originals",
    state: Literal["all", "unannotated", "annotated", "match"] = "all",
    q: Annotated[str, Query(max_length=MAX_ID)] = "",
    sort: Literal["id", "year", "country", "age"] = "id",
    page_no: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    wb = site.workbench
    filters = {"year": year, "age_group": age_group, "country": country}
    states = grid_states(site, session.annotator) if state != "all" else None
    rows = wb.grid.select(filters, collection, states, state, q.strip(), sort)
    size = site.config.page_size
    pages = max(1, math.ceil(len(rows) / size))
    page_no = min(page_no, pages)
    shown = [str(wb.grid.ids[i]) for i in rows[(page_no - 1) * size : page_no * size]]
    badges = grid_states(site, session.annotator, shown)
    tiles = [dict(wb.grid.tile(key), state=badges.get(key, "")) for key in shown]
    params = {k: v for k, v in filters.items() if v}
    params.update(collection=collection, state=state, sort=sort)
    if q:
        params["q"] = q
    return site.page(
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
        values=wb.grid.values,
        params=params,
    )


def region_results(
    wb: Workbench, tag: str, mode: str, vector: np.ndarray | None, image: Any, k: int
) -> tuple[list[RegionHit], str | None]:
    """A region-mode ranking, or no hits and the reason (no region index yet, a stale one)."""
    if vector is None:
        return [], None
    try:
        return wb.region_top(tag, mode, vector, image, k), None
    except (FileNotFoundError, ValueError) as exc:
        return [], str(exc)


def model_column(
    wb: Workbench,
    key: str,
    tag: str,
    mode: str,
    k: int,
    image: Any,
    current: dict[str, Decision],
    counts: dict[str, int],
) -> dict[str, Any]:
    """One model's column on a drawing's page: its k closest artworks in `mode`, each with its
    current decision, or the reason there are none."""
    problem = None
    if mode == "global":
        pairs = [
            pair_view(wb, key, a, r, d, tag, current.get(a), counts.get(a, 0))
            for a, r, d in wb.top_artworks(tag, key, k)
        ]
    else:
        vector = wb.models[tag].drawing_vector(key)
        hits, problem = region_results(wb, tag, mode, vector, image, k)
        pairs = [
            pair_view(
                wb,
                key,
                h.artwork,
                h.rank,
                h.distance,
                tag,
                current.get(h.artwork),
                counts.get(h.artwork, 0),
                h,
            )
            for h in hits
            if wb.is_artwork(h.artwork)
        ]
    return {
        "tag": tag,
        "embedded": key in wb.models[tag].drawing_rows
        or (mode == "global" and wb.models[tag].by_drawing is not None),
        "pairs": pairs,
        "problem": problem,
    }


def cross_ranks(columns: list[dict[str, Any]], k: int) -> None:
    """In the two-model view, give each pair its artwork's rank under the other model (`there`:
    the rank, or None when it is not in that model's top k)."""
    for column, other in ((columns[0], columns[1]), (columns[1], columns[0])):
        ranks = {p["id"]: p["rank"] for p in other["pairs"]}
        for pair in column["pairs"]:
            pair["there"] = {"tag": other["tag"], "rank": ranks.get(pair["id"]), "k": k}


def drawing_context(
    site: Site, annotator: str, key: str, tag: str | None, other: str | None, k: int, mode: str
) -> dict[str, Any]:
    """What a drawing's page shows `annotator`: one column of closest artworks per model (`tag`,
    and `other` to compare), the artworks decided elsewhere, similar drawings and style copies;
    each pair with the decisions `annotator` may see and whether its two reviews disagree."""
    wb = site.workbench
    seen = seen_by(site, annotator, drawing_id=key)
    current = {a: d for (_d, a), d in seen.current.items()}
    counts = history_counts(seen.history)
    image = wb.drawing_image(key) if mode == "verified" else None
    columns = [model_column(wb, key, t, mode, k, image, current, counts) for t in (tag, other) if t]
    if len(columns) == 2:
        cross_ranks(columns, k)
    listed = {p["id"] for c in columns for p in c["pairs"]}
    elsewhere = [
        pair_view(wb, key, a, dec.rank, dec.distance, dec.model or tag or "", dec, counts.get(a, 0))
        for a, dec in current.items()
        if a not in listed and wb.is_artwork(a)
    ]
    for p in [*elsewhere, *(p for c in columns for p in c["pairs"])]:
        p["disputed"] = (key, p["id"]) in seen.disputed
    return {
        "drawing": key,
        "info": wb.row(key),
        "tag": tag,
        "compare": other,
        "k": k,
        "mode": mode,
        "modes": MODE_NAMES,
        "columns": columns,
        "elsewhere": elsewhere,
        "similar": wb.neighbours.similar_drawings(tag, key, 12) if tag else [],
        "has_similar": tag is not None and wb.neighbours.has_similar(tag),
        "copies": wb.grid.copies.get(key, []),
    }


@router.get("/drawings/{drawing_id}", response_class=HTMLResponse)
def drawing(
    request: Request,
    site: SiteDep,
    session: SignedIn,
    drawing_id: str,
    model: ModelQuery = None,
    compare: ModelQuery = None,
    k: Annotated[int | None, Query(ge=1, le=100)] = None,
    mode: Annotated[str, Query(max_length=20)] = "global",
) -> Response:
    key = site.drawing_of(drawing_id)
    tag = site.optional_tag(model)
    other = site.tag_of(compare) if compare and tag else None
    check_mode(mode)
    k = site.config.k if k is None else k
    return site.page(
        request,
        "drawing.html",
        session,
        **drawing_context(site, session.annotator, key, tag, other, k, mode),
    )


MAX_QUERY = 200  # characters of an artworks search


@router.get("/artworks", response_class=HTMLResponse)
def artworks(
    request: Request,
    site: SiteDep,
    session: SignedIn,
    q: Annotated[str, Query(max_length=MAX_QUERY)] = "",
    page_no: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    """The artworks grid: every word of `q` found in the id, title or artist (case and accents
    ignored), paged; each card with the number of drawings marked as its copies."""
    wb = site.workbench
    found = wb.artworks.search(q)
    size = site.config.page_size
    pages = max(1, math.ceil(len(found) / size))
    page_no = min(page_no, pages)
    if site.config.review.double:
        current = seen_by(site, session.annotator).current.values()
        copies = Counter(d.artwork_id for d in current if d.decision == "match")
    else:
        copies = Counter(site.store.matches()["artwork_id"])
    cards = [
        dict(wb.artworks.cards[key], copies=int(copies.get(key, 0)))
        for key in found[(page_no - 1) * size : page_no * size]
    ]
    context = {"cards": cards, "total": len(found), "page_no": page_no, "pages": pages, "q": q}
    return site.page(request, "artworks.html", session, **context)


def artwork_page(
    request: Request,
    site: Site,
    session: security.Session,
    key: str,
    tag: str | None,
    status_code: int = 200,
    **form: str,
) -> Response:
    """An artwork's page: the drawings marked as its copies, the drawings closest to it under
    model `tag`, and the form to mark one more (`form`: its values and an error to show)."""
    wb = site.workbench
    current = seen_by(site, session.annotator, artwork_id=key).current.values()
    copies = sorted(
        (d for d in current if d.decision == "match" and wb.is_drawing(d.drawing_id)),
        key=lambda d: d.seq,
    )
    near = wb.neighbours.drawings_near_artwork(tag, key, 24) if tag else []
    context = {"artwork": key, "info": wb.row(key), "tag": tag, "copies": copies, "near": near}
    response: Response = site.page(request, "artwork.html", session, form=form, **context)
    response.status_code = status_code
    return response


@router.get("/artworks/{artwork_id}", response_class=HTMLResponse)
def artwork(
    request: Request, site: SiteDep, session: SignedIn, artwork_id: str, model: ModelQuery = None
) -> Response:
    key = site.artwork_of(artwork_id)
    return artwork_page(request, site, session, key, site.optional_tag(model))


@router.post("/artworks/{artwork_id}/copies", response_class=HTMLResponse)
def mark_copy(
    request: Request,
    site: SiteDep,
    session: CheckedPost,
    artwork_id: str,
    drawing_id: Annotated[str, Form(max_length=MAX_ID)],
    model: Annotated[str, Form(max_length=MAX_ID)] = "",
    note: Annotated[str, Form(max_length=MAX_NOTE)] = "",
) -> Response:
    """Record a drawing, chosen by id, as a copy of this artwork (a `match` decision); an
    unknown drawing (404) or a name that states a verso (400) is refused and nothing stored."""
    key = site.artwork_of(artwork_id)
    tag = site.optional_tag(model or None)
    drawing = drawing_id.strip()

    def refuse(status_code: int, error: str) -> Response:
        return artwork_page(
            request,
            site,
            session,
            key,
            tag,
            status_code,
            drawing_id=drawing,
            note=note,
            error=error,
        )

    if is_verso_name(drawing):
        return refuse(400, f"{drawing} names a verso (the back of a sheet): never matched.")
    if not site.workbench.is_drawing(drawing):
        return refuse(404, f"No drawing has the id {drawing!r}.")
    site.store.add(drawing, key, "match", session.annotator, tag, note=note.strip())
    target = f"/artworks/{quote(key, safe='')}" + (f"?model={quote(tag, safe='')}" if tag else "")
    return RedirectResponse(target, status_code=303)
