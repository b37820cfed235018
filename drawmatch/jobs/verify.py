"""The verify job: artist-style verification (Painter By Numbers) with Ray Train.

A backbone is trained on labels instead of pairs: two images with the same label (artist,
movement, any metadata column) are a positive pair, two with different labels a negative one. The
labelled set (`drawmatch.training.labels`) is split label-disjointly: `test_labels` of the labels are only
in test (unseen in training), and `val_images` of the training labels' images are held out for
validation (seen labels, unseen images).

Training (each Ray Train worker, DDP): `steps_per_epoch` steps per epoch of
- `triplets=random`: `batch_size` triplets drawn at random (`labels.random_triplets`: an anchor
  label, two of its images, an image of another label), the loss on exactly those triplets
  (`loss=contrastive`: on their (anchor, positive) and (anchor, negative) pairs);
- `triplets=mined`: P x K batches (`labels_per_batch` labels, `images_per_label` images each),
  batch-hard triplets (`mining.batch_hard_triplets`; contrastive: every pair of the batch).
Cosine distance and the project's losses (`losses.make_loss`, margin in distance units).

Scores, on the starting weights and after every epoch: triplet accuracy (share of triplets whose
positive is closer to the anchor than the negative; `eval_triplets` random triplets of the set,
the same ones every time) and ROC AUC of same/different pairs (every pair of the set's images, or
of `max_pair_images` of them drawn once). The epoch with the best validation ROC AUC (the starting
weights competing as epoch -1) is kept; `patience` epochs without improvement stop training; test
scores (unseen labels) of the starting and the best weights are reported side by side.

The training harness (`drawmatch.training.harness`) runs the workers: a checkpoint every epoch, so
that a rerun of the same run continues from its latest checkpoint (recorded in `resumes`).

Outputs under `out/verify/<run>/`: `splits.csv` (`id, path, label, set`), `data_summary.json`,
`verify_config.yaml`, `metrics.json` and `best_model.pt` (for `drawmatch embed --weights`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from drawmatch.core import storage
from drawmatch.core.config import ConfigError, from_dict, setting, to_dict
from drawmatch.training.checkpoints import read_final, write_best_model
from drawmatch.training.freezing import set_train_mode
from drawmatch.training.harness import EpochTrainer, TrainedRun, fit
from drawmatch.training.labels import (
    SPLITS_FILE,
    LabelRunConfig,
    embed_all,
    fit_label_run,
    label_codes,
    label_disjoint_split,
    load_labelled,
    pk_batches,
    prepared_config,
    random_triplets,
    seeded_backbone,
    start_label_run,
)


@dataclass(frozen=True)
class VerifyConfig(LabelRunConfig):
    """Artist-style verification (Painter By Numbers): train a backbone on labels instead of
    pairs, with label-disjoint splits (`test_labels` of the labels only in test, `val_images` of
    the training labels' images in validation), random or mined (`triplets`) triplets and a
    triplet or contrastive `loss`; scored by triplet accuracy and ROC AUC of same/different
    pairs on unseen labels. `epochs=0` scores the starting weights only."""

    loss: str = setting("triplet", choices=("triplet", "contrastive"), help="training loss")
    triplets: str = setting("random", choices=("random", "mined"), help="how triplets are drawn")
    margin: float = setting(
        0.7, gt=0, le=10, help="loss margin in distance units (contrastive: <= 2)"
    )
    steps_per_epoch: int = setting(50, ge=1, help="training steps per epoch")
    labels_per_batch: int = setting(4, ge=2, help="labels drawn per batch")
    images_per_label: int = setting(3, ge=2, help="images drawn per label and batch")
    batchnorm: str = setting("frozen", choices=("frozen", "train"), help="batch norm statistics")
    test_labels: float = setting(0.2, gt=0, le=0.9, help="share of the labels only in test")
    val_images: float = setting(0.1, ge=0, le=0.9, help="share of training labels' images in val")
    eval_triplets: int = setting(2000, ge=1, help="triplets scored per evaluation")
    max_pair_images: int = setting(2000, ge=2, help="images of the same/different pairs scored")

    def check(self) -> None:
        super().check()
        if self.loss == "contrastive" and self.margin > 2:
            raise ConfigError(f"margin: {self.margin} must be <= 2 for the contrastive loss")


RUNS_DIR = "verify"
METRICS_FILE = "metrics.json"
SCORES = ("triplet_accuracy", "roc_auc")


# ----------------------------------------------------------------------------------------------
# evaluation sets: fixed triplets and pairs, drawn once


@dataclass
class EvalSet:
    """One set's images (`idx`, rows of the split table), its fixed triplets (T, 3) and the
    images whose pairs are scored (`pair_idx`), as positions within `idx`."""

    idx: list[int]
    codes: np.ndarray
    triplets: np.ndarray
    pair_idx: np.ndarray


def eval_set(codes: np.ndarray, idx: list[int], config: VerifyConfig, salt: int) -> EvalSet:
    """The fixed triplets and pair images of a set with label codes `codes[idx]`."""
    rng = np.random.default_rng([config.seed, salt])
    local = codes[idx]
    counts = np.unique(local, return_counts=True)[1]
    if len(counts) >= 2 and counts.max() >= 2:
        triplets = random_triplets(local, config.eval_triplets, rng)
    else:
        triplets = np.zeros((0, 3), dtype=np.int64)
    n = len(idx)
    pair_idx = (
        np.sort(rng.choice(n, size=config.max_pair_images, replace=False))
        if n > config.max_pair_images
        else np.arange(n)
    )
    return EvalSet(idx, local, triplets, pair_idx)


def score(emb: np.ndarray, data: EvalSet) -> dict[str, float]:
    """Triplet accuracy and ROC AUC (in [0, 1]) of one set's embeddings (n, D) in `data.idx`
    order, with the counts they rest on; a score that cannot be computed is left out."""
    from drawmatch.retrieval.metrics import pair_scores, roc_auc, triplet_accuracy

    out: dict[str, float] = {
        "n_images": float(len(data.idx)),
        "n_labels": float(len(np.unique(data.codes))),
    }
    if len(data.triplets):
        out["triplet_accuracy"] = triplet_accuracy(emb, data.triplets)
        out["n_triplets"] = float(len(data.triplets))
    sims, same = pair_scores(emb[data.pair_idx], data.codes[data.pair_idx])
    if same.any() and (~same).any():
        out["roc_auc"] = roc_auc(sims, same)
        out["n_pairs"] = float(len(sims))
        out["mean_distance_same"] = float(1.0 - sims[same].mean())
        out["mean_distance_different"] = float(1.0 - sims[~same].mean())
    return out


# ----------------------------------------------------------------------------------------------
# the worker


class Verifier(EpochTrainer):
    """One worker's share of a verification run: model, optimiser, loss, images, sets; an
    `EpochTrainer` that the training harness runs (`verify_loop`)."""

    score_key = "roc_auc"
    config: VerifyConfig

    def __init__(
        self,
        config: VerifyConfig,
        table: pd.DataFrame,
        device: torch.device | None = None,
        prepare_model: Any = None,
    ) -> None:
        from drawmatch.training.losses import make_loss

        super().__init__(config, device)
        backbone, self.images = seeded_backbone(config, table["path"].tolist())
        self.place(backbone, prepare_model)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.loss_fn = make_loss(config.loss, config.margin)
        self.codes = label_codes(table)[1]
        sets = table["set"].to_numpy()
        self.train_idx = np.flatnonzero(sets == "train")
        self.sets = {
            s: eval_set(self.codes, np.flatnonzero(sets == s).tolist(), config, salt)
            for salt, s in enumerate(("val", "test"), start=1)
        }
        self.amp = self.device.type == "cuda"
        self._batches: Any = None
        self.start_state()

    def evaluate(self, split: str) -> dict[str, float]:
        data = self.sets[split]
        if not data.idx:
            return {}
        emb = embed_all(
            self.module, self.images, data.idx, self.config.eval_batch_size, self.device
        )
        return score(emb.numpy(), data)

    def _next_pk(self, rng: np.random.Generator) -> np.ndarray:
        config = self.config
        for _ in range(2):
            if self._batches is None:
                self._batches = pk_batches(
                    self.codes[self.train_idx],
                    config.labels_per_batch,
                    config.images_per_label,
                    rng,
                )
            batch = next(self._batches, None)
            if batch is not None:
                return np.asarray(batch)
            self._batches = None
        raise ValueError("no P x K batch can be drawn from the training labels")

    def train_step(self, rng: np.random.Generator) -> float:
        """One optimiser step; returns the loss."""
        from drawmatch.training.losses import label_pairs, triplets_to_pairs, tuple_loss
        from drawmatch.training.mining import batch_hard_triplets

        config = self.config
        if config.triplets == "random":
            local = random_triplets(self.codes[self.train_idx], config.batch_size, rng)
            rows = self.train_idx[local.T.reshape(-1)]  # anchors, then positives, then negatives
        else:
            rows = self.train_idx[self._next_pk(rng)]
        x = self.images.train_batch(rows.tolist()).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            emb = nn.functional.normalize(self.model(x).float(), dim=1)
        labels = torch.as_tensor(self.codes[rows])
        indices: tuple[torch.Tensor, ...]
        if config.triplets == "random":
            b = config.batch_size
            ar = torch.arange(b)
            triplets = (ar, ar + b, ar + 2 * b)
            indices = triplets if config.loss == "triplet" else triplets_to_pairs(triplets)
        elif config.loss == "triplet":
            indices = batch_hard_triplets(emb.detach(), labels)
        else:
            indices = label_pairs(labels)
        loss = tuple_loss(self.loss_fn, emb, indices)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.state.step += 1
        return float(loss.detach())

    def train_epoch(self, epoch: int) -> dict[str, float]:
        set_train_mode(self.model, self.config.batchnorm)
        rng = np.random.default_rng([self.config.seed, self.rank, epoch])
        losses = [self.train_step(rng) for _ in range(self.config.steps_per_epoch)]
        return {"train_loss": float(np.mean(losses)), "steps": float(len(losses))}

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """Train an epoch, score it on validation; the best epoch by validation ROC AUC (without
        a validation score: the latest epoch)."""
        record: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch)}
        val = self.evaluate("val")
        record.update({f"val_{k}": v for k, v in val.items()})
        no_val = "roc_auc" not in self.state.baseline.get("val", {})
        return record, self.select(epoch, record, val.get("roc_auc", -1.0), latest=no_val)

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Test scores of the best weights: the run's summary and the final metrics."""
        state = self.state
        test = self.with_best_weights(lambda: self.evaluate("test"))
        best_val = (
            state.history[state.best_epoch] if state.best_epoch >= 0 else state.baseline["val"]
        )
        summary = {
            "best_epoch": state.best_epoch,
            "best_val_roc_auc": state.best_score,
            "baseline": state.baseline,
            "best": {"val": best_val, "test": test},
            "history": state.history,
            "resumes": [asdict(r) for r in state.resumes],
        }
        final = {
            "finished": True,
            "best_epoch": state.best_epoch,
            **{f"test_{k}": v for k, v in test.items()},
        }
        return summary, final


def verify_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train entry of every worker (`drawmatch.training.harness.fit`): score the starting
    weights (or continue from the latest checkpoint), train with early stopping on validation ROC
    AUC, score the best weights on test; the final checkpoint holds the summary."""
    import ray.train.torch

    config = from_dict(VerifyConfig, loop_config["config"])
    table = storage.read_csv(
        storage.join(loop_config["run_dir"], SPLITS_FILE), dtype=str, keep_default_na=False
    )
    fit(Verifier(config, table, ray.train.torch.get_device(), ray.train.torch.prepare_model))


# ----------------------------------------------------------------------------------------------
# the driver


VerifyResult = TrainedRun


def default_run_name(config: VerifyConfig) -> str:
    source = (
        config.data.label_column if config.data.labels_csv or not config.data.images else "folders"
    )
    return (
        f"{config.model.backbone}-{source}-{config.loss}-{config.triplets}-"
        f"m{config.margin:g}-lr{config.lr:g}"
    )


def prepare(config: VerifyConfig) -> pd.DataFrame:
    """The labelled set and its label-disjoint split: `id, path, label, set` (checked before any
    worker starts) and the loading summary."""
    data = load_labelled(config.data, config.out)
    table = data.images.copy()
    table["set"] = label_disjoint_split(
        table["label"], config.test_labels, config.val_images, config.seed
    ).to_numpy()
    table.attrs["summary"] = data.summary
    return table


def run(config: VerifyConfig) -> VerifyResult:
    """Split, train and score with Ray Train (see the module docstring)."""

    config = prepared_config(config)
    table = prepare(config)
    summary_in = table.attrs.pop("summary")
    name = config.run_name or default_run_name(config)
    runs = storage.join(config.out, RUNS_DIR)
    run_dir = start_label_run(config, table, summary_in, runs, name, "verify")
    print(f"verify {name}: {json.dumps(summary_in['sets'])}")
    result = fit_label_run(verify_loop, config, runs, name, "verification")
    with result.checkpoint.as_directory() as directory:
        saved, summary = read_final(directory)
    summary["data"] = summary_in
    best_model = write_best_model(
        run_dir, saved.best_model, to_dict(config.model), summary["best_epoch"]
    )
    storage.write_text(storage.join(run_dir, METRICS_FILE), json.dumps(summary, indent=2))
    print(f"verify {name}: best epoch {summary['best_epoch']}; unseen labels (test):")
    print(side_by_side(summary["baseline"]["test"], summary["best"]["test"]))
    print(f"outputs: {run_dir}")
    return VerifyResult(run_dir, best_model, summary)


def side_by_side(baseline: dict[str, float], tuned: dict[str, float]) -> str:
    lines = [f"{'score':<26}{'starting':>10}{'best':>10}"]
    for key in (*SCORES, "mean_distance_same", "mean_distance_different"):
        if key in tuned or key in baseline:
            a, b = baseline.get(key, float("nan")), tuned.get(key, float("nan"))
            lines.append(f"{key:<26}{a:>10.4f}{b:>10.4f}")
    for key in ("n_images", "n_labels", "n_triplets", "n_pairs"):
        if key in tuned:
            lines.append(f"{key:<26}{int(tuned[key]):>20d}")
    return "\n".join(lines)
