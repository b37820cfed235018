"""The classify job: art-movement (or any label) classification on top of a backbone.

The labelled set (`drawmatch.training.labels`) is split per label (stratified: `val` and `test` of each
label's images, the rest, at least one, to train). Two methods:

- `method=probe`: a linear probe on frozen embeddings. The L2-normalised embeddings come from the
  embeddings store of `model_tag` (catalogue images embedded by `drawmatch embed`; no Ray needed)
  or are computed by Ray Train workers, each embedding its share. A multinomial logistic
  regression (L-BFGS, cross-entropy + l2 * |W|^2 / 2) is fitted for every penalty in `probe_l2`;
  the one with the best validation top-1 is kept (the first on ties, or without validation images).
- `method=finetune`: backbone and a linear head on its pooled features trained together with Ray
  Train (DDP; cross-entropy, Adam with `lr` for the backbone and `head_lr` for the head, the
  project's train transform), the epoch with the best validation top-1 kept, `patience` epochs
  without improvement stop training. The training harness (`drawmatch.training.harness`) runs
  the workers: a checkpoint every epoch, so that a rerun of the same run continues from its
  latest checkpoint.

Outputs under `out/classify/<run>/`: `metrics.json` (top-1 on val and test, per-class precision,
recall, F1 and support, macro means, the majority-class and chance baselines, the training
history), `per_class.csv` and `confusion.csv` / `confusion.png` (rows: true label, columns:
predicted label) of the test set (the validation set when test is empty), `predictions.csv`
(`id, label, set, predicted`), `splits.csv`, `data_summary.json`, `classify_config.yaml` and
`model.pt` (the head, and for `finetune` the backbone under `model` for `drawmatch embed
--weights`).
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from drawmatch.core import storage
from drawmatch.core.config import ConfigError, from_dict, redeclare, setting, to_dict
from drawmatch.training.freezing import set_train_mode
from drawmatch.training.harness import EpochTrainer, fit, report
from drawmatch.training.labels import (
    SPLITS_FILE,
    LabelRunConfig,
    embed_all,
    fit_label_run,
    label_codes,
    load_labelled,
    prepared_config,
    seeded_backbone,
    start_label_run,
    stratified_split,
)
from drawmatch.training.run_config import TrainingRunConfig


@dataclass(frozen=True)
class ClassifyConfig(LabelRunConfig):
    """Art-movement (or any label) classification on top of a backbone: `method=probe` a linear
    probe on frozen L2-normalised embeddings (computed, or read from the embeddings store of
    `model_tag` for catalogue images), its L2 penalty chosen on validation among `probe_l2`;
    `method=finetune` the backbone and a linear head trained together (cross-entropy, `lr` for
    the backbone, `head_lr` for the head). Stratified splits (`val`, `test` of each label)."""

    lr: float = redeclare(TrainingRunConfig, "lr", 1e-4)
    epochs: int = redeclare(TrainingRunConfig, "epochs", 5, ge=1)
    batch_size: int = redeclare(TrainingRunConfig, "batch_size", 8)
    method: str = setting("probe", choices=("probe", "finetune"), help="linear probe or fine-tune")
    model_tag: str | None = setting(None, help="probe: read catalogue embeddings of this model")
    val: float = setting(0.15, ge=0, le=0.9, help="share of each label's images in validation")
    test: float = setting(0.15, ge=0, le=0.9, help="share of each label's images in test")
    probe_l2: tuple[float, ...] = setting(
        (1e-4, 1e-3, 1e-2, 1e-1), ge=0, le=1e6, help="probe: L2 penalties tried on validation"
    )
    probe_max_iter: int = setting(500, ge=1, help="probe: most solver iterations")
    head_lr: float = setting(1e-3, gt=0, le=1, help="finetune: learning rate of the head")
    max_steps_per_epoch: int | None = setting(
        None, ge=1, help="cap on steps per epoch (null: none)"
    )
    batchnorm: str = setting("frozen", choices=("frozen", "train"), help="batch norm statistics")

    def check(self) -> None:
        super().check()
        if self.val + self.test >= 1.0:
            raise ConfigError(f"val, test: {self.val} + {self.test} must leave images to train")


RUNS_DIR = "classify"
RESULT_FILE = "result.pt"


class Classifier(nn.Module):
    """A backbone and a linear head: (B, 3, H, W) -> logits (B, n_classes)."""

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(backbone.dim), n_classes)  # type: ignore[arg-type]
        self.dim = n_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.backbone(images))
        return out


# ----------------------------------------------------------------------------------------------
# the linear probe


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    l2: float,
    max_iter: int = 500,
) -> nn.Linear:
    """Multinomial logistic regression on features `x` (n, D) with class indices `y` (n,):
    L-BFGS on mean cross-entropy + `l2` * |W|^2 / 2 (the bias is not penalised)."""
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], n_classes).double()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(xt), yt) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return head.float()


def probe(
    emb: np.ndarray, codes: np.ndarray, sets: np.ndarray, n_classes: int, config: ClassifyConfig
) -> tuple[np.ndarray, nn.Linear, list[dict[str, float]]]:
    """Fit a probe per penalty of `config.probe_l2` on the train rows of `emb` (N, D); keep the
    best on val. Returns predictions for every row (N,), the head and one record per penalty."""
    train, val = sets == "train", sets == "val"
    best: tuple[float, nn.Linear] | None = None
    history = []
    for l2 in config.probe_l2:
        head = fit_probe(emb[train], codes[train], n_classes, l2, config.probe_max_iter)
        with torch.no_grad():
            pred = head(torch.as_tensor(emb, dtype=torch.float32)).argmax(dim=1).numpy()
        record = {"l2": l2, "train_top1": 100.0 * float((pred[train] == codes[train]).mean())}
        if val.any():
            record["val_top1"] = 100.0 * float((pred[val] == codes[val]).mean())
        history.append(record)
        if best is None or record.get("val_top1", -1.0) > best[0]:
            best = (record.get("val_top1", -1.0), head)
    assert best is not None
    with torch.no_grad():
        pred = best[1](torch.as_tensor(emb, dtype=torch.float32)).argmax(dim=1).numpy()
    return pred, best[1], history


# ----------------------------------------------------------------------------------------------
# Ray Train workers


def _read_splits(loop_config: dict[str, Any]) -> tuple[ClassifyConfig, pd.DataFrame]:
    """A worker's config and the run's split table (`splits.csv`)."""
    config = from_dict(ClassifyConfig, loop_config["config"])
    table = storage.read_csv(
        storage.join(loop_config["run_dir"], SPLITS_FILE), dtype=str, keep_default_na=False
    )
    return config, table


def probe_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train entry for `method=probe`: embed every image (each worker its share, gathered),
    then fit the probe (every worker the same; rank 0 reports it)."""
    import ray.train.torch

    from drawmatch.training.distributed import world

    config, table = _read_splits(loop_config)
    classes, codes = label_codes(table)
    backbone, images = seeded_backbone(config, table["path"].tolist())
    device = ray.train.torch.get_device()
    backbone.to(device)
    emb = embed_all(
        backbone, images, list(range(len(table))), config.eval_batch_size, device
    ).numpy()
    pred, head, history = probe(emb, codes, table["set"].to_numpy(), len(classes), config)
    result = {"predicted": pred.tolist(), "head": head.state_dict(), "history": history}
    report(world()[0], {"finished": True}, lambda d: torch.save(result, d / RESULT_FILE))


class FineTuner(EpochTrainer):
    """One worker's share of `method=finetune`: backbone and head (`Classifier`) trained with
    cross-entropy (Adam, `lr` for the backbone, `head_lr` for the head) on this worker's share of
    the training images; the best epoch by validation top-1 (without validation images: the
    latest). An `EpochTrainer` that the training harness runs (`finetune_loop`)."""

    config: ClassifyConfig

    def __init__(
        self,
        config: ClassifyConfig,
        table: pd.DataFrame,
        device: torch.device | None = None,
        prepare_model: Any = None,
    ) -> None:
        super().__init__(config, device)
        classes, self.codes = label_codes(table)
        backbone, self.images = seeded_backbone(config, table["path"].tolist())
        self.place(Classifier(backbone, len(classes)), prepare_model)
        self.classifier = cast(Classifier, self.module)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.classifier.backbone.parameters(), "lr": config.lr},
                {"params": self.classifier.head.parameters(), "lr": config.head_lr},
            ],
            weight_decay=config.weight_decay,
        )
        sets = table["set"].to_numpy()
        self.train_idx = np.flatnonzero(sets == "train")
        self.val_idx: list[int] = np.flatnonzero(sets == "val").tolist()
        self.n_images = len(table)
        self.sampler: torch.utils.data.distributed.DistributedSampler[int] = (
            torch.utils.data.distributed.DistributedSampler(
                range(len(self.train_idx)),  # type: ignore[arg-type]
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=True,
                seed=config.seed,
            )
        )
        self.amp = self.device.type == "cuda"
        self.start_state()

    def baseline(self) -> dict[str, dict[str, float]]:
        """Not scored: the first epoch is the first candidate for best."""
        return {}

    def logits(self, idx: list[int]) -> torch.Tensor:
        """Eval logits (n, classes) of images `idx` (a collective: every worker calls it)."""
        return embed_all(
            self.module,
            self.images,
            idx,
            self.config.eval_batch_size,
            self.device,
            normalised=False,
        )

    def train_epoch(self, epoch: int) -> float:
        """One pass over this worker's share of the training images (at most
        `max_steps_per_epoch` steps); returns the mean loss."""
        config = self.config
        self.sampler.set_epoch(epoch)
        set_train_mode(self.model, config.batchnorm)
        order = list(self.sampler)
        losses = []
        for step, s in enumerate(range(0, len(order), config.batch_size)):
            if config.max_steps_per_epoch is not None and step >= config.max_steps_per_epoch:
                break
            rows = self.train_idx[order[s : s + config.batch_size]]
            x = self.images.train_batch(rows.tolist()).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model(x).float()
            target = torch.as_tensor(self.codes[rows]).to(self.device)
            loss = nn.functional.cross_entropy(logits, target)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.state.step += 1
            losses.append(float(loss.detach()))
        return float(np.mean(losses))

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """Train an epoch, score it on validation (top-1, %), book it."""
        record: dict[str, Any] = {"epoch": epoch, "train_loss": self.train_epoch(epoch)}
        if self.val_idx:
            predicted = self.logits(self.val_idx).argmax(dim=1).numpy()
            record["val_top1"] = 100.0 * float((predicted == self.codes[self.val_idx]).mean())
        top1 = record.get("val_top1", float("inf"))
        return record, self.select(epoch, record, top1, latest=not self.val_idx)

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every image predicted with the best weights: the result (`result.pt`: predictions,
        head and backbone weights, history, best epoch) and the final metrics."""

        def predict() -> dict[str, Any]:
            return {
                "predicted": self.logits(list(range(self.n_images))).argmax(dim=1).tolist(),
                "head": copy.deepcopy(self.classifier.head.state_dict()),
                "backbone": copy.deepcopy(self.classifier.backbone.state_dict()),
            }

        result = self.with_best_weights(predict)
        result.update(history=self.state.history, best_epoch=self.state.best_epoch)
        return result, {"finished": True, "best_epoch": self.state.best_epoch}

    def write_summary(self, directory: Path, summary: dict[str, Any]) -> None:
        torch.save(summary, directory / RESULT_FILE)


def finetune_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train entry for `method=finetune` (`drawmatch.training.harness.fit`): train backbone
    + head (or continue from the latest checkpoint), keep the best epoch on validation top-1,
    predict every image with it; the final checkpoint holds the result."""
    import ray.train.torch

    config, table = _read_splits(loop_config)
    device = ray.train.torch.get_device()
    fit(FineTuner(config, table, device, ray.train.torch.prepare_model))


# ----------------------------------------------------------------------------------------------
# the driver


@dataclass
class ClassifyResult:
    run_dir: str
    metrics: dict[str, Any]


def default_run_name(config: ClassifyConfig) -> str:
    source = (
        config.data.label_column if config.data.labels_csv or not config.data.images else "folders"
    )
    backbone = (
        config.model_tag if config.method == "probe" and config.model_tag else config.model.backbone
    )
    return f"{backbone}-{source}-{config.method}"


def _stored_embeddings(config: ClassifyConfig, table: pd.DataFrame) -> np.ndarray:
    """The stored embeddings of the table's ids (catalogue images only)."""
    from drawmatch.data.embeddings import pick_model_tag, read_embeddings

    tag = pick_model_tag(config.out, config.model_tag)
    _, emb = read_embeddings(config.out, tag, table["id"].tolist())
    return emb


def _run_ray(config: ClassifyConfig, runs: str, name: str) -> dict[str, Any]:
    loop = probe_loop if config.method == "probe" else finetune_loop
    fit = fit_label_run(loop, config, runs, name, "classification")
    with fit.checkpoint.as_directory() as directory:
        result: dict[str, Any] = torch.load(
            Path(directory) / RESULT_FILE, map_location="cpu", weights_only=True
        )
    return result


def run(config: ClassifyConfig) -> ClassifyResult:
    """Split, fit and score (see the module docstring)."""
    config = prepared_config(config)
    if config.method == "probe" and config.model_tag and config.data.images is not None:
        raise ValueError(
            "model_tag= reads catalogue embeddings: leave data.images out (label catalogue "
            "images with data.label_column= or data.labels_csv=)"
        )
    data = load_labelled(config.data, config.out)
    table = data.images.copy()
    table["set"] = stratified_split(table["label"], config.val, config.test, config.seed).to_numpy()
    classes, codes = label_codes(table)
    stored = (
        _stored_embeddings(config, table) if config.method == "probe" and config.model_tag else None
    )
    name = config.run_name or default_run_name(config)
    runs = storage.join(config.out, RUNS_DIR)
    run_dir = start_label_run(config, table, data.summary, runs, name, "classify")
    print(f"classify {name}: {len(classes)} labels, {json.dumps(data.summary['sets'])}")
    if stored is not None:
        pred, head, history = probe(stored, codes, table["set"].to_numpy(), len(classes), config)
        result: dict[str, Any] = {"predicted": pred, "head": head.state_dict(), "history": history}
    else:
        result = _run_ray(config, runs, name)
    table["predicted"] = [classes[i] for i in np.asarray(result["predicted"])]
    metrics = write_outputs(config, run_dir, table, classes, result)
    return ClassifyResult(run_dir, metrics)


def write_outputs(
    config: ClassifyConfig,
    run_dir: str,
    table: pd.DataFrame,
    classes: list[str],
    result: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json, per_class.csv, confusion.csv/.png, predictions.csv and model.pt."""
    from drawmatch.reporting.plots import confusion_figure, png
    from drawmatch.retrieval.metrics import classification_metrics

    index = {c: i for i, c in enumerate(classes)}
    train_labels = table.loc[table["set"] == "train", "label"]
    majority = train_labels.value_counts().sort_index().idxmax()
    per_set: dict[str, Any] = {}
    for s in ("train", "val", "test"):
        rows = table[table["set"] == s]
        if rows.empty:
            continue
        m = classification_metrics(
            rows["label"].map(index).to_numpy(), rows["predicted"].map(index).to_numpy(), classes
        )
        m["majority_top1"] = 100.0 * float((rows["label"] == majority).mean())
        per_set[s] = m
    shown = "test" if "test" in per_set else "val" if "val" in per_set else "train"
    main = per_set[shown]
    metrics = {
        "method": config.method,
        "model": config.model_tag
        if config.method == "probe" and config.model_tag
        else to_dict(config.model),
        "classes": classes,
        "chance_top1": 100.0 / len(classes),
        "majority_class": majority,
        "confusion_set": shown,
        "top1": {s: m["top1"] for s, m in per_set.items()},
        "sets": per_set,
        "history": result.get("history", []),
        "best_epoch": result.get("best_epoch"),
    }
    storage.write_text(storage.join(run_dir, "metrics.json"), json.dumps(metrics, indent=2))
    storage.write_text(
        storage.join(run_dir, "per_class.csv"), pd.DataFrame(main["per_class"]).to_csv(index=False)
    )
    cm = np.asarray(main["confusion"])
    frame = pd.DataFrame(cm, index=pd.Index(classes, name="true \\ predicted"), columns=classes)
    storage.write_text(storage.join(run_dir, "confusion.csv"), frame.to_csv())
    title = f"{config.method}: {shown} top-1 {main['top1']:.1f} % ({main['n_images']} images)"
    storage.write_bytes(
        storage.join(run_dir, "confusion.png"), png(confusion_figure(cm, classes, title))
    )
    storage.write_text(
        storage.join(run_dir, "predictions.csv"),
        table[["id", "label", "set", "predicted"]].to_csv(index=False),
    )
    saved: dict[str, Any] = {"head": result["head"], "classes": classes}
    if "backbone" in result:
        saved.update(model=result["backbone"], model_config=to_dict(config.model))
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    storage.write_bytes(storage.join(run_dir, "model.pt"), buffer.getvalue())
    print(
        "top-1 (%): "
        + ", ".join(f"{s} {v:.1f}" for s, v in metrics["top1"].items())
        + f"; majority class {main['majority_top1']:.1f}, chance {metrics['chance_top1']:.1f}"
    )
    print(f"outputs: {run_dir}")
    return metrics
