"""The train job: triplet fine-tuning on one fold with Ray Train (DDP), online hard-negative mining.

Each step a worker takes `batch_size` anchor-positive pairs (a training drawing or one of its style
copies, and its artwork). For each anchor a negative is drawn from its `n_hardest` most similar
non-positive artworks in a gallery embedding bank (all artworks, embedded with the current weights,
refreshed every epoch or every `bank_refresh_steps` steps, the refresh split across workers); the
negatives' images then go through the network with gradient, like anchors and positives; all
positives and negatives of the step, gathered across workers, are the references of the loss
(`drawmatch.training.losses.distributed_step_loss`), so the other artworks of the batch are extra negatives.

BatchNorm: `batchnorm=frozen` (default) keeps the pretrained running statistics (BN layers in eval
mode, their affine weights still train), because batches of 4 per worker give useless statistics;
`batchnorm=sync` trains them with SyncBatchNorm across workers instead.

Every epoch: validation metrics on the fold's val drawings against the whole gallery, a checkpoint
and the metrics through `ray.train.report`, early stopping on validation MAP. At the end: test
metrics of the best weights and of the pretrained model, side by side. The starting weights are the
first candidate for "best" (epoch -1): an epoch must beat them on validation MAP to be chosen.

Fine-tuning that should hold on drawings it never saw (all off by default, keys of `TrainConfig`):
- `loss`: besides `triplet` and `contrastive`, the multi-positive `multi_similarity` and `supcon`
  (`drawmatch.training.losses`); `positives_per_anchor` > 1 adds more of an anchor's positive artworks to
  the step's references (`drawmatch.training.mining.extra_positives`), so those losses see several at once.
- `train_blocks` = N > 0: only the last N blocks of the network train
  (`drawmatch.training.freezing.trunk_blocks`: the layers and the elements of its sequences, e.g.
  EfficientNet-Lite0's stem, BN, 16 MBConv blocks, head conv and BN); the others are frozen
  (`requires_grad` off, their BatchNorm statistics too).
- `l2sp` = alpha > 0: the loss gets `alpha * sum ||w - w0||^2` over the trained parameters, w0 the
  starting weights (L2-SP, Li et al. 2018), which keeps the model near the pretrained one; each
  epoch records `drift`, ||w - w0|| / ||w0|| over all parameters, whatever `l2sp` is.
- `lr_schedule`: `step` (StepLR) or `cosine` (cosine decay over all epochs, pseudo ones included).
- `pseudo_epochs` = P > 0: epochs 0..P-1 train on pseudo-pairs, "drawn" renditions of every gallery
  artwork (`drawmatch.training.pseudo_pairs`: style effects, line drawings, colour quantisation, details, warps)
  against their artwork, without annotations; the real pairs follow for `epochs` epochs. Early
  stopping does not stop a run during the pseudo stage.
- `selection`: `val` keeps the epoch with the best validation MAP (the starting weights included);
  `last` keeps the final weights and never stops early, for when the number of epochs is chosen
  across folds (the sweep, pooled validation) rather than on a fold's few validation drawings.

Reproducibility: `seed` fixes every random draw. Each step seeds torch's generator (the train
transforms) and the mining generator (negatives, extra positives) from (seed, rank, global step),
and draws its pseudo renditions from the same triple, so a resumed run repeats the steps of one
that went straight through; the samplers shuffle by (seed, epoch). Workers use deterministic
kernels and exactly `cpus_per_worker` CPU threads (at least 1), whatever OMP_NUM_THREADS they
inherit. Two runs with one seed, one config and one kind of machine give the same weights.

Each worker builds one `Trainer` (model, optimiser, scheduler, loss, bank, loader, fold data), an
`EpochTrainer` that the training harness (`drawmatch.training.harness`) runs; its progress is a
`TrainState`, which with the state dicts is a checkpoint (`TrainCheckpoint`,
`drawmatch.training.checkpoints`). A worker
that restarts (a rerun, or a worker that died: Ray Train's `max_failures`) continues from the last
checkpoint and records the restart, with the hash of the weights it restored, in `resumes`. Each
worker writes its host and pid to `runs/<run>/workers/rank-<r>.json`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from drawmatch.core import storage
from drawmatch.core.config import at_least, from_dict, redeclare, save_config, setting, to_dict
from drawmatch.core.images import open_image
from drawmatch.core.progress import Progress
from drawmatch.data import catalogue as cat
from drawmatch.data.pairs import read_negatives
from drawmatch.models.backbones import (
    backbone_spec,
    create_backbone,
    load_weights,
    resolve_model,
)
from drawmatch.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_eval_array,
    normalise,
    train_transform,
)
from drawmatch.retrieval.metrics import retrieval_metrics_from_embeddings
from drawmatch.training.checkpoints import (
    plain,
    read_final,
    write_best_model,
)
from drawmatch.training.freezing import drift, freeze_blocks, l2sp_penalty, set_train_mode
from drawmatch.training.harness import EpochTrainer, TrainedRun, fit, fit_with_ray
from drawmatch.training.pseudo_pairs import PSEUDO_EFFECTS
from drawmatch.training.run_config import TrainingRunConfig


@dataclass(frozen=True)
class TrainConfig(TrainingRunConfig):
    """Triplet fine-tuning on one fold (thesis sec. 5.1-5.4; report values as defaults). The keys
    from `temperature` on make fine-tuning hold on unseen data: multi-positive losses, extra
    positives per anchor, partial freezing, L2-SP, schedule, model selection, pseudo-pairs.
    `epochs=0` with `pseudo_epochs` > 0: a pseudo-pair stage alone, whose weights later runs
    start from (model.weights)."""

    lr: float = redeclare(TrainingRunConfig, "lr", 1e-6)
    epochs: int = redeclare(TrainingRunConfig, "epochs", 10)
    num_workers: int = redeclare(TrainingRunConfig, "num_workers", 2)
    fold_csv: str | None = setting(
        None, help="fold file made by `drawmatch split` (null: a pseudo stage alone, label-free)"
    )
    negatives_csv: str | None = setting(
        None, help="a fold's expert non-matches (negatives_XX.csv), mined first (null: none)"
    )
    loss: str = setting(
        "triplet",
        choices=("triplet", "contrastive", "multi_similarity", "supcon"),
        help="training loss",
    )
    margin: float = setting(0.7, gt=0, le=10, help="loss margin in distance units")
    lr_step_epochs: int = setting(10, ge=1, help="step schedule: epochs between lr steps")
    lr_gamma: float = setting(0.1, gt=0, le=10, help="step schedule: lr factor per step")
    n_hardest: int = setting(10, ge=1, help="a negative is drawn from the anchor's n most similar")
    bank_refresh_steps: int = setting(
        0, ge=0, help="steps between negative bank refreshes (0: epoch)"
    )
    use_styles: bool = setting(True, help="styled copies of the drawings as extra anchors")
    batchnorm: str = setting("frozen", choices=("frozen", "sync"), help="batch norm statistics")
    max_steps_per_epoch: int | None = setting(
        None, ge=1, help="cap on steps per epoch (null: none)"
    )
    max_failures: int = setting(2, ge=-1, help="worker failures retried (-1: forever)")
    temperature: float = setting(0.1, gt=0, le=100, help="temperature of multi-positive losses")
    positives_per_anchor: int = setting(1, ge=1, help="positives drawn per anchor")
    train_blocks: int = setting(0, ge=0, help="last backbone blocks trained (0: every block)")
    l2sp: float = setting(0.0, ge=0, le=1e6, help="L2-SP weight: pull towards the starting weights")
    lr_schedule: str = setting("step", choices=("step", "cosine"), help="learning rate schedule")
    selection: str = setting(
        "val", choices=("val", "last"), help="model kept: best on val, or last"
    )
    pseudo_epochs: int = setting(0, ge=0, help="epochs on pseudo-pairs made from artworks first")
    pseudo_effects: tuple[str, ...] = setting(
        PSEUDO_EFFECTS, choices=PSEUDO_EFFECTS, help="effects that make pseudo-anchors"
    )
    pseudo_detail_share: float = setting(
        0.3, ge=0, le=1, help="share of pseudo-anchors that are details"
    )
    pseudo_min_crop: float = setting(
        0.4, ge=0.1, le=1, help="smallest detail, as a share of the side"
    )
    pseudo_warp: float = setting(
        0.08, ge=0, le=0.3, help="largest corner shift of the warp (share of a side)"
    )

    def check(self) -> None:
        super().check()
        if not self.pseudo_epochs:
            at_least("epochs", self.epochs, 1)


if TYPE_CHECKING:
    from drawmatch.training.pseudo_pairs import Rendition

METRICS_FILE = "metrics.json"
WORKERS_DIR = "workers"


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class FoldData:
    """Everything one worker needs about a fold: image paths, gallery, pairs per set."""

    paths: dict[str, str]
    gallery: list[str]
    train: pd.DataFrame  # anchor_id, artwork_id, gallery_index
    positives: dict[str, set[int]]  # anchor id -> gallery indices of its artworks
    queries: dict[str, list[str]] = field(default_factory=dict)  # set -> original drawing ids
    negatives: dict[str, list[int]] = field(default_factory=dict)  # anchor id -> known negatives

    def relevant(self, split: str) -> list[np.ndarray]:
        return [np.array(sorted(self.positives[q])) for q in self.queries[split]]


FOLD_COLUMNS = ("drawing_id", "artwork_id", "set", "parent_id")


def read_fold(config: TrainConfig, known: set[str]) -> pd.DataFrame:
    """The fold file's rows (style copies only with `use_styles`), every id checked; no rows
    without `fold_csv` (a label-free pseudo stage)."""
    if not config.fold_csv:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in FOLD_COLUMNS})
    fold = storage.read_csv(config.fold_csv, dtype=str, keep_default_na=False)
    missing_cols = set(FOLD_COLUMNS) - set(fold.columns)
    if missing_cols:
        raise ValueError(f"{config.fold_csv}: missing column(s) {sorted(missing_cols)}")
    if not config.use_styles:
        fold = fold[fold["parent_id"] == ""]
    unknown = sorted(set(fold["drawing_id"]) - known) + sorted(set(fold["artwork_id"]) - known)
    if unknown:
        raise ValueError(
            f"{config.fold_csv} names {len(unknown)} id(s) that are not usable catalogue images: "
            f"{unknown[:20]}"
        )
    return fold


def check_fold_use(config: TrainConfig, train: pd.DataFrame, val_queries: list[str]) -> None:
    """Refuse a run that needs what the fold lacks: pairs to train on (`epochs` > 0) or
    validation drawings to select on (`selection=val`)."""
    where = config.fold_csv or "no fold_csv"
    if train.empty and config.epochs:
        raise ValueError(
            f"{where}: no training pairs for epochs={config.epochs} (a pseudo-pair stage alone, "
            "epochs=0, needs none)"
        )
    if not val_queries and config.selection == "val":
        raise ValueError(
            f"{where}: no validation drawings to select the best epoch on: use selection=last"
        )


def load_fold(config: TrainConfig) -> FoldData:
    """Read the catalogue, the fold file and the negatives file; check every id; map artworks
    to gallery indices. Without `fold_csv` (a pseudo-pair stage alone): the gallery only."""
    if not config.fold_csv and config.epochs:
        raise ValueError(
            "train needs fold_csv=<folds/fold_XX.csv> (make folds with `drawmatch split`); "
            "a pseudo-pair stage alone (epochs=0) runs without one"
        )
    catalogue = cat.read_catalogue(config.out)
    roots = cat.read_roots(config.out)
    usable = catalogue[cat.usable(catalogue)]
    fold = read_fold(config, set(usable["id"]))
    gallery = cat.gallery_ids(catalogue)
    position = {a: i for i, a in enumerate(gallery)}
    fold = fold[fold["artwork_id"].isin(position)]
    positives: dict[str, set[int]] = {}
    for d, a in zip(fold["drawing_id"], fold["artwork_id"]):
        positives.setdefault(d, set()).add(position[a])
    train = fold[fold["set"] == "train"][["drawing_id", "artwork_id"]].rename(
        columns={"drawing_id": "anchor_id"}
    )
    train = train.assign(gallery_index=[position[a] for a in train["artwork_id"]])
    originals = fold[fold["parent_id"] == ""]
    queries = {
        s: sorted(originals.loc[originals["set"] == s, "drawing_id"].unique())
        for s in ("train", "val", "test")
    }
    check_fold_use(config, train, queries["val"])
    negatives = known_negatives(config, catalogue, fold, position)
    wanted = set(gallery) | set(fold["drawing_id"])
    rows = usable[usable["id"].isin(wanted)]
    paths = dict(zip(rows["id"], cat.resolve_paths(rows, roots)))
    return FoldData(paths, gallery, train.reset_index(drop=True), positives, queries, negatives)


def known_negatives(
    config: TrainConfig, catalogue: pd.DataFrame, fold: pd.DataFrame, position: dict[str, int]
) -> dict[str, list[int]]:
    """The `set=train` rows of `negatives_csv`, as gallery indices per training anchor (a style
    copy gets its drawing's), in file order. An id the catalogue lacks, a verso, an artwork
    outside the gallery or a non-match that is also a pair of the fold is refused in one line."""
    if not config.negatives_csv:
        return {}
    where = config.negatives_csv
    negatives = read_negatives(where, ("set",))
    ids = set(negatives["drawing_id"]) | set(negatives["artwork_id"])
    catalogued = set(catalogue["id"])
    versos = set(catalogue.loc[catalogue["verso"].fillna(False).astype(bool), "id"])
    drawings = set(catalogue.loc[cat.originals(catalogue), "id"]) - set(position)
    outside = set(negatives["artwork_id"]) - set(position) | set(negatives["drawing_id"]) - drawings
    pairs = set(zip(fold["drawing_id"], fold["artwork_id"])) | set(
        zip(fold["parent_id"], fold["artwork_id"])
    )
    both = [
        f"{d} - {a}"
        for d, a in zip(negatives["drawing_id"], negatives["artwork_id"])
        if (d, a) in pairs
    ]
    problems = [
        (sorted(ids - catalogued), "id(s) not in the catalogue"),
        (sorted(ids & versos), "verso(s)"),
        (
            sorted(outside & catalogued - versos),
            "id(s) that are no usable drawing or gallery artwork",
        ),
        (both, "non-match(es) that are also pairs of the fold"),
    ]
    found = [f"{len(bad)} {what}: {', '.join(bad[:10])}" for bad, what in problems if bad]
    if found:
        raise ValueError(f"{where}: " + "; ".join(found))
    train = negatives[negatives["set"] == "train"]
    of_drawing: dict[str, list[int]] = {}
    for d, a in zip(train["drawing_id"], train["artwork_id"]):
        of_drawing.setdefault(d, []).append(position[a])
    anchors = fold[fold["set"] == "train"]
    return {
        anchor: of_drawing[parent or anchor]
        for anchor, parent in zip(anchors["drawing_id"], anchors["parent_id"])
        if (parent or anchor) in of_drawing
    }


class ImageLoader:
    """Loads catalogue images as tensors: train-transformed, or eval-resized (size x size) with a
    per-worker cache of the uint8 arrays (the gallery is embedded again at every bank refresh)."""

    def __init__(
        self,
        paths: dict[str, str],
        config: TrainConfig,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        cache: bool = True,
    ) -> None:
        self.paths = paths
        self.size = config.model.image_size or backbone_spec(config.model.backbone).input_size
        self.train_size = config.train_resize
        self.transform = train_transform(config.train_resize, config.train_crop, mean, std)
        self.cache: dict[str, np.ndarray] | None = {} if cache else None
        self.mean, self.std = mean, std

    def train_batch(self, ids: list[str]) -> torch.Tensor:
        """(n, 3, crop, crop) float tensors with the random train transform."""
        return torch.stack(
            [self.transform(open_image(self.paths[i], draft_size=self.train_size)) for i in ids]
        )

    def pseudo_batch(self, renditions: list[Rendition]) -> torch.Tensor:
        """(n, 3, crop, crop): each rendition rendered from its parent artwork (decoded with its
        longer side at most 1.5 x train_resize), then the random train transform."""
        from PIL import Image

        from drawmatch.augment.styles import shrink
        from drawmatch.training.pseudo_pairs import render

        out = []
        for r in renditions:
            parent = np.asarray(open_image(self.paths[r.parent_id], draft_size=self.train_size))
            parent = shrink(np.ascontiguousarray(parent), round(1.5 * self.train_size))
            out.append(self.transform(Image.fromarray(render(parent, r))))
        return torch.stack(out)

    def _eval_array(self, image_id: str) -> np.ndarray:
        if self.cache is not None and image_id in self.cache:
            return self.cache[image_id]
        arr = load_eval_array(self.paths[image_id], self.size)
        if self.cache is not None:
            self.cache[image_id] = arr
        return arr

    def eval_batch(self, ids: list[str]) -> torch.Tensor:
        """(n, 3, size, size) normalised tensors, as the embed job feeds them."""
        return normalise(np.stack([self._eval_array(i) for i in ids]), self.mean, self.std)


class PairDataset(torch.utils.data.Dataset[int]):
    """Indices of training anchor-positive pairs; images are loaded in the training loop."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


# ----------------------------------------------------------------------------------------------
# embedding and evaluation inside a worker


def embed_ids(
    net: nn.Module, loader: ImageLoader, ids: list[str], batch_size: int, device: torch.device
) -> torch.Tensor:
    """L2-normalised eval embeddings (n, D) of catalogue ids, no gradient."""
    out = []
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            x = loader.eval_batch(ids[i : i + batch_size]).to(device)
            out.append(nn.functional.normalize(net(x).float(), dim=1).cpu())
    net.train(was_training)
    if not out:  # an empty shard still has the embedding width: ranks gather it with the rest
        return torch.zeros((0, net.dim))  # type: ignore[arg-type]
    return torch.cat(out)


def sharded_embed(
    net: nn.Module, loader: ImageLoader, ids: list[str], batch_size: int, device: torch.device
) -> torch.Tensor:
    """Embeddings of `ids` (n, D), each worker embedding ids[rank::world], gathered in order."""
    from drawmatch.training.distributed import all_gather_no_grad, world

    rank, size = world()
    mine = embed_ids(net, loader, ids[rank::size], batch_size, device)
    gathered = all_gather_no_grad(mine.to(device)).cpu()
    # gathered is [rank 0 shard, rank 1 shard, ...]; put rows back in the order of `ids`.
    order = [j for r in range(size) for j in range(r, len(ids), size)]
    result = torch.empty_like(gathered)
    result[torch.tensor(order)] = gathered
    return result


def evaluate_split(
    net: nn.Module,
    loader: ImageLoader,
    data: FoldData,
    split: str,
    gallery_emb: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    queries = data.queries[split]
    if not queries:
        return {}
    query_emb = sharded_embed(net, loader, queries, config.eval_batch_size, device)
    return retrieval_metrics_from_embeddings(
        query_emb.numpy(), gallery_emb.numpy(), data.relevant(split)
    )


# ----------------------------------------------------------------------------------------------
# the trainer: one per Ray Train worker


class Trainer(EpochTrainer):
    """One worker's share of a run: model, optimiser, scheduler, loss, gallery bank, image loader
    and fold data, built once; `state` is a `TrainState`.

    Under Ray Train, `prepare_model` is `ray.train.torch.prepare_model` (DDP); without it the
    trainer runs in one process on `device` (not distributed: rank 0 of 1). A run is
    `drawmatch.training.harness.fit`::

        trainer.restore(checkpoint) or trainer.baseline()
        for epoch in range(trainer.state.epoch, config.pseudo_epochs + config.epochs):
            record, stop = trainer.run_epoch(epoch)      # train_epoch + validate + bookkeeping
            save trainer.checkpoint() ...
        summary, metrics = trainer.finish()              # test metrics of the best weights
    """

    score_key = "MAP"
    config: TrainConfig

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device | None = None,
        prepare_model: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        from drawmatch.training.losses import make_loss
        from drawmatch.training.mining import GalleryBank

        config = with_backbone_defaults(config)
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        self.data = load_fold(config)
        backbone = create_backbone(
            config.model.backbone, config.model.pretrained, config.model.pooling
        )
        if config.model.weights:
            load_weights(backbone, config.model.weights)
        self.loader = ImageLoader(self.data.paths, config, backbone.mean, backbone.std)
        self.frozen = freeze_blocks(backbone, config.train_blocks)
        if self.frozen and self.rank == 0:
            print(f"[rank 0] {len(self.frozen)} block(s) frozen, up to {self.frozen[-1]}")
        net: nn.Module = backbone
        if config.batchnorm == "sync" and self.world_size > 1:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.place(net, prepare_model)
        # the starting weights, for L2-SP and `drift` (on the device only when L2-SP needs them)
        self.start = {
            name: p.detach().clone().to(self.device if config.l2sp else "cpu")
            for name, p in self.module.named_parameters()
        }
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        self.scheduler: torch.optim.lr_scheduler.LRScheduler = make_scheduler(
            self.optimizer, config
        )
        self.loss_fn = make_loss(config.loss, config.margin, config.temperature)
        self.bank = GalleryBank(len(self.data.gallery), backbone.dim)
        self.start_state()
        # the training pairs, and the gallery artworks for the pseudo stage (one pass per epoch)
        self.sampler, self.pairs = self.batches(len(self.data.train))
        self.artwork_sampler, self.artworks = self.batches(len(self.data.gallery))
        self.generator = torch.Generator().manual_seed(step_seed(config.seed, self.rank, 0))
        self.amp = self.device.type == "cuda"

    def batches(
        self, n: int
    ) -> tuple[
        torch.utils.data.distributed.DistributedSampler[int], torch.utils.data.DataLoader[int]
    ]:
        """This worker's shuffled share of indices 0..n-1 (its sampler) in `batch_size` batches."""
        items = PairDataset(n)
        sampler: torch.utils.data.distributed.DistributedSampler[int] = (
            torch.utils.data.distributed.DistributedSampler(
                items,
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=True,
                seed=self.config.seed,
            )
        )
        return sampler, torch.utils.data.DataLoader(
            items, batch_size=self.config.batch_size, sampler=sampler
        )

    # -- building blocks

    def refresh_bank(self) -> None:
        """Embed the whole gallery with the current weights (a collective: all ranks call it)."""
        gallery, config = self.data.gallery, self.config
        self.bank.refresh(
            lambda idx: embed_ids(
                self.module,
                self.loader,
                [gallery[i] for i in idx.tolist()],
                config.eval_batch_size,
                self.device,
            ),
            batch_size=max(config.eval_batch_size * 4, 64),
        )

    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of `split`'s queries against the bank as it stands."""
        return evaluate_split(
            self.module,
            self.loader,
            self.data,
            split,
            self.bank.embeddings,
            self.config,
            self.device,
        )

    # -- a run

    @property
    def epochs(self) -> int:
        """The pseudo stage's epochs, then the real pairs'."""
        return self.config.pseudo_epochs + self.config.epochs

    def baseline(self) -> dict[str, dict[str, float]]:
        """Val and test metrics of the starting weights, which are the first candidate for best:
        a fine-tune must beat them on validation MAP."""
        if self.rank == 0:
            print(
                f"[rank 0] embedding the gallery ({len(self.data.gallery)} artworks) and scoring "
                "the starting weights"
            )
        self.refresh_bank()
        return super().baseline()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch of steps (at most `max_steps_per_epoch`), then the scheduler's step; returns
        `train_loss` (mean), `steps`, `global_step`, `mining_share` and `lr`."""
        config = self.config
        pseudo = epoch < config.pseudo_epochs
        sampler, batches = (
            (self.artwork_sampler, self.artworks) if pseudo else (self.sampler, self.pairs)
        )
        sampler.set_epoch(epoch)
        if self.bank.refreshes == 0:  # a resumed run: the bank is built with the restored weights
            self.refresh_bank()
        set_train_mode(self.model, config.batchnorm)
        progress = self.progress(epoch, len(batches))
        losses: list[float] = []
        triplets: list[int] = []
        t_mine = t_step = 0.0
        for step, idx in enumerate(batches):
            if config.max_steps_per_epoch is not None and step >= config.max_steps_per_epoch:
                break
            if config.bank_refresh_steps and self.bank.due(config.bank_refresh_steps):
                self.refresh_bank()
            t0 = time.perf_counter()
            if pseudo:
                loss, mining, n_triplets = self.pseudo_step(idx.tolist())
            else:
                loss, mining, n_triplets = self.train_step(idx.tolist())
            losses.append(loss)
            triplets.append(n_triplets)
            t_mine += mining
            t_step += time.perf_counter() - t0
            progress.update()
        self.scheduler.step()
        return {
            "stage": "pseudo" if pseudo else "pairs",
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": len(losses),
            "triplets_per_step": float(np.mean(triplets)) if triplets else 0.0,
            "global_step": self.state.step,
            "mining_share": t_mine / t_step if t_step else 0.0,
            "lr": self.scheduler.get_last_lr()[0],
        }

    def progress(self, epoch: int, batches: int) -> Progress:
        """Progress of an epoch's steps, printed by rank 0 every 30 s and at its end (steps
        done, rate, time left): an epoch takes minutes on CPUs before its report."""
        cap = self.config.max_steps_per_epoch
        total = min(batches, cap) if cap is not None else batches
        stage = "pseudo" if epoch < self.config.pseudo_epochs else "pairs"
        label = f"[rank 0] epoch {epoch} ({stage})"
        return Progress(label, total, out=print if self.rank == 0 else lambda line: None)

    def train_step(self, pair_indices: list[int]) -> tuple[float, float, int]:
        """One optimiser step on training pairs `pair_indices` (see `optimise`).
        Returns (loss, seconds spent mining, triplets in the batch gathered from all ranks)."""
        self.seed_step()
        rows = self.data.train.iloc[pair_indices]
        anchor_ids = rows["anchor_id"].tolist()
        anchors = self.loader.train_batch(anchor_ids)
        pos_sets = [self.data.positives[a] for a in anchor_ids]
        known = [self.data.negatives.get(a, []) for a in anchor_ids]
        return self.optimise(anchors, rows["gallery_index"].tolist(), pos_sets, known)

    def pseudo_step(self, artwork_indices: list[int]) -> tuple[float, float, int]:
        """One optimiser step on pseudo-pairs: a random rendition of each gallery artwork of
        `artwork_indices` against the artwork (drawn from the run's seed, rank and step, so a
        resumed run draws the same ones)."""
        from drawmatch.training.pseudo_pairs import plan_renditions

        config, gallery = self.config, self.data.gallery
        self.seed_step()
        rng = np.random.default_rng([config.seed, self.rank, self.state.step])
        renditions = plan_renditions(
            [gallery[i] for i in artwork_indices],
            1,
            rng,
            config.pseudo_effects,
            config.pseudo_detail_share,
            config.pseudo_min_crop,
            config.pseudo_warp,
        )
        anchors = self.loader.pseudo_batch(renditions)
        return self.optimise(anchors, artwork_indices, [{i} for i in artwork_indices])

    def seed_step(self) -> None:
        """Seed the step's random draws (train transforms through torch's global generator,
        mined negatives and extra positives through `generator`) from the run's seed, this
        worker's rank and the global step: a step draws the same whether the run went straight
        through or resumed from a checkpoint, and the two workers draw different crops."""
        seed = step_seed(self.config.seed, self.rank, self.state.step)
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)

    def optimise(
        self,
        anchors: torch.Tensor,
        given: list[int],
        pos_sets: list[set[int]],
        known: list[list[int]] | None = None,
    ) -> tuple[float, float, int]:
        """One optimiser step: `anchors` (b, 3, crop, crop) train-transformed images, `given` (b)
        the gallery index each came with, `pos_sets` all their positives, `known` their expert
        non-matches (mined first). Mines a hard negative per anchor in the bank, adds up to `positives_per_anchor - 1` more positives per anchor,
        forwards anchors, positives and negatives with gradient; distributed loss (+ L2-SP).
        Returns (loss, seconds spent mining, triplets in the batch gathered from all ranks)."""
        from drawmatch.training.losses import distributed_step_loss
        from drawmatch.training.mining import extra_positives, hardest_negatives

        data, loader, device, config = self.data, self.loader, self.device, self.config
        anchors = anchors.to(device)
        tm = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
            probe = nn.functional.normalize(self.module(anchors).float(), dim=1)
        negatives = hardest_negatives(
            probe.cpu(),
            self.bank.embeddings.float(),
            pos_sets,
            config.n_hardest,
            self.generator,
            first=known,
        )
        mining = time.perf_counter() - tm
        extra = [
            g
            for more in extra_positives(
                pos_sets, given, config.positives_per_anchor, self.generator
            )
            for g in more
        ]
        ref_idx = given + negatives.tolist() + extra
        images = torch.cat(
            [anchors, loader.train_batch([data.gallery[i] for i in ref_idx]).to(device)]
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
            emb = nn.functional.normalize(self.model(images).float(), dim=1)
        b = anchors.shape[0]
        loss, info = distributed_step_loss(
            self.loss_fn, emb[:b], pos_sets, emb[b:], torch.tensor(ref_idx).to(device), config.loss
        )
        total = loss + l2sp_penalty(self.module, self.start, config.l2sp) if config.l2sp else loss
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self.bank.step()
        self.state.step += 1
        return float(loss.detach()), mining, int(info.triplets[0].numel())

    def validate(self) -> dict[str, float]:
        """Refresh the bank with the current weights (for validation now, mining next epoch) and
        return the validation metrics."""
        self.refresh_bank()
        return self.evaluate("val")

    def end_epoch(
        self, epoch: int, trained: dict[str, Any], val: dict[str, float]
    ) -> tuple[dict[str, Any], bool]:
        """Book an epoch: best weights by validation MAP (`selection=last`: the latest weights),
        early stopping (not during the pseudo stage), history. Returns its record and whether
        training stops (`patience` epochs without improvement)."""
        config = self.config
        record = plain(
            {
                "epoch": epoch,
                **trained,
                **{f"val_{k}": v for k, v in val.items()},
                "drift": drift(self.module, self.start),
                "weights_hash": self.weights_hash(),
            }
        )
        stop = self.select(
            epoch,
            record,
            val.get("MAP", 0.0),
            latest=config.selection == "last",
            counts=epoch >= config.pseudo_epochs,
        )
        return record, stop

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """`train_epoch`, `validate`, `end_epoch`."""
        trained = self.train_epoch(epoch)
        return self.end_epoch(epoch, trained, self.validate())

    def epoch_metrics(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "val_MAP": record.get("val_MAP", 0.0), "finished": False}

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Test metrics of the best weights. Returns the run's summary (`metrics.json`) and the
        final metrics to report. The model keeps its latest weights (the final checkpoint's)."""
        state = self.state

        def best_test() -> dict[str, float]:
            self.refresh_bank()
            return self.evaluate("test")

        test = self.with_best_weights(best_test)
        summary = plain(
            {
                "best_epoch": state.best_epoch,
                "best_val_MAP": state.best_score,
                "history": state.history,
                "baseline": state.baseline,
                "best": {"val": state.best_val_record(), "test": test},
                "resumes": [asdict(r) for r in state.resumes],
            }
        )
        final = {"finished": True, "epoch": state.epoch - 1, "val_MAP": state.best_score}
        return summary, {**final, **{f"test_{k}": v for k, v in test.items()}}

    def restored(self) -> None:
        self.bank.refreshes = 0  # built again with the restored weights before the next step


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for one training step of one worker, from the run's seed, the rank and the
    global step (numpy's SeedSequence, so nearby triples give unrelated seeds)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint64)[0] >> 1)


def deterministic_torch(cpus: float) -> None:
    """Make a worker's arithmetic repeatable: deterministic kernels (cuDNN's autotuner off,
    torch warns where an operation has no deterministic version) and a fixed number of CPU
    threads, the CPUs reserved for the worker (at least 1), whatever OMP_NUM_THREADS the
    process inherited: the order of a sum over threads changes its last bits, and hard-negative
    mining turns such bits into other negatives."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(max(1, int(cpus)))


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """`lr_schedule`: cosine decay over all epochs (pseudo ones included), or StepLR."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.pseudo_epochs + config.epochs
        )
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma
    )


def record_worker(run_dir: str, rank: int, start_epoch: int) -> None:
    """Write `workers/rank-<r>.json` under the run directory: this worker's host and pid, so that
    the processes of one run can be told apart from those of other runs on the same hosts."""
    info = {
        "run": storage.name(run_dir),
        "rank": rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start_epoch": start_epoch,
        "started": time.time(),
    }
    path = storage.join(run_dir, WORKERS_DIR, f"rank-{rank:03d}.json")
    storage.write_bytes(path, json.dumps(info).encode())


def train_loop(config_dict: dict[str, Any]) -> None:
    """The Ray Train entry function of every worker (`drawmatch.training.harness.fit`): restore
    or start, train and report each epoch with a checkpoint (early stopping), then the test
    metrics of the best weights. Each worker records itself under the run folder."""
    import ray.train
    import ray.train.torch

    config = from_dict(TrainConfig, config_dict)
    deterministic_torch(config.cpus_per_worker)
    trainer = Trainer(config, ray.train.torch.get_device(), ray.train.torch.prepare_model)
    run_dir = storage.join(config.out, "runs", ray.train.get_context().get_experiment_name())
    fit(trainer, lambda worker: record_worker(run_dir, worker.rank, worker.state.epoch))


# ----------------------------------------------------------------------------------------------
# the driver


TrainResult = TrainedRun


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    weights = config.model.weights
    return replace(
        config,
        out=storage.absolute(config.out),
        fold_csv=storage.absolute(config.fold_csv) if config.fold_csv else None,
        negatives_csv=storage.absolute(config.negatives_csv) if config.negatives_csv else None,
        model=replace(config.model, weights=storage.absolute(weights) if weights else None),
    )


def with_backbone_defaults(config: TrainConfig) -> TrainConfig:
    """The config with the backbone's own input size and pooling where `model` leaves them null
    (`drawmatch.models.backbones.resolve_model`); the saved config then names them."""
    return replace(config, model=resolve_model(config.model))


def default_run_name(config: TrainConfig) -> str:
    fold = storage.stem(config.fold_csv or "fold")
    styles = "aug" if config.use_styles else "noaug"
    return (
        f"{config.model.backbone}-{fold}-{config.loss}-m{config.margin:g}-lr{config.lr:g}-{styles}"
    )


def run(config: TrainConfig, callbacks: list[Any] | None = None) -> TrainResult:
    """Train on one fold with Ray Train; resumes the run of the same name if it exists.

    `callbacks`: Ray Train callbacks, e.g. Tune's `TuneReportCallback` when a sweep trial runs it.
    """
    config = with_absolute_paths(config)  # workers do not share the driver's working directory
    config = with_backbone_defaults(config)
    data = load_fold(config)  # check the inputs before starting any worker
    if config.negatives_csv:
        print(
            f"train: {sum(map(len, data.negatives.values()))} expert non-match(es) of "
            f"{len(data.negatives)} training anchor(s) mined first"
        )
    name = config.run_name or default_run_name(config)
    runs = storage.join(config.out, "runs")  # Ray Train stores checkpoints here, URIs too
    run_dir = storage.join(runs, name)
    storage.makedirs(run_dir)
    save_config(config, storage.join(run_dir, "train_config.yaml"))
    result = fit_with_ray(
        train_loop,
        to_dict(config),
        config,
        runs,
        name,
        "training",
        max_failures=config.max_failures,
        callbacks=callbacks,
    )
    with result.checkpoint.as_directory() as directory:
        saved, summary = read_final(directory)
    best_model = write_best_model(
        run_dir, saved.best_model, to_dict(config.model), summary["best_epoch"]
    )
    storage.write_bytes(storage.join(run_dir, METRICS_FILE), json.dumps(summary, indent=2).encode())
    print(
        f"train {name}: best epoch {summary['best_epoch']} (val MAP "
        f"{summary['best_val_MAP']:.2f}); test metrics, pretrained vs fine-tuned:"
    )
    print(side_by_side(summary["baseline"].get("test", {}), summary["best"]["test"]))
    print(f"best weights: {best_model} (use with `drawmatch embed --weights {best_model}`)")
    return TrainResult(run_dir, best_model, summary)


def side_by_side(baseline: dict[str, float], tuned: dict[str, float]) -> str:
    lines = [f"{'metric':<10}{'pretrained':>12}{'fine-tuned':>12}"]
    for key in tuned:
        if key.startswith("n_"):
            continue
        lines.append(f"{key:<10}{baseline.get(key, float('nan')):>12.2f}{tuned[key]:>12.2f}")
    return "\n".join(lines)
