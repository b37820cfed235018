"""Deciding drawing-artwork pairs: on a drawing's page (`/annotate`) or in the review queue of
a model's batch-search candidates, closest first (`/review`); the current matches as the pairs
file for the next fine-tune (`/export.csv`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from drawmatch.data.annotations import DECISIONS, pairs_csv_text, pairs_frame
from drawmatch.serve.site import (
    MAX_ID,
    MAX_NOTE,
    CheckedPost,
    ModelQuery,
    SignedIn,
    Site,
    SiteDep,
    signed_in,
)
from drawmatch.serve.views import artwork_card, pair_view

router = APIRouter()


@dataclass(frozen=True)
class DecisionForm:
    """The fields of a decision as posted (see `check_decision`)."""

    drawing_id: str
    artwork_id: str
    decision: str
    rank: str
    distance: str
    note: str


def decision_form(
    drawing_id: Annotated[str, Form(max_length=MAX_ID)],
    artwork_id: Annotated[str, Form(max_length=MAX_ID)],
    decision: Annotated[str, Form()],
    rank: Annotated[str, Form(max_length=12)] = "",
    distance: Annotated[str, Form(max_length=32)] = "",
    note: Annotated[str, Form(max_length=MAX_NOTE)] = "",
) -> DecisionForm:
    """The decision form shared by `/annotate` and `/review` (each adds its own `model`)."""
    return DecisionForm(drawing_id, artwork_id, decision, rank, distance, note)


PostedDecision = Annotated[DecisionForm, Depends(decision_form)]


@dataclass(frozen=True)
class CheckedDecision:
    """A decision whose ids, decision, model, rank and distance have been checked."""

    drawing: str
    artwork: str
    decision: str
    tag: str | None
    rank: int | None
    distance: float | None
    note: str


def check_decision(site: Site, form: DecisionForm, model: str) -> CheckedDecision:
    """The posted decision checked: showable ids (404), a known decision and model, a rank
    >= 1 and a finite distance in range (400)."""
    key = site.drawing_of(form.drawing_id)
    art = site.artwork_of(form.artwork_id)
    if form.decision not in DECISIONS:
        raise HTTPException(400, f"decision must be one of {', '.join(DECISIONS)}")
    if model and model not in site.workbench.models:
        raise HTTPException(400, "no such model")
    rank = None
    if form.rank:
        if not form.rank.isdigit() or not 1 <= int(form.rank) <= 1_000_000:
            raise HTTPException(400, "rank must be a whole number >= 1")
        rank = int(form.rank)
    distance = None
    if form.distance:
        try:
            distance = float(form.distance)
        except ValueError:
            raise HTTPException(400, "distance must be a number") from None
        if not math.isfinite(distance) or not -1.0 <= distance <= 3.0:
            raise HTTPException(400, "distance out of range")
    return CheckedDecision(
        key, art, form.decision, model or None, rank, distance, form.note.strip()
    )


@router.post("/annotate", response_class=HTMLResponse)
def annotate(
    request: Request,
    site: SiteDep,
    session: CheckedPost,
    form: PostedDecision,
    model: Annotated[str, Form(max_length=MAX_ID)] = "",
) -> Response:
    wb, store = site.workbench, site.store
    pair = check_decision(site, form, model)
    key, art, tag = pair.drawing, pair.artwork, pair.tag
    stored = store.add(
        key, art, pair.decision, session.annotator, tag, pair.rank, pair.distance, pair.note
    )
    if request.headers.get("hx-request") != "true":
        target = f"/drawings/{quote(key, safe='')}" + (f"?model={quote(tag)}" if tag else "")
        return RedirectResponse(target, status_code=303)
    history = len(store.history(drawing_id=key, artwork_id=art))
    view = pair_view(
        wb, key, art, pair.rank, pair.distance, tag or wb.default_tag or "", stored, history
    )
    return site.page(request, "_pair.html", session, p=view)


def review_context(site: Site, tag: str) -> dict[str, Any]:
    """The review card of `tag`'s closest undecided candidate, and the queue's progress."""
    wb = site.workbench
    decided = site.store.decided_pairs()
    nxt = wb.review.next(tag, decided, 1)
    done, total = wb.review.progress(tag, decided)
    card = None
    if nxt:
        d, a, r, dist = nxt[0]
        info = wb.row(d)
        card = {"drawing": d, "info": info, "rank": r, "distance": dist, **artwork_card(wb, a)}
    return {
        "card": card,
        "tag": tag,
        "done": done,
        "total": total,
        "percent": (100.0 * done / total) if total else 0.0,
        "has_candidates": wb.review.has_candidates(tag),
    }


@router.get("/review", response_class=HTMLResponse)
def review(
    request: Request, site: SiteDep, session: SignedIn, model: ModelQuery = None
) -> Response:
    return site.page(request, "review.html", session, **review_context(site, site.tag_of(model)))


@router.post("/review", response_class=HTMLResponse)
def review_decide(
    request: Request,
    site: SiteDep,
    session: CheckedPost,
    form: PostedDecision,
    model: Annotated[str, Form(max_length=MAX_ID)],
) -> Response:
    pair = check_decision(site, form, model)
    tag = site.tag_of(pair.tag)
    site.store.add(
        pair.drawing,
        pair.artwork,
        pair.decision,
        session.annotator,
        tag,
        pair.rank,
        pair.distance,
        pair.note,
    )
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/review?model={quote(tag)}", status_code=303)
    return site.page(request, "_review_card.html", session, **review_context(site, tag))


@router.get("/export.csv", dependencies=[Depends(signed_in)])
def export(site: SiteDep) -> Response:
    table = pairs_frame(site.store, allowed=set(site.workbench.sources))
    return Response(
        pairs_csv_text(table),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="pairs.csv"'},
    )
