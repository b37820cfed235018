"""Mining, positive masks, index tuples and the PML-backed losses on hand-built tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drawmatch.training.losses import (
    batch_pairs,
    batch_triplets,
    distributed_step_loss,
    make_loss,
    retrieval_step_loss,
)
from drawmatch.training.mining import GalleryBank, hardest_negatives, positive_mask

# 6 unit vectors in 2-D at known angles (degrees): gallery index i is at ANGLES[i].
ANGLES = [0.0, 20.0, 45.0, 90.0, 135.0, 180.0]


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


BANK = torch.tensor([unit(a) for a in ANGLES])


def test_hardest_one_is_most_similar_non_positive() -> None:
    # anchor at 0 deg: nearest are 0 (positive), then 20 deg (index 1)
    # anchor at 100 deg: nearest are 90 (index 3, positive), 135 (index 4, 35 deg away)
    # anchor at 40 deg with positives {2, 1}: next nearest is 0 deg (index 0, 40 deg away)
    # not unit length: normalised inside
    anchors = torch.tensor([unit(0.0), unit(100.0), unit(40.0)]) * 3.0
    got = hardest_negatives(anchors, BANK, [{0}, {3}, {2, 1}], n_hardest=1)
    assert got.dtype == torch.long
    assert got.tolist() == [1, 4, 0]
    # without positives the most similar artwork itself is the hardest
    assert hardest_negatives(anchors, BANK, [set(), set(), set()], 1).tolist() == [0, 3, 2]


def test_draws_cover_exactly_the_n_hardest_and_never_a_positive() -> None:
    anchor = torch.tensor([unit(0.0)])
    gen = torch.Generator().manual_seed(0)
    draws = [
        int(hardest_negatives(anchor, BANK, [{0, 2}], 3, generator=gen)[0]) for _ in range(300)
    ]
    # non-positives by similarity to 0 deg: 1 (20), 3 (90), 4 (135), 5 (180) -> 3 hardest: 1, 3, 4
    assert set(draws) == {1, 3, 4}
    counts = np.bincount(draws, minlength=6)
    assert counts[[1, 3, 4]].min() > 60  # roughly uniform (expected 100 each)


def test_known_negatives_are_mined_first_then_the_hardest() -> None:
    """Anchor at 0 deg, positive {0}: the bank ranks 1 (20), 2 (45), 3 (90), 4 (135), 5 (180).
    Known negatives [5, 4] go before them in that order: n_hardest=1 always gives 5, the least
    similar artwork; n_hardest=3 draws from {5, 4, 1} (the known ones, then the hardest mined);
    a known negative that is a positive is ignored; an anchor without known ones mines as
    before."""
    anchors = torch.tensor([unit(0.0), unit(0.0)])
    gen = torch.Generator().manual_seed(0)
    got = hardest_negatives(anchors, BANK, [{0}, {0}], 1, gen, first=[[5, 4], []])
    assert got.tolist() == [5, 1]
    draws = [
        int(hardest_negatives(anchors[:1], BANK, [{0}], 3, gen, first=[[5, 4]])[0])
        for _ in range(300)
    ]
    assert set(draws) == {5, 4, 1}
    assert np.bincount(draws, minlength=6)[[5, 4, 1]].min() > 60  # uniform over the three
    assert hardest_negatives(anchors[:1], BANK, [{0}], 1, gen, first=[[0, 3]]).tolist() == [3]


def test_reproducible_with_generator() -> None:
    anchors = torch.tensor([unit(a) for a in (5.0, 60.0, 170.0, 100.0)])
    pos = [{0}, {2}, {5}, set()]
    a = hardest_negatives(anchors, BANK, pos, 4, generator=torch.Generator().manual_seed(7))
    b = hardest_negatives(anchors, BANK, pos, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_fewer_non_positives_than_n() -> None:
    bank = BANK[:3]
    anchor = torch.tensor([unit(10.0)])
    gen = torch.Generator().manual_seed(1)
    draws = {int(hardest_negatives(anchor, bank, [[0, 1]], 5, generator=gen)[0]) for _ in range(50)}
    assert draws == {2}
    draws = {int(hardest_negatives(anchor, bank, [[1]], 10, generator=gen)[0]) for _ in range(100)}
    assert draws == {0, 2}
    with pytest.raises(ValueError, match="no non-positive"):
        hardest_negatives(anchor, bank, [{0, 1, 2}], 1)
    with pytest.raises(ValueError, match="outside the bank"):
        hardest_negatives(anchor, bank, [{3}], 1)


def test_ties_go_to_lower_index_and_fp16_bank() -> None:
    bank = torch.tensor([unit(90.0), unit(30.0), unit(0.0), unit(30.0)])
    anchor = torch.tensor([unit(30.0)])
    # indices 1 and 3 are identical and tie for the hardest: the lower index wins
    assert hardest_negatives(anchor, bank, [set()], 1).tolist() == [1]
    assert hardest_negatives(anchor, bank, [{1}], 1).tolist() == [3]
    assert hardest_negatives(anchor, bank.half(), [{1, 3}], 1).tolist() == [2]


def test_positive_mask_and_index_tuples_by_hand() -> None:
    mask = positive_mask([{2}, [0, 5]], torch.tensor([5, 2, 2, 7]))
    assert mask.tolist() == [[False, True, True, False], [True, False, False, False]]
    a, p, n = batch_triplets(mask)
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == [
        (0, 1, 0),
        (0, 1, 3),
        (0, 2, 0),
        (0, 2, 3),
        (1, 0, 1),
        (1, 0, 2),
        (1, 0, 3),
    ]
    a1, p1, a2, n2 = batch_pairs(mask)
    assert list(zip(a1.tolist(), p1.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 0)]
    assert list(zip(a2.tolist(), n2.tolist(), strict=True)) == [
        (0, 0),
        (0, 3),
        (1, 1),
        (1, 2),
        (1, 3),
    ]


# Fixed tiny embeddings (not normalised; the cosine distance normalises them).
ANCHORS = torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.0, 0.4, 1.0]])
REFS = torch.tensor(
    [[0.9, 0.1, 0.1], [0.2, 1.0, 0.1], [0.1, 0.2, 1.0], [1.0, 1.0, 0.0], [-1.0, 0.1, 0.2]]
)
REF_LABELS = torch.tensor([10, 11, 12, 13, 14])
POSITIVES = [{10}, {11}, {12, 13}]


def _cos_np(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    an = a.numpy().astype(np.float64)
    bn = b.numpy().astype(np.float64)
    an /= np.linalg.norm(an, axis=1, keepdims=True)
    bn /= np.linalg.norm(bn, axis=1, keepdims=True)
    return an @ bn.T


def _mean_nonzero(x: list[float]) -> float:
    nz = [v for v in x if v > 0]
    return float(np.mean(nz)) if nz else 0.0


def triplet_reference(anchors, refs, positives, ref_labels, margin) -> tuple[float, int, int]:
    """Mean over non-zero max(0, s_an - s_ap + margin); also the zero / non-zero counts."""
    s = _cos_np(anchors, refs)
    losses = []
    for i, pos in enumerate(positives):
        for j, lj in enumerate(ref_labels.tolist()):
            for k, lk in enumerate(ref_labels.tolist()):
                if lj in pos and lk not in pos:
                    losses.append(max(0.0, s[i, k] - s[i, j] + margin))
    return _mean_nonzero(losses), sum(v == 0 for v in losses), sum(v > 0 for v in losses)


def contrastive_reference(anchors, refs, positives, ref_labels, margin) -> float:
    s = _cos_np(anchors, refs)
    pos_l, neg_l = [], []
    for i, pos in enumerate(positives):
        for j, lj in enumerate(ref_labels.tolist()):
            if lj in pos:
                pos_l.append(max(0.0, 1.0 - s[i, j]))
            else:
                neg_l.append(max(0.0, s[i, j] - (1.0 - margin)))
    return _mean_nonzero(pos_l) + _mean_nonzero(neg_l)


@pytest.mark.parametrize("margin", [0.1, 0.7])
def test_triplet_loss_matches_hand_formula(margin: float) -> None:
    expected, n_zero, n_nonzero = triplet_reference(ANCHORS, REFS, POSITIVES, REF_LABELS, margin)
    assert n_zero > 0 and n_nonzero > 0  # the case exercises the non-zero averaging
    mask = positive_mask(POSITIVES, REF_LABELS)
    got = retrieval_step_loss(make_loss("triplet", margin), ANCHORS, REFS, mask, "triplet")
    assert got.ndim == 0
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_triplet_loss_hand_value() -> None:
    # one anchor at 0 deg, positive at 60 deg (s=0.5), negative at 30 deg (s=cos30)
    a = torch.tensor([unit(0.0)])
    r = torch.tensor([unit(60.0), unit(30.0)])
    mask = torch.tensor([[True, False]])
    got = retrieval_step_loss(make_loss("triplet", 0.7), a, r, mask, "triplet")
    assert float(got) == pytest.approx(math.cos(math.radians(30)) - 0.5 + 0.7, rel=1e-6)
    # all triplets satisfied -> 0, and still differentiable
    a.requires_grad_(True)
    easy = retrieval_step_loss(make_loss("triplet", 0.1), a, r.flip(0), mask, "triplet")
    assert float(easy.detach()) == 0.0
    easy.backward()


@pytest.mark.parametrize("margin", [0.3, 0.7, 1.2])
def test_contrastive_loss_matches_independent_formula(margin: float) -> None:
    expected = contrastive_reference(ANCHORS, REFS, POSITIVES, REF_LABELS, margin)
    mask = positive_mask(POSITIVES, REF_LABELS)
    loss_fn = make_loss("contrastive", margin)
    got = retrieval_step_loss(loss_fn, ANCHORS, REFS, mask, "contrastive")
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_contrastive_single_pair_each_is_not_zeroed() -> None:
    # PML zeroes a pair tuple whose parts all have <= 1 element; ours lists them twice
    a = torch.tensor([unit(0.0)])
    r = torch.tensor([unit(60.0), unit(30.0)])
    got = retrieval_step_loss(
        make_loss("contrastive", 0.7), a, r, torch.tensor([[True, False]]), "contrastive"
    )
    expected = (1 - 0.5) + max(0.0, math.cos(math.radians(30)) - 0.3)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_make_loss_semantics_and_errors() -> None:
    c = make_loss("contrastive", 0.7)
    assert c.pos_margin == 1.0 and c.neg_margin == pytest.approx(0.3)
    assert make_loss().margin == 0.7
    with pytest.raises(ValueError, match="triplet, contrastive"):
        make_loss("arcface")
    with pytest.raises(ValueError, match="margin"):
        make_loss("contrastive", 2.5)
    mask = positive_mask(POSITIVES, REF_LABELS)
    with pytest.raises(ValueError, match="triplet, contrastive"):
        retrieval_step_loss(make_loss(), ANCHORS, REFS, mask, "ntxent")


@pytest.mark.parametrize("mode", ["triplet", "contrastive"])
def test_step_loss_not_distributed_equals_retrieval_loss(mode: str) -> None:
    loss_fn = make_loss(mode, 0.7)
    anchors = ANCHORS.clone().requires_grad_(True)
    loss, info = distributed_step_loss(loss_fn, anchors, POSITIVES, REFS, REF_LABELS, mode)
    mask = positive_mask(POSITIVES, REF_LABELS)
    expected = retrieval_step_loss(loss_fn, ANCHORS, REFS, mask, mode)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert info.world_size == 1 and info.anchor_offset == 0
    assert torch.equal(info.ref_labels, REF_LABELS)
    assert torch.equal(info.pos_mask, mask)
    assert all(torch.equal(x, y) for x, y in zip(info.triplets, batch_triplets(mask), strict=True))
    loss.backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0


def test_gallery_bank_single_process_and_schedule() -> None:
    table = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    calls: list[list[int]] = []

    def embed(idx: torch.Tensor) -> torch.Tensor:
        calls.append(idx.tolist())
        return table[idx] * 2.0

    bank = GalleryBank(7, 4)
    assert bank.due(5) and bank.refreshes == 0
    bank.refresh(embed, batch_size=3)
    assert torch.equal(bank.embeddings, table * 2.0)
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]
    assert bank.refreshes == 1 and not bank.due(2)
    bank.step()
    assert not bank.due(2)
    bank.step()
    assert bank.due(2)
    half = GalleryBank(7, 4, dtype=torch.float16)
    half.refresh(embed, batch_size=10)
    assert half.embeddings.dtype == torch.float16 and half.steps_since_refresh == 0
    with pytest.raises(ValueError, match="embed_fn returned"):
        GalleryBank(7, 5).refresh(embed, batch_size=4)
