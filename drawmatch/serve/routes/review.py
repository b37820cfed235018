"""Deciding drawing-artwork pairs: on a drawing's page (`/annotate`) or in the review queue of
a model's batch-search candidates, likely copies, closest or most uncertain first, skipped pairs
last (`/review`), with undo (`/review/undo`: a new row, never a deletion); in double review, the
raters' agreement and the disagreements to settle (`/review/agreement`, `/review/settle`); the
current matches as the pairs file for the next fine-tune (`/export.csv`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from drawmatch.data.annotations import (
    DECISIONS,
    Decision,
    decided_of,
    pairs_csv_text,
    pairs_frame,
    skipped_of,
)
from drawmatch.serve import blinding, double_review
from drawmatch.serve.review_queue import ORDERS, known_match_threshold
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
DECISION_WORDS = {"match": "match", "non-match": "not a match", "skip": "skip"}


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


def store_decision(
    site: Site, pair: CheckedDecision, annotator: str, tag: str | None, source: str = "workbench"
) -> Decision:
    """Append a checked decision by `annotator`, shown under model `tag`."""
    return site.store.add(
        pair.drawing,
        pair.artwork,
        pair.decision,
        annotator,
        tag,
        pair.rank,
        pair.distance,
        pair.note,
        source,
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
    stored = store_decision(site, pair, session.annotator, tag)
    if request.headers.get("hx-request") != "true":
        target = f"/drawings/{quote(key, safe='')}" + (f"?model={quote(tag)}" if tag else "")
        return RedirectResponse(target, status_code=303)
    history = store.history(drawing_id=key, artwork_id=art)
    seen = blinding.visible(history, session.annotator, site.config.review.double)
    view = pair_view(
        wb,
        key,
        art,
        pair.rank,
        pair.distance,
        tag or wb.default_tag or "",
        stored,
        len(seen.history),
    )
    view["disputed"] = (key, art) in seen.disputed
    return site.page(request, "_pair.html", session, p=view)


def check_order(order: str | None) -> str | None:
    """A queue order asked for (`ORDERS`), None for the default one (400 otherwise)."""
    if order and order not in ORDERS:
        raise HTTPException(400, f"order must be one of {', '.join(ORDERS)}")
    return order or None


def order_query(order: Annotated[str | None, Query(max_length=MAX_ID)] = None) -> str | None:
    return check_order(order)


def order_form(order: Annotated[str, Form(max_length=MAX_ID)] = "") -> str | None:
    return check_order(order)


# checked before the route runs: a bad order stores no decision
OrderQuery = Annotated[str | None, Depends(order_query)]
OrderForm = Annotated[str | None, Depends(order_form)]


def queue_state(
    site: Site, annotator: str
) -> tuple[set[tuple[str, str]], dict[Any, int], set[tuple[str, str]]]:
    """The pairs the queue leaves out, the skipped pairs it shows last (`seq` of the skip) and
    the current matches: every annotator's decisions, or in double review (`review.double`) what
    `double_review` leaves out for this annotator."""
    states = site.store.pair_states()
    matches = {p for p, (dec, _seq) in states.items() if dec == "match"}
    if site.config.review.double:
        return (*double_review.queue_state(site.store.effective(), annotator), matches)
    return decided_of(states), skipped_of(states), matches


def calibration_hint(site: Site, tag: str) -> tuple[str, str] | None:
    """Why `tag`'s candidates have no calibrated confidence and the command that gives them one
    (the page shows both in one line); None where they have one or there are none."""
    wb = site.workbench
    if not wb.review.has_candidates(tag) or wb.review.has_confidence(tag):
        return None
    if wb.models[tag].calibration is None:
        command = f"drawmatch evaluate pairs_csv=PAIRS.csv model_tag={tag} calibrate=true"
        return f"no calibration for {tag}; fit one with", command
    command = f"drawmatch search batch=true model_tag={tag} k=20"
    return (
        "the candidates were searched before the calibration, too shallow to add it; run",
        command,
    )


def review_context(
    site: Site, tag: str, annotator: str, order: str | None, notice: str = ""
) -> dict[str, Any]:
    """The review card of `tag`'s next candidate in `order` (`ORDERS`; by default likely copies
    first where the candidates have a calibrated confidence, else closest first; skipped pairs
    last), and the queue's progress."""
    wb = site.workbench
    calibrated = wb.review.has_confidence(tag)
    order = order or site.config.review.order or ("likely" if calibrated else "closest")
    decided, skipped, matches = queue_state(site, annotator)
    threshold = None
    cands = wb.review.candidates[tag]
    if order == "uncertain" and cands is not None and not calibrated:
        threshold = known_match_threshold(cands, matches)
    nxt = wb.review.next(tag, decided, skipped, 1, order, threshold)
    done, total = wb.review.progress(tag, decided)
    card = None
    if nxt and cands is not None:
        d, a, r, dist = nxt[0]
        confidence, likely_copy = cands.confidence_of(d, a)
        card = {
            "drawing": d,
            "info": wb.row(d),
            "rank": r,
            "distance": dist,
            "confidence": confidence,
            "likely_copy": likely_copy,
            "again": (d, a) in skipped,
        }
        card.update(artwork_card(wb, a))
    return {
        "card": card,
        "tag": tag,
        "order": order,
        "threshold": threshold,
        "calibrated": calibrated,
        "calibration_hint": calibration_hint(site, tag),
        "double": site.config.review.double,
        "notice": notice,
        "done": done,
        "skipped": len(cands.rows_of(skipped)) if cands is not None else 0,
        "total": total,
        "percent": (100.0 * done / total) if total else 0.0,
        "has_candidates": wb.review.has_candidates(tag),
    }


@router.get("/review", response_class=HTMLResponse)
def review(
    request: Request,
    site: SiteDep,
    session: SignedIn,
    order: OrderQuery,
    model: ModelQuery = None,
) -> Response:
    context = review_context(site, site.tag_of(model), session.annotator, order)
    return site.page(request, "review.html", session, **context)


def _back_to_review(tag: str, order: str | None) -> Response:
    target = f"/review?model={quote(tag)}" + (f"&order={quote(order)}" if order else "")
    return RedirectResponse(target, status_code=303)


@router.post("/review", response_class=HTMLResponse)
def review_decide(
    request: Request,
    site: SiteDep,
    session: CheckedPost,
    form: PostedDecision,
    model: Annotated[str, Form(max_length=MAX_ID)],
    order: OrderForm,
) -> Response:
    pair = check_decision(site, form, model)
    tag = site.tag_of(pair.tag)
    store_decision(site, pair, session.annotator, tag)
    if request.headers.get("hx-request") != "true":
        return _back_to_review(tag, order)
    context = review_context(site, tag, session.annotator, order)
    return site.page(request, "_review_card.html", session, **context)


@router.post("/review/undo", response_class=HTMLResponse)
def review_undo(
    request: Request,
    site: SiteDep,
    session: CheckedPost,
    order: OrderForm,
    model: Annotated[str, Form(max_length=MAX_ID)] = "",
) -> Response:
    """Undo the annotator's latest decision not undone yet (a new row; 409 if none is left)."""
    tag = site.tag_of(model or None)
    try:
        _row, undone = site.store.undo(session.annotator)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    if request.headers.get("hx-request") != "true":
        return _back_to_review(tag, order)
    word = DECISION_WORDS.get(undone.decision, undone.decision)
    notice = f"Undone: {word} on {undone.drawing_id} / {undone.artwork_id}"
    context = review_context(site, tag, session.annotator, order, notice)
    return site.page(request, "_review_card.html", session, **context)


@router.get("/review/agreement", response_class=HTMLResponse)
def review_agreement(
    request: Request, site: SiteDep, session: SignedIn, model: ModelQuery = None
) -> Response:
    """Double review: the raters' agreement (Cohen's kappa) and the disagreements to settle."""
    wb = site.workbench
    tag = site.optional_tag(model)
    found = double_review.agreement(site.store.effective())
    rows = [
        {"d": d, "art": artwork_card(wb, d.artwork_id), "info": wb.row(d.drawing_id)}
        for d in found.disagreements
        if wb.is_drawing(d.drawing_id) and wb.is_artwork(d.artwork_id)
    ]
    context = {"agreement": found, "rows": rows, "tag": tag, "double": site.config.review.double}
    return site.page(request, "agreement.html", session, **context)


@router.post("/review/settle")
def review_settle(
    site: SiteDep,
    session: CheckedPost,
    form: PostedDecision,
    model: Annotated[str, Form(max_length=MAX_ID)] = "",
) -> Response:
    """Settle a disagreement: a `settle` decision (match or non-match) by this annotator."""
    pair = check_decision(site, form, model)
    if pair.decision not in double_review.REVIEWS:
        raise HTTPException(400, "a disagreement is settled by a match or a non-match")
    store_decision(site, pair, session.annotator, pair.tag, source="settle")
    target = "/review/agreement" + (f"?model={quote(pair.tag)}" if pair.tag else "")
    return RedirectResponse(target, status_code=303)


@router.get("/export.csv", dependencies=[Depends(signed_in)])
def export(site: SiteDep) -> Response:
    table = pairs_frame(site.store, allowed=set(site.workbench.sources))
    return Response(
        pairs_csv_text(table),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="pairs.csv"'},
    )
