"""What one annotator may see of the decisions outside the review card: in double review
(`review.double`), another annotator's workbench decision on a pair still in double review is
hidden, on drawing and artwork pages and in the drawing and artwork grids alike.

A pair is still in double review while it has a workbench decision (an undone one included),
no imported or settle decision, and fewer than two annotators' reviews (`match` or `non-match`).
On such a pair an annotator sees only their own decisions; once two annotators have reviewed
it, everyone sees every decision, and pairs whose two reviews disagree are listed as
`disputed` until a settle decision or a third review settles them.
"""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.data.annotations import IMPORTED, Decision
from drawmatch.serve.double_review import Pair, agreement, latest_by_annotator

KNOWN_SOURCES = (IMPORTED, "settle")


def effective_of(history: list[Decision]) -> list[Decision]:
    """The decisions of `history` (oldest first) that no undo row of it cancels."""
    undone = {d.undoes for d in history if d.decision == "undo"}
    return [d for d in history if d.decision != "undo" and d.seq not in undone]


def in_double_review(history: list[Decision]) -> set[Pair]:
    """The pairs of `history` (every row of each pair, undo rows included) still in double
    review: a workbench decision, no imported or settle one, fewer than two reviews."""
    effective = effective_of(history)
    known = {(d.drawing_id, d.artwork_id) for d in effective if d.source in KNOWN_SOURCES}
    reviewed_twice = {
        pair
        for pair, by in latest_by_annotator(effective).items()
        if sum(d.decision in ("match", "non-match") for d in by.values()) >= 2
    }
    touched = {(d.drawing_id, d.artwork_id) for d in history if d.source == "workbench"}
    return touched - known - reviewed_twice


@dataclass(frozen=True)
class Visible:
    """The decisions one annotator may see: `current` the latest visible decision of each pair,
    `history` every visible row (oldest first), `disputed` the pairs whose two reviews disagree
    and are not settled yet."""

    current: dict[Pair, Decision]
    history: list[Decision]
    disputed: set[Pair]


def visible(history: list[Decision], annotator: str, double: bool) -> Visible:
    """What `annotator` may see of `history` (every row of the pairs shown, oldest first): all of
    it, or in double review (`double`) all but the others' decisions on pairs still in double
    review."""
    hidden = in_double_review(history) if double else set()
    shown = [
        d for d in history if (d.drawing_id, d.artwork_id) not in hidden or d.annotator == annotator
    ]
    current = {(d.drawing_id, d.artwork_id): d for d in effective_of(shown)}
    disputed = (
        {(d.drawing_id, d.artwork_id) for d in agreement(effective_of(history)).open}
        if double
        else set()
    )
    return Visible(current, shown, disputed)


def drawing_states(current: dict[Pair, Decision]) -> dict[str, str]:
    """drawing id -> `match` if any of its pairs' current decision is a match, else `annotated`
    (the grid's badges and annotation filter, as `AnnotationStore.drawing_states`)."""
    states: dict[str, str] = {}
    for (drawing, _artwork), d in current.items():
        if d.decision == "match" or drawing not in states:
            states[drawing] = "match" if d.decision == "match" else "annotated"
    return states
