"""The train job: triplet fine-tuning on one fold with Ray Train (DDP), online hard-negative mining.

Each step a worker takes `batch_size` anchor-positive pairs (a training drawing or one of its style
copies, and its artwork). For each anchor a negative is drawn from its `n_hardest` most similar
non-positive artworks in a gallery embedding bank (all artworks, embedded with the current weights,
refreshed every epoch or every `bank_refresh_steps` steps, the refresh split across workers); the
negatives' images then go through the network with gradient, like anchors and positives; all
positives and negatives of the step, gathered across workers, are the references of the loss
(`drawmatch.losses.distributed_step_loss`), so the other artworks of the batch are extra negatives.

BatchNorm: `batchnorm=frozen` (default) keeps the pretrained running statistics (BN layers in eval
mode, their affine weights still train), because batches of 4 per worker give useless statistics;
`batchnorm=sync` trains them with SyncBatchNorm across workers instead.

Every epoch: validation metrics on the fold's val drawings against the whole gallery, a checkpoint
and the metrics through `ray.train.report`, early stopping on validation MAP. At the end: test
metrics of the best weights and of the pretrained model, side by side. The starting weights are the
first candidate for "best" (epoch -1): an epoch must beat them on validation MAP to be chosen.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from drawmatch import catalogue as cat
from drawmatch import storage
from drawmatch.backbones import create_backbone, load_weights
from drawmatch.images import open_image
from drawmatch.metrics import retrieval_metrics_from_embeddings
from drawmatch.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_eval_array,
    normalise,
    train_transform,
)
from drawmatch.settings import TrainConfig, from_dict, save_config, to_dict

CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "best_model.pt"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"


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

    def relevant(self, split: str) -> list[np.ndarray]:
        return [np.array(sorted(self.positives[q])) for q in self.queries[split]]


def load_fold(config: TrainConfig) -> FoldData:
    """Read the catalogue and the fold file; check every id; map artworks to gallery indices."""
    if not config.fold_csv:
        raise ValueError(
            "train needs fold_csv=<folds/fold_XX.csv> (make folds with `drawmatch split`)"
        )
    catalogue = cat.read_catalogue(config.out)
    roots = cat.read_roots(config.out)
    fold = storage.read_csv(config.fold_csv, dtype=str, keep_default_na=False)
    missing_cols = {"drawing_id", "artwork_id", "set", "parent_id"} - set(fold.columns)
    if missing_cols:
        raise ValueError(f"{config.fold_csv}: missing column(s) {sorted(missing_cols)}")
    if not config.use_styles:
        fold = fold[fold["parent_id"] == ""]
    usable = catalogue[cat.usable(catalogue)]
    known = set(usable["id"])
    unknown = sorted(set(fold["drawing_id"]) - known) + sorted(set(fold["artwork_id"]) - known)
    if unknown:
        raise ValueError(
            f"{config.fold_csv} names {len(unknown)} id(s) that are not usable catalogue images: "
            f"{unknown[:20]}"
        )
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
    if train.empty:
        raise ValueError(f"{config.fold_csv} has no training pairs")
    originals = fold[fold["parent_id"] == ""]
    queries = {
        s: sorted(originals.loc[originals["set"] == s, "drawing_id"].unique())
        for s in ("train", "val", "test")
    }
    wanted = set(gallery) | set(fold["drawing_id"])
    rows = usable[usable["id"].isin(wanted)]
    paths = dict(zip(rows["id"], cat.resolve_paths(rows, roots)))
    return FoldData(paths, gallery, train.reset_index(drop=True), positives, queries)


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
        self.size = config.model.image_size
        self.train_size = config.train_resize
        self.transform = train_transform(config.train_resize, config.train_crop, mean, std)
        self.cache: dict[str, np.ndarray] | None = {} if cache else None
        self.mean, self.std = mean, std

    def train_batch(self, ids: list[str]) -> torch.Tensor:
        """(n, 3, crop, crop) float tensors with the random train transform."""
        return torch.stack(
            [self.transform(open_image(self.paths[i], draft_size=self.train_size)) for i in ids]
        )

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
# the loop run by every Ray Train worker


def set_train_mode(model: nn.Module, batchnorm: str) -> None:
    """Train mode, except BatchNorm layers in eval mode when their statistics are frozen."""
    model.train()
    if batchnorm == "frozen":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


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
    from drawmatch.distributed import all_gather_no_grad, world

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


def best_val_record(state: dict[str, Any]) -> dict[str, Any]:
    """Validation record of the best epoch; epoch -1 is the starting (pretrained) model."""
    if state["best_epoch"] >= 0:
        return dict(state["history"][state["best_epoch"]])
    return {"epoch": -1, **{f"val_{k}": v for k, v in state["baseline"].get("val", {}).items()}}


def train_loop(config_dict: dict[str, Any]) -> None:
    """One Ray Train worker: DDP triplet training with online mining, per-epoch validation,
    checkpoints, early stopping; final test metrics of the best epoch and the pretrained model."""
    import ray.train
    import ray.train.torch

    from drawmatch.distributed import world
    from drawmatch.losses import distributed_step_loss, make_loss
    from drawmatch.mining import GalleryBank, hardest_negatives

    config = from_dict(TrainConfig, config_dict)
    rank, world_size = world()
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device()
    data = load_fold(config)

    backbone = create_backbone(config.model.backbone, config.model.pretrained, config.model.pooling)
    if config.model.weights:
        load_weights(backbone, config.model.weights)
    loader = ImageLoader(data.paths, config, backbone.mean, backbone.std)
    net: nn.Module = backbone
    if config.batchnorm == "sync" and world_size > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    model: nn.Module = ray.train.torch.prepare_model(net)
    module: nn.Module = model.module if hasattr(model, "module") else model  # type: ignore[assignment]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma
    )
    loss_fn = make_loss(config.loss, config.margin)
    bank = GalleryBank(len(data.gallery), module.dim)  # type: ignore[arg-type]

    def refresh_bank() -> None:
        bank.refresh(
            lambda idx: embed_ids(
                module,
                loader,
                [data.gallery[i] for i in idx.tolist()],
                config.eval_batch_size,
                device,
            ),
            batch_size=max(config.eval_batch_size * 4, 64),
        )

    state: dict[str, Any] = {
        "epoch": 0,
        "best_map": -1.0,
        "best_epoch": -1,
        "bad_epochs": 0,
        "history": [],
        "baseline": {},
    }
    best_state = copy.deepcopy(module.state_dict())
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            saved = torch.load(
                Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=False
            )
        module.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best_state = saved["best_model"]
        state = saved["state"]
        print(f"[rank {rank}] resumed from epoch {state['epoch']}")
    else:
        refresh_bank()
        state["baseline"] = {
            s: evaluate_split(module, loader, data, s, bank.embeddings, config, device)
            for s in ("val", "test")
        }
        # The starting weights are the first candidate: a fine-tune must beat them on val.
        state["best_map"] = state["baseline"]["val"].get("MAP", -1.0)

    def report(
        metrics: dict[str, Any], model_state: dict[str, Any], summary: dict[str, Any] | None = None
    ) -> None:
        """`ray.train.report` with a checkpoint written by rank 0 (and the summary at the end)."""
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                saved = {
                    "model": model_state,
                    "best_model": best_state,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "state": state,
                    "config": config_dict,
                }
                torch.save(saved, Path(directory) / CHECKPOINT_FILE)
                if summary is not None:
                    (Path(directory) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)

    sampler: torch.utils.data.distributed.DistributedSampler[int] = (
        torch.utils.data.distributed.DistributedSampler(
            PairDataset(len(data.train)),
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=config.seed,
        )
    )
    pairs_loader = torch.utils.data.DataLoader(
        PairDataset(len(data.train)), batch_size=config.batch_size, sampler=sampler
    )
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    amp = device.type == "cuda"

    for epoch in range(int(state["epoch"]), config.epochs):
        sampler.set_epoch(epoch)
        if bank.refreshes == 0:  # a resumed run: the bank is built with the restored weights
            refresh_bank()
        set_train_mode(model, config.batchnorm)
        losses: list[float] = []
        t_mine = t_step = 0.0
        for step, idx in enumerate(pairs_loader):
            if config.max_steps_per_epoch is not None and step >= config.max_steps_per_epoch:
                break
            if config.bank_refresh_steps and bank.due(config.bank_refresh_steps):
                refresh_bank()
            t0 = time.perf_counter()
            rows = data.train.iloc[idx.tolist()]
            anchor_ids = rows["anchor_id"].tolist()
            pos_sets = [data.positives[a] for a in anchor_ids]
            anchors = loader.train_batch(anchor_ids).to(device)
            tm = time.perf_counter()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                probe = nn.functional.normalize(module(anchors).float(), dim=1)
            negatives = hardest_negatives(
                probe.cpu(), bank.embeddings.float(), pos_sets, config.n_hardest, generator
            )
            t_mine += time.perf_counter() - tm
            neg_ids = [data.gallery[i] for i in negatives.tolist()]
            images = torch.cat(
                [
                    anchors,
                    loader.train_batch(rows["artwork_id"].tolist()).to(device),
                    loader.train_batch(neg_ids).to(device),
                ]
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                emb = nn.functional.normalize(model(images).float(), dim=1)
            b = len(anchor_ids)
            ref_labels = torch.cat([torch.tensor(rows["gallery_index"].tolist()), negatives])
            loss, _info = distributed_step_loss(
                loss_fn, emb[:b], pos_sets, emb[b:], ref_labels.to(device), config.loss
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bank.step()
            losses.append(float(loss.detach()))
            t_step += time.perf_counter() - t0
        scheduler.step()

        refresh_bank()  # with this epoch's weights: validation now, mining next epoch
        val = evaluate_split(module, loader, data, "val", bank.embeddings, config, device)
        val_map = val.get("MAP", 0.0)
        improved = val_map > state["best_map"]
        if improved:
            state.update(best_map=val_map, best_epoch=epoch, bad_epochs=0)
            best_state = copy.deepcopy(module.state_dict())
        else:
            state["bad_epochs"] += 1
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": len(losses),
            "mining_share": t_mine / t_step if t_step else 0.0,
            "lr": scheduler.get_last_lr()[0],
            **{f"val_{k}": v for k, v in val.items()},
        }
        state["history"].append(record)
        state["epoch"] = epoch + 1
        stop = state["bad_epochs"] >= config.patience
        report({**record, "val_MAP": val_map, "finished": False}, module.state_dict())
        if stop:
            break

    latest_state = copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    refresh_bank()
    test = evaluate_split(module, loader, data, "test", bank.embeddings, config, device)
    summary = {
        "best_epoch": state["best_epoch"],
        "best_val_MAP": state["best_map"],
        "history": state["history"],
        "baseline": state["baseline"],
        "best": {"val": best_val_record(state), "test": test},
    }
    final = {"finished": True, "epoch": state["epoch"] - 1, "val_MAP": state["best_map"]}
    report({**final, **{f"test_{k}": v for k, v in test.items()}}, latest_state, summary)


# ----------------------------------------------------------------------------------------------
# the driver


@dataclass
class TrainResult:
    run_dir: str
    best_model: str
    summary: dict[str, Any]


def with_absolute_paths(config: TrainConfig) -> TrainConfig:
    weights = config.model.weights
    return replace(
        config,
        out=storage.absolute(config.out),
        fold_csv=storage.absolute(config.fold_csv) if config.fold_csv else None,
        model=replace(config.model, weights=storage.absolute(weights) if weights else None),
    )


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
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from drawmatch.rayutil import init_ray

    config = with_absolute_paths(config)  # workers do not share the driver's working directory
    load_fold(config)  # check the inputs before starting any worker
    name = config.run_name or default_run_name(config)
    runs = storage.join(config.out, "runs")  # Ray Train stores checkpoints here, URIs too
    run_dir = storage.join(runs, name)
    storage.makedirs(run_dir)
    save_config(config, storage.join(run_dir, "train_config.yaml"))
    init_ray(config.ray)
    resources = {"CPU": config.cpus_per_worker}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=to_dict(config),
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=runs,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"training run {name} failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    with result.checkpoint.as_directory() as directory:
        saved = torch.load(
            Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=False
        )
        summary = json.loads((Path(directory) / SUMMARY_FILE).read_text())
    best_model = storage.join(run_dir, BEST_MODEL_FILE)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": saved["best_model"],
            "model_config": to_dict(config.model),
            "epoch": summary["best_epoch"],
        },
        buffer,
    )
    storage.write_bytes(best_model, buffer.getvalue())
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
