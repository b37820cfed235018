"""Online hard-negative mining against a gallery embedding bank.

Labels convention: a label is a **global gallery (artwork) index** in ``[0, G)``. An anchor (a
drawing or one of its styled copies) is described by the set of gallery indices it is paired with
(its positives); every other artwork is a non-positive, hence a candidate negative.

Similarity is cosine similarity; embeddings are L2-normalised here again defensively.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from drawmatch.training import distributed

AnchorPositives = Sequence[Iterable[int]]
"""Positive gallery indices, one collection per anchor (``list[set[int]]`` or nested lists)."""

_SIM_CHUNK = 65536


def positive_mask(anchor_positives: AnchorPositives, ref_labels: Tensor) -> Tensor:
    """(B, R) bool: ``mask[i, j]`` is True when ``ref_labels[j]`` (R,) is a positive of anchor i."""
    labels = ref_labels.reshape(-1).long()
    mask = torch.zeros(
        (len(anchor_positives), labels.shape[0]), dtype=torch.bool, device=labels.device
    )
    for i, pos in enumerate(anchor_positives):
        pos_t = torch.as_tensor(
            sorted({int(p) for p in pos}), dtype=torch.long, device=labels.device
        )
        if pos_t.numel():
            mask[i] = torch.isin(labels, pos_t)
    return mask


def cosine_similarity(anchor_emb: Tensor, bank: Tensor) -> Tensor:
    """(B, G) float32 cosine similarities of ``anchor_emb`` (B, D) against ``bank`` (G, D).

    Both sides are L2-normalised; the bank (possibly fp16) is processed in chunks in float32.
    """
    a = F.normalize(anchor_emb.detach().float(), dim=1)
    out = torch.empty((a.shape[0], bank.shape[0]), dtype=torch.float32, device=a.device)
    for start in range(0, bank.shape[0], _SIM_CHUNK):
        chunk = bank[start : start + _SIM_CHUNK].to(device=a.device, dtype=torch.float32)
        out[:, start : start + chunk.shape[0]] = a @ F.normalize(chunk, dim=1).T
    return out


def extra_positives(
    anchor_positives: AnchorPositives,
    given: Sequence[int],
    per_anchor: int,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Up to ``per_anchor - 1`` more positives per anchor, to put beside its given one.

    For anchor i, the positives ``anchor_positives[i]`` other than ``given[i]`` (the artwork the
    anchor came with), in ascending order, are shuffled with ``generator`` (CPU) and the first
    ``per_anchor - 1`` kept; an anchor with fewer gets all of them. With these as extra references
    a multi-positive loss sees several relevant artworks of one drawing in a step, not only one.
    """
    if per_anchor < 1:
        raise ValueError(f"per_anchor must be >= 1, got {per_anchor}")
    if len(given) != len(anchor_positives):
        raise ValueError(f"{len(given)} given positives for {len(anchor_positives)} anchors")
    out: list[list[int]] = []
    for pos, g in zip(anchor_positives, given):
        others = sorted({int(p) for p in pos} - {int(g)})
        if per_anchor == 1 or not others:
            out.append([])
            continue
        order = torch.randperm(len(others), generator=generator).tolist()
        out.append([others[j] for j in order[: per_anchor - 1]])
    return out


@torch.no_grad()
def hardest_negatives(
    anchor_emb: Tensor,
    bank: Tensor,
    anchor_positives: AnchorPositives,
    n_hardest: int,
    generator: torch.Generator | None = None,
    first: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """Draw one hard negative gallery index per anchor -> (B,) long, on ``anchor_emb``'s device.

    For anchor i (``anchor_emb`` (B, D)), rank the bank artworks (``bank`` (G, D)) that are not in
    ``anchor_positives[i]`` by descending cosine similarity, keep the ``n_hardest`` first (all of
    them when fewer are available) and draw one uniformly with ``generator`` (a CPU generator;
    ``n_hardest=1`` returns the hardest). Equal similarities are ranked by lower gallery index first
    (stable sort). A positive is never returned; an anchor whose positives cover the whole bank is a
    ``ValueError``.

    ``first[i]``: gallery indices ranked before all others for anchor i, in their order (known
    negatives, e.g. an expert's non-matches), the mined hardest following them; an index that is
    a positive of the anchor is ignored.
    """
    if n_hardest < 1:
        raise ValueError(f"n_hardest must be >= 1, got {n_hardest}")
    n_anchors, n_bank = anchor_emb.shape[0], bank.shape[0]
    if len(anchor_positives) != n_anchors:
        raise ValueError(f"{len(anchor_positives)} positive sets for {n_anchors} anchors")
    sim = cosine_similarity(anchor_emb, bank)
    pos = positive_mask(anchor_positives, torch.arange(n_bank, device=sim.device))
    for i, p in enumerate(anchor_positives):
        bad = [int(x) for x in p if not 0 <= int(x) < n_bank]
        if bad:
            raise ValueError(f"anchor {i}: positives {bad} outside the bank [0, {n_bank})")
    available = (~pos).sum(dim=1)
    if bool((available == 0).any()):
        raise ValueError("an anchor has no non-positive artwork in the bank to use as negative")
    sim = sim.masked_fill(pos, float("-inf"))
    for i, known in enumerate(first or []):
        ranked = list(dict.fromkeys(int(g) for g in known if not pos[i, int(g)]))
        if ranked:  # above any cosine similarity (<= 1), in the given order
            n = len(ranked)
            sim[i, ranked] = 2.0 + torch.arange(n, 0, -1, dtype=sim.dtype, device=sim.device)
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    k = torch.clamp(available, max=n_hardest).cpu()
    u = torch.rand(n_anchors, generator=generator)
    pick = torch.clamp((u * k).long(), max=k - 1).to(order.device)
    return order.gather(1, pick[:, None])[:, 0].to(anchor_emb.device)


class GalleryBank:
    """Embeddings of ALL gallery artworks under the current weights, identical on every rank.

    ``embeddings``: (G, D) tensor of ``dtype`` (fp16 halves memory for large galleries) on
    ``device``, row g for gallery index g. With NCCL the device must be the rank's GPU (gathering
    runs there).
    Refresh on a schedule::

        bank.step()                      # once per optimiser step
        if bank.due(every_steps):
            bank.refresh(embed_fn, batch_size)
    """

    def __init__(
        self,
        size: int,
        dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"bank size and dim must be >= 1, got {size}, {dim}")
        self.size = size
        self.dim = dim
        self.embeddings: Tensor = torch.zeros((size, dim), dtype=dtype, device=device)
        self.refreshes = 0
        self.steps_since_refresh = 0

    def step(self, n: int = 1) -> None:
        """Count ``n`` training steps since the last refresh."""
        self.steps_since_refresh += n

    def due(self, every_steps: int) -> bool:
        """True before the first refresh, and once ``every_steps`` steps passed since the last."""
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        return self.refreshes == 0 or self.steps_since_refresh >= every_steps

    @torch.no_grad()
    def refresh(self, embed_fn: Callable[[Tensor], Tensor], batch_size: int) -> None:
        """Recompute the bank; a collective: every rank must call it.

        Each rank embeds its shard ``indices[rank::world_size]`` with ``embed_fn`` (indices (n,)
        long -> embeddings (n, D)) in batches of ``batch_size`` under ``no_grad``; the shards are
        gathered with :func:`drawmatch.training.distributed.all_gather_no_grad` so every rank ends with the
        same full bank. ``embed_fn`` must not run collectives itself (call the bare module, not the
        DDP wrapper, in eval mode): ranks may run different numbers of batches.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rank, world_size = distributed.world()
        shard = torch.arange(rank, self.size, world_size, dtype=torch.long)
        parts = [
            embed_fn(shard[s : s + batch_size]).detach()
            for s in range(0, shard.shape[0], batch_size)
        ]
        device, dtype = self.embeddings.device, self.embeddings.dtype
        local = (
            torch.cat(parts, dim=0).to(device=device, dtype=dtype)
            if parts
            else torch.zeros((0, self.dim), dtype=dtype, device=device)
        )
        if local.shape != (shard.shape[0], self.dim):
            raise ValueError(
                f"embed_fn returned {tuple(local.shape)} for {shard.shape[0]} indices "
                f"of dim {self.dim}"
            )
        emb = distributed.all_gather_no_grad(local)
        idx = distributed.all_gather_no_grad(shard.to(device))
        bank = torch.empty_like(self.embeddings)
        bank[idx] = emb
        self.embeddings = bank
        self.refreshes += 1
        self.steps_since_refresh = 0


# ----------------------------------------------------------------------------------------------
# label-based mining (artist-style verification): every image of a batch is an anchor, images of
# the same label are its positives, all others its negatives


def same_label_mask(labels: Tensor) -> Tensor:
    """(N, N) bool: ``mask[i, j]`` when ``labels[i] == labels[j]`` (N,) and ``i != j``."""
    labels = labels.reshape(-1)
    mask = labels[:, None] == labels[None, :]
    mask.fill_diagonal_(False)
    return mask


@torch.no_grad()
def batch_hard_triplets(emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Batch-hard triplets of ``emb`` (N, D) with ``labels`` (N,) -> three (T,) long tensors.

    For every anchor with at least one positive and one negative in the batch: its hardest
    positive (the least cosine-similar image of its label) and its hardest negative (the most
    cosine-similar image of another label); ties go to the lower index.
    """
    sim = cosine_similarity(emb, emb)
    pos = same_label_mask(labels.to(sim.device))
    neg = labels.reshape(-1, 1).to(sim.device) != labels.reshape(1, -1).to(sim.device)
    keep = pos.any(dim=1) & neg.any(dim=1)
    hardest_pos = sim.masked_fill(~pos, float("inf")).argmin(dim=1)
    hardest_neg = sim.masked_fill(~neg, float("-inf")).argmax(dim=1)
    anchors = torch.nonzero(keep).reshape(-1)
    return anchors, hardest_pos[anchors], hardest_neg[anchors]
