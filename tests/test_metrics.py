"""Tests for drawmatch.retrieval.metrics: hand-computed golden values, ties, a brute-force cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from drawmatch.retrieval.metrics import (
    DEFAULT_KS,
    aggregate,
    format_table,
    metrics_from_ranks,
    relevant_ranks,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    scores_in_chunks,
)

# Two drawings (queries) x five artworks (gallery).
# q0: scores [0.1, 0.9, 0.4, 0.9, 0.6], relevant {3, 0}
#     ranking (descending, ties by index): 1 (0.9), 3 (0.9, ties with 1, larger index), 4, 2, 0
#     -> rank(3) = 1, rank(0) = 4
# q1: scores [0.5, 0.2, 0.8, 0.3, 0.7], relevant {0}
#     ranking: 2 (0.8), 4 (0.7), 0 (0.5), 3, 1 -> rank(0) = 2
SCORES = np.array(
    [
        [0.1, 0.9, 0.4, 0.9, 0.6],
        [0.5, 0.2, 0.8, 0.3, 0.7],
    ]
)
RELEVANT = [np.array([3, 0]), np.array([0])]


def test_relevant_ranks_by_hand() -> None:
    ranks = relevant_ranks(SCORES, RELEVANT)
    assert [r.tolist() for r in ranks] == [[1, 4], [2]]  # in the order the indices were given


def test_golden_metrics_by_hand() -> None:
    m = retrieval_metrics(SCORES, RELEVANT, ks=(1, 2, 3, 5))
    # MP: every pair's rank, averaged over the 3 pairs: (1 + 4 + 2) / 3 = 7/3
    assert m["MP"] == pytest.approx(7 / 3)
    # MMP: best rank per drawing, averaged over the 2 drawings: (min(1, 4) + 2) / 2 = 1.5
    assert m["MMP"] == pytest.approx(1.5)
    # R@1: q0 none of 2 in top 1 -> 0; q1 rank 2 not < 1 -> 0          => 0
    assert m["R@1"] == pytest.approx(0.0)
    # R@2: q0 rank 1 < 2 -> 1/2; q1 -> 0                                => (0.5 + 0) / 2 = 25 %
    assert m["R@2"] == pytest.approx(25.0)
    # R@3: q0 -> 1/2; q1 rank 2 < 3 -> 1                                => (0.5 + 1) / 2 = 75 %
    assert m["R@3"] == pytest.approx(75.0)
    # R@5: everything is in the top 5                                   => 100 %
    assert m["R@5"] == pytest.approx(100.0)
    # AP q0: hits at positions 2 and 5 -> precisions 1/2 and 2/5 -> (0.5 + 0.4) / 2 = 0.45
    # AP q1: hit at position 3 -> precision 1/3 -> 1/3
    # MAP = (0.45 + 1/3) / 2 = 0.391666... -> 39.1666... %
    assert m["MAP"] == pytest.approx(100 * (0.45 + 1 / 3) / 2)
    assert m["n_queries"] == 2
    assert m["n_pairs"] == 3
    assert set(m) == {"MP", "MMP", "R@1", "R@2", "R@3", "R@5", "MAP", "n_queries", "n_pairs"}


def test_default_ks() -> None:
    m = retrieval_metrics(SCORES, RELEVANT)
    assert DEFAULT_KS == (1, 5, 10, 20, 50, 100, 200, 400)
    for k in DEFAULT_KS:
        assert f"R@{k}" in m
    # k beyond the gallery size counts every relevant item
    assert m["R@400"] == pytest.approx(100.0)


def test_ties_broken_by_gallery_index() -> None:
    # items 1 and 3 tie at 0.9: the smaller index comes first
    assert relevant_ranks(SCORES[:1], [np.array([1])])[0].tolist() == [0]
    assert relevant_ranks(SCORES[:1], [np.array([3])])[0].tolist() == [1]
    # a constant row: the ranking is the gallery order, so rank == index
    flat = np.zeros((1, 6))
    assert relevant_ranks(flat, [np.array([5, 0, 2])])[0].tolist() == [5, 0, 2]
    # a three-way tie behind one better item: [0.5, 0.7, 0.5, 0.5] -> order 1, 0, 2, 3
    row = np.array([[0.5, 0.7, 0.5, 0.5]])
    assert relevant_ranks(row, [np.array([3, 0, 2, 1])])[0].tolist() == [3, 1, 2, 0]
    # MAP of the constant row with relevant {5}: position 6 -> AP 1/6
    assert retrieval_metrics(flat, [np.array([5])], ks=(1,))["MAP"] == pytest.approx(100 / 6)


def test_relevant_ranks_does_not_sort_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("relevant_ranks must not sort the score rows")

    monkeypatch.setattr(np, "argsort", boom)
    monkeypatch.setattr(np, "sort", boom)
    monkeypatch.setattr(np, "argpartition", boom)
    assert [r.tolist() for r in relevant_ranks(SCORES, RELEVANT)] == [[1, 4], [2]]


@pytest.mark.parametrize(
    ("relevant", "match"),
    [
        ([np.array([3]), np.array([], dtype=int)], r"no relevant item: \[1\]"),
        ([np.array([], dtype=int), np.array([], dtype=int)], r"no relevant item: \[0, 1\]"),
        ([np.array([5]), np.array([0])], "out of range"),
        ([np.array([-1]), np.array([0])], "out of range"),
        ([np.array([2, 2]), np.array([0])], "duplicate"),
        ([np.array([0.0]), np.array([0])], "integers"),
        ([np.array([0])], "2 queries"),
    ],
)
def test_bad_relevant_sets(relevant: list[np.ndarray], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(SCORES, relevant)


def test_bad_scores_and_ks() -> None:
    bad = SCORES.copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(bad, RELEVANT)
    with pytest.raises(ValueError, match=r"\(Q, G\)"):
        relevant_ranks(SCORES[0], RELEVANT[:1])
    with pytest.raises(ValueError, match="k must be"):
        retrieval_metrics(SCORES, RELEVANT, ks=(0, 5))
    with pytest.raises(ValueError, match="no relevant item: \\[0\\]"):
        metrics_from_ranks([np.array([], dtype=int)])


# ---------------------------------------------------------------- brute force cross-check


def brute_force(scores: np.ndarray, relevant: list[np.ndarray], ks: tuple[int, ...]) -> dict:
    """Independent reference: a full stable argsort per row and an explicit AP loop."""
    all_ranks: list[int] = []
    min_ranks: list[int] = []
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    aps: list[float] = []
    for row, rel in zip(scores, relevant):
        order = np.argsort(-row, kind="stable")  # descending, ties keep gallery order
        rel_set = {int(i) for i in rel}
        ranks = [int(np.where(order == i)[0][0]) for i in rel]
        all_ranks += ranks
        min_ranks.append(min(ranks))
        for k in ks:
            top = {int(i) for i in order[:k]}
            recalls[k].append(len(top & rel_set) / len(rel_set))
        hits, total = 0, 0.0
        for n, item in enumerate(order, start=1):
            if int(item) in rel_set:
                hits += 1
                total += hits / n  # precision@n at each relevant item
        aps.append(total / len(rel_set))
    out = {
        "MP": sum(all_ranks) / len(all_ranks),
        "MMP": sum(min_ranks) / len(min_ranks),
        "MAP": 100 * sum(aps) / len(aps),
        "n_queries": len(relevant),
        "n_pairs": len(all_ranks),
    }
    for k in ks:
        out[f"R@{k}"] = 100 * sum(recalls[k]) / len(recalls[k])
    return out


def random_case(seed: int, n_q: int = 7, n_g: int = 50, ties: bool = True):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values -> many ties
        scores = rng.integers(0, 6, size=(n_q, n_g)).astype(np.float64) / 5
    else:
        scores = rng.normal(size=(n_q, n_g))
    relevant = [rng.choice(n_g, size=int(rng.integers(1, 6)), replace=False) for _ in range(n_q)]
    return scores, relevant


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [True, False])
def test_matches_brute_force(seed: int, ties: bool) -> None:
    ks = (1, 3, 5, 10, 20, 49, 50, 100)
    scores, relevant = random_case(seed, ties=ties)
    got = retrieval_metrics(scores, relevant, ks=ks)
    want = brute_force(scores, relevant, ks)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key


def test_brute_force_agrees_with_hand_case() -> None:
    # guards the reference itself against a mistake shared with the implementation
    want = brute_force(SCORES, RELEVANT, (1, 2, 3, 5))
    assert want["MP"] == pytest.approx(7 / 3)
    assert want["MAP"] == pytest.approx(100 * (0.45 + 1 / 3) / 2)


# ---------------------------------------------------------------- embeddings, chunks


def _cosine(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return qn @ gn.T


@pytest.mark.parametrize("seed", range(3))
def test_chunked_embeddings_equal_dense(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    q = rng.normal(size=(7, 8))
    g = rng.normal(size=(50, 8))
    _, relevant = random_case(seed)
    dense = retrieval_metrics(_cosine(q, g), relevant)
    for chunk in (1, 3, 7, 1024):
        got = retrieval_metrics_from_embeddings(q, g, relevant, chunk=chunk)
        assert got == pytest.approx(dense), chunk
    # cosine: scaling rows by positive factors changes nothing
    scaled = retrieval_metrics_from_embeddings(
        q * rng.uniform(0.1, 10, size=(7, 1)),
        g * rng.uniform(0.1, 10, size=(50, 1)),
        relevant,
        chunk=3,
    )
    assert scaled == pytest.approx(dense)


def test_scores_in_chunks_blocks() -> None:
    rng = np.random.default_rng(7)
    q = rng.normal(size=(7, 4)).astype(np.float32)
    g = rng.normal(size=(5, 4)).astype(np.float32)
    blocks = list(scores_in_chunks(q, g, chunk=3))
    assert [start for start, _ in blocks] == [0, 3, 6]
    assert [b.shape for _, b in blocks] == [(3, 5), (3, 5), (1, 5)]
    full = np.concatenate([b for _, b in blocks])
    np.testing.assert_allclose(full, _cosine(q.astype(np.float64), g.astype(np.float64)), atol=1e-6)
    with pytest.raises(ValueError, match="chunk"):
        list(scores_in_chunks(q, g, chunk=0))
    with pytest.raises(ValueError, match="sizes differ"):
        list(scores_in_chunks(q, g[:, :3]))


def test_embeddings_empty_relevant_is_error() -> None:
    q = np.eye(3)
    with pytest.raises(ValueError, match=r"no relevant item: \[2\]"):
        retrieval_metrics_from_embeddings(q, q, [np.array([0]), np.array([1]), np.array([], int)])


def test_embeddings_perfect_retrieval() -> None:
    # each query equals one gallery item (cosine 1) -> rank 0 everywhere
    g = np.random.default_rng(3).normal(size=(20, 16))
    m = retrieval_metrics_from_embeddings(g[:5] * 2.0, g, [np.array([i]) for i in range(5)])
    assert m["MP"] == 0 and m["MMP"] == 0
    assert m["MAP"] == pytest.approx(100.0)
    assert m["R@1"] == pytest.approx(100.0)


# ---------------------------------------------------------------- aggregate, format


def test_aggregate_mean_and_sample_std() -> None:
    runs = [{"MAP": 10.0, "MP": 4.0}, {"MAP": 20.0, "MP": 6.0}, {"MAP": 30.0, "MP": 8.0}]
    agg = aggregate(runs)
    # MAP: mean 20; deviations -10, 0, 10 -> (100 + 0 + 100) / (3 - 1) = 100 -> std 10
    assert agg["MAP"] == pytest.approx((20.0, 10.0))
    # MP: mean 6; deviations -2, 0, 2 -> 8 / 2 = 4 -> std 2
    assert agg["MP"] == pytest.approx((6.0, 2.0))
    assert aggregate([{"MAP": 12.5}]) == {"MAP": (12.5, 0.0)}
    with pytest.raises(ValueError, match="no runs"):
        aggregate([])
    with pytest.raises(ValueError, match="keys"):
        aggregate([{"MAP": 1.0}, {"MP": 1.0}])


def test_format_table() -> None:
    m = retrieval_metrics(SCORES, RELEVANT, ks=(1, 5))
    text = format_table(m)
    lines = text.splitlines()
    assert len(lines) == len(m)
    assert lines[0].split() == ["MAP", "39.17"]
    assert "n_pairs" in text and text.splitlines()[-1].split() == ["n_pairs", "3"]
    assert any(line.split() == ["MP", "2.33"] for line in lines)
    # fixed width: the decimal points of the float rows line up
    dots = {line.index(".") for line in lines if "." in line}
    assert len(dots) == 1
    agg_text = format_table(aggregate([m, {**m, "MAP": m["MAP"] + 2.0}]))
    # MAP 39.17 and 41.17: mean 40.17, std sqrt(2) = 1.41
    assert any(line.split() == ["MAP", "40.17", "±", "1.41"] for line in agg_text.splitlines())
    assert format_table({}) == ""
