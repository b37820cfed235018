"""Retrieval losses for drawing (anchor) -> artwork (reference) training, built on
pytorch-metric-learning (PML).

Anchors are drawings, references are artworks; PML's ``ref_emb`` holds the artworks. Which pairs are
positive is decided by gallery labels (see :mod:`drawmatch.training.mining`): a reference is a positive of an
anchor when its gallery index is one of the anchor's positives, a negative otherwise. The losses
receive an explicit ``indices_tuple`` built from that mask and no labels (PML needs labels only when
it has to build the tuples itself).

Loss semantics with ``CosineSimilarity`` (s = cosine similarity, d = 1 - s the cosine distance):

- ``triplet``: per triplet ``max(0, s_an - s_ap + margin)`` = ``max(0, d_ap - d_an + margin)``,
  averaged over the triplets with a non-zero loss (PML's ``AvgNonZeroReducer``; 0 when none).
- ``contrastive``: positive pairs ``max(0, 1 - s_ap)`` = ``d_ap`` (``pos_margin=1``: pull to s=1),
  negative pairs ``max(0, s_an - (1 - margin))`` = ``max(0, margin - d_an)`` (``neg_margin = 1 -
  margin``, a *similarity* threshold: negatives are pushed until their cosine distance reaches
  ``margin``, the same margin in distance units as the triplet loss). Each part is averaged over its
  non-zero terms, and the two means are summed.

Multi-positive losses, for anchors with several relevant artworks (several photos of one object are
all relevant for one drawing); both see every positive and negative ref of an anchor at once:

- ``multi_similarity`` (Wang et al. 2019, PML defaults alpha=2, beta=50, base lambda=0.5), per anchor
  ``1/alpha log(1 + sum_p exp(-alpha (s_ap - lambda))) + 1/beta log(1 + sum_n exp(beta (s_an -
  lambda)))``, averaged over the anchors (``margin`` is not used).
- ``supcon`` (Khosla et al. 2020) with temperature t, per anchor
  ``-mean_p log(exp(s_ap / t) / sum_{r in pos u neg} exp(s_ar / t))``, averaged over the anchors
  with a non-zero loss (``margin`` is not used).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import (
    BaseMetricLossFunction,
    ContrastiveLoss,
    MultiSimilarityLoss,
    SupConLoss,
    TripletMarginLoss,
)
from torch import Tensor

from drawmatch.training import distributed
from drawmatch.training.mining import AnchorPositives, positive_mask

LOSS_MODES: tuple[str, ...] = ("triplet", "contrastive", "multi_similarity", "supcon")
PAIR_MODES: tuple[str, ...] = ("contrastive", "multi_similarity", "supcon")
"""The modes that take PML's pair tuple ``(a1, p, a2, n)`` (the others take triplets)."""


def make_loss(
    mode: str = "triplet", margin: float = 0.7, temperature: float = 0.1
) -> BaseMetricLossFunction:
    """The PML loss for ``mode`` (one of ``LOSS_MODES``) with cosine similarity.

    ``margin`` is in cosine-distance units for triplet and contrastive (see the module docstring);
    contrastive needs ``0 < margin <= 2``. ``temperature`` is SupCon's.
    """
    if mode == "multi_similarity":
        return MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5, distance=CosineSimilarity())
    if mode == "supcon":
        if temperature <= 0:
            raise ValueError(f"supcon temperature must be > 0, got {temperature}")
        return SupConLoss(temperature=temperature, distance=CosineSimilarity())
    if mode == "triplet":
        if margin < 0:
            raise ValueError(f"triplet margin must be >= 0, got {margin}")
        return TripletMarginLoss(margin=margin, distance=CosineSimilarity())
    if mode == "contrastive":
        if not 0 < margin <= 2:
            raise ValueError(f"contrastive margin must be in (0, 2], got {margin}")
        return ContrastiveLoss(pos_margin=1.0, neg_margin=1.0 - margin, distance=CosineSimilarity())
    raise ValueError(f"unknown loss mode {mode!r}; choose one of {', '.join(LOSS_MODES)}")


def batch_triplets(pos_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every (anchor, positive ref, negative ref) of ``pos_mask`` (B, R) bool -> three (T,) long.

    Ordered by anchor, then positive, then negative (row-major over (B, R, R)).
    """
    pos = pos_mask.bool()
    a, p, n = torch.where(pos[:, :, None] & ~pos[:, None, :])
    return a, p, n


def batch_pairs(pos_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PML pair tuple ``(a1, p, a2, n)`` of ``pos_mask`` (B, R) bool, each (P,) or (N,) long.

    All positive pairs ``(a1[k], p[k])`` (mask True) and all negative pairs ``(a2[k], n[k])`` (mask
    False), in row-major order.
    """
    pos = pos_mask.bool()
    a1, p = torch.where(pos)
    a2, n = torch.where(~pos)
    return a1, p, a2, n


def _indices_tuple(pos_mask: Tensor, mode: str) -> tuple[Tensor, ...]:
    if mode == "triplet":
        return batch_triplets(pos_mask)
    if mode in PAIR_MODES:
        a1, p, a2, n = batch_pairs(pos_mask)
        if len(a1) <= 1 and len(a2) <= 1 and len(a1) + len(a2) > 0:
            # PML's pair losses return 0 when every tuple part has <= 1 element (it assumes such a
            # tuple is degenerate). Listing each pair twice leaves both averaged parts unchanged.
            a1, p, a2, n = (torch.cat([t, t]) for t in (a1, p, a2, n))
        return a1, p, a2, n
    raise ValueError(f"unknown loss mode {mode!r}; choose one of {', '.join(LOSS_MODES)}")


def retrieval_step_loss(
    loss_fn: BaseMetricLossFunction, anchors: Tensor, refs: Tensor, pos_mask: Tensor, mode: str
) -> Tensor:
    """Scalar loss of ``anchors`` (B, D) against ``refs`` (R, D) for ``pos_mask`` (B, R) bool.

    Every triplet (``mode="triplet"``) or every pair (the ``PAIR_MODES``) of the mask is used;
    ``loss_fn`` is usually :func:`make_loss` ``(mode, margin)``.
    """
    if pos_mask.shape != (anchors.shape[0], refs.shape[0]):
        raise ValueError(
            f"pos_mask {tuple(pos_mask.shape)} does not match anchors "
            f"{anchors.shape[0]} x refs {refs.shape[0]}"
        )
    indices = tuple(t.to(anchors.device) for t in _indices_tuple(pos_mask, mode))
    loss: Tensor = loss_fn(anchors, indices_tuple=indices, ref_emb=refs)
    return loss


@dataclass(frozen=True)
class StepInfo:
    """What :func:`distributed_step_loss` saw, in global (gathered, rank-order) indexing.

    ``loss``: the unscaled loss value (detached scalar), equal on every rank.
    ``ref_labels`` (R,): gallery index of every gathered ref. ``pos_mask`` (B, R) bool.
    ``anchor_offset``: index of this rank's first anchor in the gathered anchors (B in all).
    ``triplets``: (a, p, n) every (anchor, positive ref, negative ref) of the gathered batch.
    ``indices``: the tuple handed to PML (``triplets`` or the pair tuple ``(a1, p, a2, n)``).
    """

    loss: Tensor
    ref_labels: Tensor
    pos_mask: Tensor
    anchor_offset: int
    world_size: int
    triplets: tuple[Tensor, Tensor, Tensor]
    indices: tuple[Tensor, ...]


def _gather_positive_sets(
    local_anchor_positives: AnchorPositives, device: torch.device
) -> tuple[list[set[int]], int]:
    """All ranks' anchor positive sets in rank order, and this rank's first anchor index."""
    rank, _ = distributed.world()
    sizes = distributed.gather_sizes(len(local_anchor_positives), device=device)
    offset = sum(sizes[:rank])
    flat = [(offset + i, int(g)) for i, pos in enumerate(local_anchor_positives) for g in pos]
    pairs = torch.tensor(flat, dtype=torch.long, device=device).reshape(-1, 2)
    all_pairs = distributed.all_gather_no_grad(pairs).cpu().tolist()
    sets: list[set[int]] = [set() for _ in range(sum(sizes))]
    for anchor, label in all_pairs:
        sets[anchor].add(label)
    return sets, offset


def distributed_step_loss(
    loss_fn: BaseMetricLossFunction,
    local_anchors: Tensor,
    local_anchor_positives: AnchorPositives,
    local_refs: Tensor,
    local_ref_labels: Tensor,
    mode: str,
) -> tuple[Tensor, StepInfo]:
    """The loss of one DDP training step over the batch gathered from all ranks.

    On each rank: ``local_anchors`` (b, D) with their positive gallery indices, and
    ``local_refs`` (r, D) (the anchors' positives and their mined negatives) with gallery labels
    ``local_ref_labels`` (r,). Anchors, positive sets and refs of all ranks are gathered in rank
    order, and the loss is computed over the whole gathered batch: every ref whose label is not
    among an anchor's positives is a negative for it (other ranks' artworks become extra
    negatives), while an artwork paired with the anchor is never its negative, whichever anchor it
    came with. Every rank gets the same value.

    Gradient scaling: only this rank's slices carry gradient, so DDP's averaging over W ranks would
    give 1/W of the single-process gradient. The returned loss is therefore
    ``L + (W - 1) * (L - L.detach())``: its value is exactly ``L`` (the single-process loss on the
    concatenated batch) and its gradient is ``W * dL``, so after DDP's all-reduce mean the gradient
    equals the single-process gradient. Do not rescale it again; without DDP averaging (manual
    all-reduce sum) divide by W. Not distributed: equals :func:`retrieval_step_loss` on the local
    batch.
    """
    if len(local_anchor_positives) != local_anchors.shape[0]:
        raise ValueError(
            f"{len(local_anchor_positives)} positive sets for {local_anchors.shape[0]} anchors"
        )
    if local_ref_labels.shape != (local_refs.shape[0],):
        raise ValueError(
            f"local_ref_labels {tuple(local_ref_labels.shape)} does not match "
            f"{local_refs.shape[0]} refs"
        )
    _, world_size = distributed.world()
    device = local_anchors.device
    anchors = distributed.all_gather_with_grad(local_anchors)
    refs = distributed.all_gather_with_grad(local_refs)
    ref_labels = distributed.all_gather_no_grad(local_ref_labels.to(device).long())
    positives, offset = _gather_positive_sets(local_anchor_positives, device)
    pos_mask = positive_mask(positives, ref_labels)
    loss = retrieval_step_loss(loss_fn, anchors, refs, pos_mask, mode)
    triplets = batch_triplets(pos_mask)
    indices = triplets if mode == "triplet" else _indices_tuple(pos_mask, mode)
    info = StepInfo(
        loss=loss.detach(),
        ref_labels=ref_labels,
        pos_mask=pos_mask,
        anchor_offset=offset,
        world_size=world_size,
        triplets=triplets,
        indices=indices,
    )
    if world_size > 1:
        loss = loss + (world_size - 1) * (loss - loss.detach())
    return loss, info


# ----------------------------------------------------------------------------------------------
# label-based losses (artist-style verification): anchors, positives and negatives are images of
# one batch, ``emb`` (N, D); positives share a label, negatives do not


def triplets_to_pairs(
    triplets: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The contrastive pairs of triplets ``(a, p, n)``: ``(a, p)`` same, ``(a, n)`` different,
    as PML's pair tuple ``(a1, p, a2, n)``."""
    a, p, n = triplets
    return a, p, a, n


def label_pairs(labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every pair ``i < j`` of a batch with ``labels`` (N,): same-label pairs ``(a1, p)`` and
    different-label pairs ``(a2, n)``, row-major."""
    labels = labels.reshape(-1)
    same = labels[:, None] == labels[None, :]
    upper = torch.ones_like(same).triu(diagonal=1)
    a1, p = torch.where(same & upper)
    a2, n = torch.where(~same & upper)
    return a1, p, a2, n


def tuple_loss(loss_fn: BaseMetricLossFunction, emb: Tensor, indices: tuple[Tensor, ...]) -> Tensor:
    """Scalar loss of ``emb`` (N, D) over explicit tuples of its rows: triplets ``(a, p, n)``
    for the triplet loss, pairs ``(a1, p, a2, n)`` for the contrastive loss (see the module
    docstring for the values: cosine distance, margin in distance units)."""
    indices = tuple(t.to(emb.device).long() for t in indices)
    if len(indices) == 4 and 0 < len(indices[0]) + len(indices[2]):
        if len(indices[0]) <= 1 and len(indices[2]) <= 1:  # see `_indices_tuple`
            indices = tuple(torch.cat([t, t]) for t in indices)
    loss: Tensor = loss_fn(emb, indices_tuple=indices)
    return loss
