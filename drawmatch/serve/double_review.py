"""Double review: each candidate shown to two different annotators who do not see each other's
decision, their agreement (Cohen's kappa over the pairs both decided) and the disagreements left
to settle.

Read from the effective decisions of the annotation store (undone ones left out): an annotator's
review of a pair is their latest workbench decision on it (`match` or `non-match`; a skip is no
review). The first two annotators to review a pair are its two raters; a disagreement is settled
by a later `settle` decision or by a third annotator's review.
"""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.data.annotations import IMPORTED, Decision, cohen_kappa

Pair = tuple[str, str]
REVIEWS = ("match", "non-match")


def latest_by_annotator(effective: list[Decision]) -> dict[Pair, dict[str, Decision]]:
    """pair -> annotator -> their latest workbench decision on it (skips included), oldest
    first within a pair."""
    found: dict[Pair, dict[str, Decision]] = {}
    for d in effective:
        if d.source == "workbench":
            by = found.setdefault((d.drawing_id, d.artwork_id), {})
            by.pop(d.annotator, None)  # re-inserted last: the dict stays in decision order
            by[d.annotator] = d
    return found


def _reviews(by: dict[str, Decision]) -> list[Decision]:
    """The reviews (match or non-match) of one pair, oldest first."""
    return sorted((d for d in by.values() if d.decision in REVIEWS), key=lambda d: d.seq)


def queue_state(effective: list[Decision], annotator: str) -> tuple[set[Pair], dict[Pair, int]]:
    """What `annotator`'s double-review queue leaves out, and what it shows last: (pairs they
    reviewed, pairs two others reviewed, known pairs: imported or settled; pairs they skipped ->
    the skip's `seq`)."""
    decided = {(d.drawing_id, d.artwork_id) for d in effective if d.source in (IMPORTED, "settle")}
    skipped: dict[Pair, int] = {}
    for pair, by in latest_by_annotator(effective).items():
        own = by.get(annotator)
        if (own is not None and own.decision in REVIEWS) or len(_reviews(by)) >= 2:
            decided.add(pair)
        elif own is not None and own.decision == "skip":
            skipped[pair] = own.seq
    return decided, {p: s for p, s in skipped.items() if p not in decided}


@dataclass(frozen=True)
class Disagreement:
    """A pair its two raters decided differently, and how it was settled (None: not yet)."""

    drawing_id: str
    artwork_id: str
    first: Decision
    second: Decision
    settled: Decision | None


@dataclass(frozen=True)
class Agreement:
    """The two raters' agreement over the pairs both reviewed."""

    pairs: int  # pairs with two raters
    agreed: int
    kappa: float | None  # None: no pair yet, or one label throughout
    disagreements: list[Disagreement]

    @property
    def open(self) -> list[Disagreement]:
        return [d for d in self.disagreements if d.settled is None]


def agreement(effective: list[Decision]) -> Agreement:
    """Cohen's kappa of the first and the second rater of every pair two annotators reviewed,
    and the pairs they disagree on (settled by a later settle decision or a third review)."""
    first: list[str] = []
    second: list[str] = []
    disagreements = []
    settles: dict[Pair, list[Decision]] = {}
    for d in effective:
        if d.source == "settle":
            settles.setdefault((d.drawing_id, d.artwork_id), []).append(d)
    for pair, by in latest_by_annotator(effective).items():
        reviews = _reviews(by)
        if len(reviews) < 2:
            continue
        a, b = reviews[0], reviews[1]
        first.append(a.decision)
        second.append(b.decision)
        if a.decision != b.decision:
            later = [d for d in [*reviews[2:], *settles.get(pair, [])] if d.seq > b.seq]
            settled = max(later, key=lambda d: d.seq) if later else None
            disagreements.append(Disagreement(pair[0], pair[1], a, b, settled))
    agreed = sum(x == y for x, y in zip(first, second))
    return Agreement(len(first), agreed, cohen_kappa(first, second), disagreements)
