"""The visual-word shortlist: tf-idf weights against a hand computation, and a detail cut from one of
three real (OpenCV-drawn) artworks shortlisted with that artwork first."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drawmatch.models.local_features import Features, extract
from drawmatch.retrieval.local_shortlist import (
    WordIndex,
    build_word_index,
    idf_weights,
    inverted_file,
    load_word_index,
    save_word_index,
    tfidf_vector,
    word_index_for,
)
from drawmatch.retrieval.region_search import RegionSearcher, RegionSearchParams, shortlist_for


def dense(words: np.ndarray, idf: np.ndarray) -> np.ndarray:
    found, weights = tfidf_vector(words, idf)
    row = np.zeros(len(idf), np.float32)
    row[found] = weights
    return row


def test_tf_idf_weights_equal_a_hand_computation() -> None:
    # 3 images over 3 words: image 0 holds words 0, 0, 1; image 1 words 1, 2; image 2 word 2 x4
    assigned = [np.array([0, 0, 1]), np.array([1, 2]), np.array([2, 2, 2, 2])]
    doc_freq = np.array([1, 2, 2])
    idf = idf_weights(doc_freq, 3)
    assert idf == pytest.approx([math.log(4), math.log(2.5), math.log(2.5)], rel=1e-6)
    m = np.stack([dense(a, idf) for a in assigned])
    # image 0: sqrt(2) * log(1 + 3/1) and sqrt(1) * log(1 + 3/2), then L2-normalised
    a, b = math.sqrt(2) * math.log(4), math.log(2.5)
    assert m[0] == pytest.approx([a / math.hypot(a, b), b / math.hypot(a, b), 0.0], rel=1e-5)
    # image 1: log 2.5 twice -> 1/sqrt(2) each
    assert m[1] == pytest.approx([0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-5)
    # image 2: one word, four times: burstiness (sqrt) does not matter after normalisation
    assert m[2] == pytest.approx([0.0, 0.0, 1.0], rel=1e-6)
    # a word in no image gets idf 0, one in all log 2
    assert idf_weights(np.array([0, 3]), 3) == pytest.approx([0.0, math.log(2)])
    # the inverted file: word 1's postings are images 0 and 1 with their weights
    start, image, weight = inverted_file([tfidf_vector(x, idf) for x in assigned], 3)
    assert start.tolist() == [0, 1, 3, 5]
    assert image[start[1] : start[2]].tolist() == [0, 1]
    assert weight[start[1] : start[2]] == pytest.approx([m[0, 1], m[1, 1]])


def test_scores_through_the_inverted_file_equal_dense_cosines() -> None:
    rng = np.random.default_rng(0)
    assigned = [rng.integers(0, 20, int(rng.integers(1, 30))) for _ in range(15)]
    doc_freq = np.zeros(20, np.int64)
    for a in assigned:
        doc_freq[np.unique(a)] += 1
    idf = idf_weights(doc_freq, 15)
    start, image, weight = inverted_file([tfidf_vector(a, idf) for a in assigned], 20)
    index = WordIndex(
        [str(i) for i in range(15)], np.eye(20, 128, dtype=np.float32), idf, start, image, weight
    )
    query = rng.integers(0, 20, 12)
    # descriptors whose RootSIFT lies on the query's words' centroids (unit vectors e_w)
    desc = np.zeros((12, 128), np.float32)
    desc[np.arange(12), query] = 1.0
    expected = np.stack([dense(a, idf) for a in assigned]) @ dense(query, idf)
    assert index.scores(Features(np.zeros((12, 2), np.float32), desc, 10, 10)) == pytest.approx(
        expected, abs=1e-6
    )


def test_burstiness_damps_a_repeated_word() -> None:
    # without the square root, the word repeated 9 times would weigh 9x the other; with it, 3x
    _words, weights = tfidf_vector(np.array([0] * 9 + [1]), np.ones(2, np.float32))
    assert weights[0] / weights[1] == pytest.approx(3.0, rel=1e-6)


def artwork(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A textured picture of random filled shapes and lines (SIFT finds hundreds of keypoints)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(5, 40))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, colour, -1)
        else:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(5, 40))), colour, -1)
        x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.line(img, (x, y), (x2, y2), colour, int(rng.integers(1, 4)))
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def gallery() -> tuple[list[str], dict, list[Image.Image]]:
    images = [artwork(seed) for seed in (1, 2, 3)]
    ids = ["a", "b", "c"]
    feats = {a: extract(img, "sift", 800, 2000) for a, img in zip(ids, images)}
    return ids, feats, images


def test_a_detail_shortlists_its_artwork_first(
    gallery: tuple[list[str], dict, list[Image.Image]],
) -> None:
    ids, feats, images = gallery
    index = build_word_index(ids, feats, words=1024, seed=0)
    assert len(index.idf) == 1024 and len(index.start) == 1025
    for j, img in enumerate(images):
        # a detail of a third of the artwork's side, enlarged as a child draws it bigger
        w, h = img.size
        detail = img.crop((w // 3, h // 3, 2 * w // 3, 2 * h // 3)).resize((320, 240))
        scores = index.scores(extract(detail, "sift", 400, 500))
        assert int(np.argmax(scores)) == j
        assert index.shortlist(extract(detail, "sift", 400, 500), 2)[0] == j
        # strictly ahead (not a tie broken by position)
        assert scores[j] > np.delete(scores, j).max()


def test_word_index_saved_and_reused_only_for_the_same_features(
    gallery: tuple[list[str], dict, list[Image.Image]], tmp_path: Path
) -> None:
    ids, feats, _images = gallery
    index = build_word_index(ids, feats, words=32, seed=0)
    save_word_index(index, str(tmp_path / "w.npz"))
    back = load_word_index(str(tmp_path / "w.npz"))
    assert back.ids == ids
    assert np.array_equal(back.weight, index.weight) and np.array_equal(back.image, index.image)
    first = word_index_for(tmp_path, ids, feats, 32)
    assert len(list(tmp_path.glob("words-32-*.npz"))) == 1
    again = word_index_for(tmp_path, ids, feats, 32)
    assert np.array_equal(again.weight, first.weight)
    fewer = word_index_for(tmp_path, ids[:2], feats, 32)  # another gallery: another file
    assert fewer.ids == ids[:2] and set(fewer.image.tolist()) == {0, 1}
    assert len(list(tmp_path.glob("words-32-*.npz"))) == 2


def test_candidates_of_each_shortlist(gallery: tuple[list[str], dict, list[Image.Image]]) -> None:
    ids, feats, images = gallery
    searcher = RegionSearcher.__new__(RegionSearcher)  # the candidates only: no stored run
    words = build_word_index(ids, feats, words=1024, seed=0)
    query = extract(images[2].crop((100, 100, 260, 220)), "sift", 400, 500)
    fused = np.array([0.9, 0.5, 0.1], np.float32)  # the embeddings prefer artwork 0
    for shortlist, expected in (("fused", [0]), ("words", [2]), ("both", [0, 2]), ("auto", [2])):
        searcher.params = RegionSearchParams(verify_top=1, shortlist=shortlist)
        searcher.words = None if shortlist == "fused" else words
        assert searcher.candidates(fused, query).tolist() == expected
    # auto with verify_top covering the 3 artworks: every artwork verified, best fused first
    searcher.params = RegionSearchParams(verify_top=3, shortlist="auto")
    assert searcher.candidates(fused, query).tolist() == [0, 1, 2]


def test_auto_shortlist_is_words_only_beyond_verify_top() -> None:
    assert shortlist_for("auto", 500, 500) == "fused"  # the whole gallery is verified
    assert shortlist_for("auto", 501, 500) == "words"
    assert shortlist_for("auto", 10, 0) == "words"
    for chosen in ("fused", "words", "both"):
        assert shortlist_for(chosen, 10, 500) == shortlist_for(chosen, 10_000, 500) == chosen
