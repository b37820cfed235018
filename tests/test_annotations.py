"""The annotation store on its own: known pairs imported once, undo as a new row, the review
queue's order (skipped pairs last, most uncertain first), Cohen's kappa by hand, the export's
merge of imported pairs with the workbench's decisions."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from drawmatch.data.annotations import (
    AnnotationStore,
    cohen_kappa,
    export_counts,
    negatives_frame,
    pairs_frame,
    read_known_pairs,
)
from drawmatch.data.pairs import PairsError
from drawmatch.serve import double_review
from drawmatch.serve.review_queue import Candidates, ReviewQueue, known_match_threshold


@pytest.fixture
def store(tmp_path) -> AnnotationStore:
    return AnnotationStore(tmp_path / "annotations.sqlite")


def known(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["drawing_id", "artwork_id"])


def catalogue() -> pd.DataFrame:
    rows = [
        ("d1", "drawing", False, "ok"),
        ("d2", "drawing", False, "ok"),
        ("d9_V", "drawing", True, "ok"),
        ("bad", "drawing", False, "error"),
        ("a1", "artwork", False, "ok"),
        ("a2", "artwork", False, "ok"),
    ]
    return pd.DataFrame(rows, columns=["id", "collection", "verso", "status"])


# -- known pairs -----------------------------------------------------------------------------


def test_known_pairs_are_imported_once_and_never_over_a_decision(store):
    store.add("d2", "a2", "non-match", "Ada")
    pairs = known(("d1", "a1"), ("d2", "a2"))
    assert store.import_pairs("pairs.csv", pairs) == (1, 0, 1)
    assert store.import_pairs("pairs.csv", pairs) == (0, 1, 1)  # served again: nothing added
    assert store.count() == 2
    current = {(d.drawing_id, d.artwork_id): d for d in store.current()}
    assert current["d1", "a1"].source == "imported" and current["d1", "a1"].annotator == "pairs.csv"
    assert current["d2", "a2"].decision == "non-match"  # the expert's rejection stands


def test_a_pairs_file_naming_a_verso_or_an_unknown_id_is_refused(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("drawing_id,artwork_id\nd1,a1\nd2,a2\n")
    [(name, pairs)] = read_known_pairs([str(good)], catalogue())
    assert name == "good.csv" and len(pairs) == 2
    verso = tmp_path / "verso.csv"
    verso.write_text("drawing_id,artwork_id\nd1,a1\nd9_V,a2\nbad,a1\n")
    with pytest.raises(
        PairsError, match=r"2 id\(s\) that are versos or images in error.*bad, d9_V"
    ):
        read_known_pairs([str(good), str(verso)], catalogue())
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("drawing_id,artwork_id\nd7,a1\n")
    with pytest.raises(PairsError, match="1 unknown drawing id"):
        read_known_pairs([str(unknown)], catalogue())
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("drawing_id,artwork_id\na1,d1\n")
    with pytest.raises(PairsError, match="wrong column"):
        read_known_pairs([str(swapped)], catalogue())


# -- undo ------------------------------------------------------------------------------------


def test_undo_walks_back_one_decision_at_a_time_and_deletes_nothing(store):
    store.add("d1", "a1", "match", "Ada")
    store.add("d1", "a1", "non-match", "Ada")  # changed her mind
    store.add("d2", "a1", "skip", "Ada")
    store.add("d2", "a2", "match", "Grace")

    _row, undone = store.undo("Ada")
    assert (undone.drawing_id, undone.artwork_id, undone.decision) == ("d2", "a1", "skip")
    assert ("d2", "a1") not in store.skipped_pairs()
    _row, undone = store.undo("Ada")  # again: the decision before, back to her first one
    assert undone.decision == "non-match"
    assert store.current_by_pair("d1")["a1"].decision == "match"
    store.undo("Ada")
    assert "a1" not in store.current_by_pair("d1")  # undecided again
    with pytest.raises(ValueError, match="nothing to undo"):
        store.undo("Ada")
    assert store.count() == 7  # four decisions, three undo rows: nothing deleted
    assert [d.decision for d in store.history()].count("undo") == 3
    assert store.current_by_pair("d2")["a2"].annotator == "Grace"  # another's is untouched


def test_undo_with_nothing_to_undo_and_never_of_an_import(store):
    with pytest.raises(ValueError, match="nothing to undo"):
        store.undo("Ada")
    store.import_pairs("pairs.csv", known(("d1", "a1")))
    with pytest.raises(ValueError, match="nothing to undo"):
        store.undo("pairs.csv")


def test_undoing_a_later_decision_restores_the_earlier_one_by_someone_else(store):
    store.add("d1", "a1", "match", "Ada")
    store.add("d1", "a1", "non-match", "Grace")
    store.undo("Grace")
    assert store.current_by_pair("d1")["a1"].annotator == "Ada"
    assert store.drawing_states() == {"d1": "match"}


def test_a_store_from_before_undo_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, drawing_id TEXT NOT NULL,"
        " artwork_id TEXT NOT NULL, decision TEXT NOT NULL CHECK (decision IN ('match',"
        " 'non-match', 'skip')), annotator TEXT NOT NULL, time TEXT NOT NULL, model TEXT,"
        " rank INTEGER, distance REAL, note TEXT NOT NULL DEFAULT '');"
        "INSERT INTO decisions (drawing_id, artwork_id, decision, annotator, time, note)"
        " VALUES ('d1', 'a1', 'match', 'Ada', '2024-01-01T00:00:00', 'same pose');"
    )
    conn.commit()
    conn.close()
    store = AnnotationStore(path)
    [row] = store.current()
    assert (row.decision, row.note, row.source) == ("match", "same pose", "workbench")
    store.undo("Ada")
    assert store.current() == [] and store.count() == 2


# -- the review queue ------------------------------------------------------------------------


def queue() -> tuple[ReviewQueue, Candidates]:
    table = pd.DataFrame(
        {
            "drawing_id": ["d1", "d1", "d2", "d2", "d3"],
            "artwork_id": ["a1", "a2", "a1", "a3", "a2"],
            "rank": [1, 2, 1, 2, 1],
            "distance": [0.10, 0.40, 0.20, 0.50, 0.30],
        }
    )
    cands = Candidates.from_table(table)
    return ReviewQueue({"m": cands}), cands


def pairs_of(entries: list[tuple[str, str, int, float]]) -> list[tuple[str, str]]:
    return [(d, a) for d, a, _r, _dist in entries]


def test_skipped_pairs_come_back_at_the_end_earliest_skipped_first(store):
    review, _ = queue()
    store.add("d2", "a1", "skip", "Ada")  # 0.20
    store.add("d1", "a1", "skip", "Ada")  # 0.10, skipped later
    store.add("d3", "a2", "match", "Ada")  # 0.30: decided, never again
    order = review.next("m", store.decided_pairs(), store.skipped_pairs(), n=10)
    assert pairs_of(order) == [("d1", "a2"), ("d2", "a3"), ("d2", "a1"), ("d1", "a1")]
    assert review.progress("m", store.decided_pairs()) == (1, 5)


def test_most_uncertain_first_is_nearest_the_median_distance_of_known_matches(store):
    review, cands = queue()
    store.import_pairs("pairs.csv", known(("d2", "a1")))  # distance 0.20
    store.add("d2", "a3", "match", "Ada")  # distance 0.50
    threshold = known_match_threshold(cands, store.matching_pairs())
    assert threshold == pytest.approx(0.35)  # median of 0.20 and 0.50
    order = review.next(
        "m", store.decided_pairs(), store.skipped_pairs(), 10, "uncertain", threshold
    )
    # |0.40 - 0.35| = 0.05, |0.30 - 0.35| = 0.05 (tie: closest first), |0.10 - 0.35| = 0.25
    assert pairs_of(order) == [("d3", "a2"), ("d1", "a2"), ("d1", "a1")]
    assert known_match_threshold(cands, set()) is None


def calibrated_queue() -> tuple[ReviewQueue, Candidates]:
    """Candidates with a calibrated confidence as batch search writes them (one without)."""
    table = pd.DataFrame(
        {
            "drawing_id": ["d1", "d1", "d2", "d2", "d3"],
            "artwork_id": ["a1", "a2", "a1", "a3", "a2"],
            "rank": [1, 2, 1, 2, 1],
            "distance": [0.10, 0.40, 0.20, 0.50, 0.30],
            "confidence": [0.30, 0.90, 0.55, 0.90, np.nan],
            "likely_copy": pd.array([False, True, False, True, pd.NA], dtype="boolean"),
        }
    )
    cands = Candidates.from_table(table)
    return ReviewQueue({"m": cands}), cands


def test_likely_copies_first_by_confidence_ties_closest_first_none_last(store):
    review, cands = calibrated_queue()
    assert review.has_confidence("m")
    order = review.next("m", set(), {}, 10, "likely")
    # 0.90 (distance 0.40), 0.90 (0.50: tie, closest first), 0.55, 0.30, then no confidence
    assert pairs_of(order) == [("d1", "a2"), ("d2", "a3"), ("d2", "a1"), ("d1", "a1"), ("d3", "a2")]
    assert cands.confidence_of("d1", "a2") == (pytest.approx(0.90), True)
    assert cands.confidence_of("d2", "a1") == (pytest.approx(0.55), False)
    assert cands.confidence_of("d3", "a2") == (None, False)
    # decided pairs left out, skipped ones last, as in the other orders
    store.add("d2", "a1", "match", "Ada")
    store.add("d1", "a2", "skip", "Ada")
    order = review.next("m", store.decided_pairs(), store.skipped_pairs(), 10, "likely")
    assert pairs_of(order) == [("d2", "a3"), ("d1", "a1"), ("d3", "a2"), ("d1", "a2")]
    # closest first is still by distance
    closest = review.next("m", set(), {}, 10, "closest")
    assert pairs_of(closest) == [
        ("d1", "a1"),
        ("d2", "a1"),
        ("d3", "a2"),
        ("d1", "a2"),
        ("d2", "a3"),
    ]


def test_most_uncertain_first_by_confidence_nearest_one_half():
    review, _ = calibrated_queue()
    # |p - 0.5|: 0.55 -> 0.05, 0.30 -> 0.20, 0.90 -> 0.40 twice (closest first), none last;
    # the known matches' median distance (0.35) is not used when there is a confidence
    order = review.next("m", set(), {}, 10, "uncertain", 0.35)
    assert pairs_of(order) == [("d2", "a1"), ("d1", "a1"), ("d1", "a2"), ("d2", "a3"), ("d3", "a2")]


def test_without_confidence_likely_falls_back_to_closest_and_orders_are_checked():
    review, cands = queue()
    assert not review.has_confidence("m") and cands.confidence_of("d1", "a1") == (None, False)
    likely = review.next("m", set(), {}, 10, "likely")
    assert pairs_of(likely) == pairs_of(review.next("m", set(), {}, 10, "closest"))
    with pytest.raises(ValueError, match="order must be one of likely, closest, uncertain"):
        review.next("m", set(), {}, 1, "random")


# -- double review ---------------------------------------------------------------------------


def test_cohen_kappa_by_hand():
    # 10 pairs: both match 4, both non-match 3, first match / second non-match 2, the reverse 1.
    first = ["m"] * 4 + ["n"] * 3 + ["m"] * 2 + ["n"]
    second = ["m"] * 4 + ["n"] * 3 + ["n"] * 2 + ["m"]
    # observed 7/10; chance: first says m 6/10, second 5/10 -> 0.6*0.5 + 0.4*0.5 = 0.5
    assert cohen_kappa(first, second) == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert cohen_kappa(["m", "n"], ["m", "n"]) == pytest.approx(1.0)
    assert cohen_kappa(["m", "n"], ["n", "m"]) == pytest.approx(-1.0)
    assert cohen_kappa(["m", "m"], ["m", "m"]) is None  # one label throughout: undefined
    assert cohen_kappa([], []) is None


def test_agreement_of_two_annotators_and_settling_a_disagreement(store):
    # three pairs agreed (2 match, 1 non-match), one disagreement; one pair seen by Ada alone,
    # twice: one annotator is never two raters
    for d, a, first, second in [
        ("d1", "a1", "match", "match"),
        ("d2", "a1", "match", "match"),
        ("d3", "a1", "non-match", "non-match"),
        ("d4", "a1", "match", "non-match"),
    ]:
        store.add(d, a, first, "Ada")
        store.add(d, a, second, "Grace")
    store.add("d5", "a1", "match", "Ada")
    store.add("d5", "a1", "non-match", "Ada")
    found = double_review.agreement(store.effective())
    assert (found.pairs, found.agreed) == (4, 3)
    # Ada: 3 m / 1 n, Grace: 2 m / 2 n; observed 3/4, chance 3/4*2/4 + 1/4*2/4 = 1/2
    assert found.kappa == pytest.approx((0.75 - 0.5) / 0.5)
    [open_one] = found.open
    assert (open_one.drawing_id, open_one.first.annotator, open_one.second.annotator) == (
        "d4",
        "Ada",
        "Grace",
    )
    store.add("d4", "a1", "non-match", "Lin", source="settle")
    assert double_review.agreement(store.effective()).open == []
    assert store.current_by_pair("d4")["a1"].source == "settle"


def test_double_review_queue_shows_a_pair_to_two_different_annotators(store):
    store.add("d1", "a1", "match", "Ada")
    store.add("d1", "a2", "skip", "Ada")
    decided, skipped = double_review.queue_state(store.effective(), "Ada")
    assert decided == {("d1", "a1")} and skipped == {("d1", "a2"): 2}
    decided, skipped = double_review.queue_state(store.effective(), "Grace")
    assert decided == set() and skipped == {}  # Grace still sees both
    store.add("d1", "a1", "non-match", "Grace")
    decided, _ = double_review.queue_state(store.effective(), "Lin")
    assert ("d1", "a1") in decided  # two reviews: no third one asked for


# -- export ----------------------------------------------------------------------------------


def test_export_merges_imports_and_decisions_latest_wins(store):
    store.import_pairs("pairs.csv", known(("d1", "a1"), ("d2", "a1"), ("d9_V", "a1")))
    store.add("d2", "a1", "non-match", "Ada", model="m", rank=3, distance=0.25)  # rejects one
    store.add("d1", "a2", "match", "Ada")
    store.add("d2", "a2", "skip", "Ada")
    allowed = {"d1", "d2", "a1", "a2"}
    pairs = pairs_frame(store, allowed)
    assert list(zip(pairs["drawing_id"], pairs["artwork_id"])) == [("d1", "a1"), ("d1", "a2")]
    negatives = negatives_frame(store, allowed)
    assert negatives.to_dict("records")[0] == {
        **negatives.to_dict("records")[0],
        "drawing_id": "d2",
        "artwork_id": "a1",
        "annotator": "Ada",
        "source": "workbench",
        "rank": 3,
        "distance": 0.25,
    }
    counts = export_counts(store, allowed)
    assert (counts.imported_kept, counts.decided_matches, counts.non_matches) == (1, 1, 1)
    assert (counts.rejected_imports, counts.skipped, counts.left_out) == (1, 1, 1)
    assert np.isfinite(negatives["distance"]).all()
