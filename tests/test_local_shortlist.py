"""The visual-word shortlist with Hamming embedding: idf, signatures, norms and weights against
hand computations, the inverted file's scores against a brute-force double loop over descriptor
pairs, and a detail cut from one of three real (OpenCV-drawn) artworks shortlisted with that
artwork first."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drawmatch.models.local_features import Features, extract
from drawmatch.retrieval.local_shortlist import (
    HAMMING_SIGMA,
    HAMMING_THRESHOLD,
    WordIndex,
    build_word_index,
    hamming_weight,
    idf_weights,
    load_word_index,
    pack_bits,
    postings,
    save_word_index,
    word_index_for,
)
from drawmatch.retrieval.region_search import RegionSearcher, RegionSearchParams, shortlist_for


def test_idf_signatures_weights_and_norms_equal_a_hand_computation() -> None:
    # 3 artworks over 3 words: artwork 0 holds words 0, 0, 1; artwork 1 words 1, 2; 2 word 2 x4
    assigned = [np.array([0, 0, 1]), np.array([1, 2]), np.array([2, 2, 2, 2])]
    idf = idf_weights(np.array([1, 2, 2]), 3)
    assert idf == pytest.approx([math.log(4), math.log(2.5), math.log(2.5)], rel=1e-6)
    # a word in no artwork gets idf 0, one in all log 2
    assert idf_weights(np.array([0, 3]), 3) == pytest.approx([0.0, math.log(2)])
    # bit b of a signature is column b: 1 + 4 = 5; 2 + 8 = 10; all 64 set
    flags = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], bool)
    assert pack_bits(flags).tolist() == [5, 10]
    assert int(pack_bits(np.ones((1, 64), bool))[0]) == 2**64 - 1
    # weights: 1 for equal signatures, exp(-1) at sigma bits apart, 0 past the threshold
    w = hamming_weight(np.array([0, int(HAMMING_SIGMA), HAMMING_THRESHOLD, HAMMING_THRESHOLD + 1]))
    expected = [1.0, math.exp(-1), math.exp(-(HAMMING_THRESHOLD**2) / HAMMING_SIGMA**2), 0.0]
    assert w == pytest.approx(expected)
    # the inverted file: word 1's postings are artworks 0 and 1; norms sqrt(sum of idf^2)
    encoded = [(a, np.arange(len(a), dtype=np.uint64)) for a in assigned]
    start, image, signature, norm = postings(encoded, idf)
    assert start.tolist() == [0, 2, 4, 9]
    assert image[start[1] : start[2]].tolist() == [0, 1]
    assert signature[start[1] : start[2]].tolist() == [2, 0]  # artwork 0's third descriptor
    i0, i1 = math.log(4), math.log(2.5)
    hand = [math.sqrt(2 * i0**2 + i1**2), math.sqrt(2 * i1**2), math.sqrt(4 * i1**2)]
    assert norm == pytest.approx(hand)


def brute_force(query: tuple, artworks: list[tuple], idf: np.ndarray) -> np.ndarray:
    """Each artwork's score by a double loop over (query descriptor, artwork descriptor) pairs."""
    sigma, out = HAMMING_SIGMA, []
    for words, sigs in artworks:
        total = sum(
            float(idf[qw]) ** 2 * math.exp(-(bin(int(qs) ^ int(s)).count("1") ** 2) / sigma**2)
            for qw, qs in zip(*query)
            for w, s in zip(words, sigs)
            if qw == w and bin(int(qs) ^ int(s)).count("1") <= HAMMING_THRESHOLD
        )
        norm = math.sqrt(sum(float(idf[w]) ** 2 for w in words)) or 1.0
        out.append(total / norm)
    return np.array(out)


def test_scores_through_the_inverted_file_equal_a_brute_force_double_loop() -> None:
    rng = np.random.default_rng(0)
    n_words, bits = 6, 64
    # descriptors whose RootSIFT lies on a word's centroid (unit vector e_w) plus a small
    # perturbation in the other dimensions that sets their signature bits
    projection = np.linalg.qr(rng.standard_normal((128, 128)))[0][:bits].astype(np.float32)
    centroids = np.eye(n_words, 128, dtype=np.float32)

    def descriptors(words: np.ndarray) -> np.ndarray:
        d = np.abs(rng.normal(0, 0.3, (len(words), 128))).astype(np.float32)
        d[np.arange(len(words)), words] = 1.0
        return d**2  # RootSIFT is sqrt(d / |d|_1): squares keep the shape

    arts = [rng.integers(0, n_words, int(rng.integers(1, 25))) for _ in range(12)]
    descs = [descriptors(a) for a in arts]
    index = WordIndex(
        [str(i) for i in range(12)], centroids, np.ones(n_words, np.float32), projection,
        np.zeros((n_words, bits), np.float32), np.zeros(n_words + 1, np.int64),
        np.zeros(0, np.int32), np.zeros(0, np.uint64), np.ones(12),
    )  # fmt: skip
    index.medians = rng.normal(0, 0.01, (n_words, bits)).astype(np.float32)
    encoded = [index.encode(d) for d in descs]
    assert all((w == a).all() for (w, _s), a in zip(encoded, arts))  # nearest words as built
    doc_freq = np.zeros(n_words, np.int64)
    for a in arts:
        doc_freq[np.unique(a)] += 1
    index.idf = idf_weights(doc_freq, 12)
    index.start, index.image, index.signature, index.norm = postings(encoded, index.idf)
    query_words = rng.integers(0, n_words, 15)
    query = descriptors(query_words)
    q = Features(np.zeros((15, 2), np.float32), query, 10, 10)
    q_words, q_sigs = index.encode(query)
    expected = brute_force((q_words, q_sigs), encoded, index.idf)
    apart = [
        bin(int(qs) ^ int(s)).count("1")
        for words, sigs in encoded
        for qw, qs in zip(q_words, q_sigs)
        for w, s in zip(words, sigs)
        if qw == w
    ]
    assert min(apart) <= HAMMING_THRESHOLD < max(apart)  # pairs on both sides of the threshold
    assert expected.max() > 0 and (expected == 0).sum() < len(expected)  # matches and misses
    assert index.scores(q) == pytest.approx(expected, rel=1e-5, abs=1e-9)


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
    for name in (
        "centroids",
        "idf",
        "projection",
        "medians",
        "start",
        "image",
        "signature",
        "norm",
    ):
        assert np.array_equal(getattr(back, name), getattr(index, name)), name
    first = word_index_for(tmp_path, ids, feats, 32)
    assert len(list(tmp_path.glob("words-he64-32-*.npz"))) == 1
    again = word_index_for(tmp_path, ids, feats, 32)
    assert np.array_equal(again.signature, first.signature)
    fewer = word_index_for(tmp_path, ids[:2], feats, 32)  # another gallery: another file
    assert fewer.ids == ids[:2] and set(fewer.image.tolist()) == {0, 1}
    assert len(list(tmp_path.glob("words-he64-32-*.npz"))) == 2


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
