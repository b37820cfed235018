"""The checkpoint format of every training job (train, verify, classify) and the best-model file.

A checkpoint folder (one per epoch, through `ray.train.report`) holds `checkpoint.pt`: a
`TrainCheckpoint`, the run's `TrainState` with the state dicts it takes to continue exactly; the
final one also holds the run's summary (`summary.json`, or a job's own result file). The run
folder then gets `best_model.pt`, the best epoch's weights, for `drawmatch embed --weights`, with
the model settings they were trained with (`model_from_checkpoint` applies them).
Checkpoints hold plain types only and load with `torch.load(weights_only=True)`; the train job's
first checkpoints, pickled, still load.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drawmatch.core import storage
from drawmatch.models.embedder import ModelConfig

CHECKPOINT_FILE = "checkpoint.pt"
BEST_MODEL_FILE = "best_model.pt"
SUMMARY_FILE = "summary.json"
# `TrainState.best_score` is stored under its first name: the train job selects on validation MAP.
BEST_SCORE_KEY = "best_map"


def plain(value: Any) -> Any:
    """A copy made of Python dicts, lists, str, int, float, bool and None (numpy scalars become
    Python numbers), so that it writes to JSON and loads with `torch.load(weights_only=True)`."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_keys(kind: str, data: dict[str, Any], required: set[str], known: set[str]) -> None:
    missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
    if missing or unknown:
        raise ValueError(f"not a drawmatch {kind}: missing {missing}, unknown {unknown}")


@dataclass
class Resume:
    """One restart from a checkpoint: the first epoch trained after it, the optimiser steps taken
    before it, and `drawmatch.models.backbones.weights_hash` of the weights it restored."""

    epoch: int
    step: int
    weights_hash: str


@dataclass
class TrainState:
    """Where a run stands.

    `epoch`: the next epoch to train; `step`: optimiser steps taken (per worker, all epochs);
    `best_score`, `best_epoch`: the best validation score (the job's own: MAP, ROC AUC, top-1)
    and its epoch (-1: the starting weights); `bad_epochs`: epochs since the last improvement;
    `history`: one record per epoch trained; `baseline`: val and test metrics of the starting
    weights; `resumes`: every restart from a checkpoint.
    """

    epoch: int = 0
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, dict[str, float]] = field(default_factory=dict)
    resumes: list[Resume] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = plain(asdict(self))
        result[BEST_SCORE_KEY] = result.pop("best_score")
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The inverse of `to_dict`; `step` and `resumes` may be absent (older checkpoints)."""
        known = {f.name for f in fields(cls)} - {"best_score"} | {BEST_SCORE_KEY}
        _check_keys("train state", data, known - {"step", "resumes"}, known)
        return cls(
            epoch=int(data["epoch"]),
            step=int(data.get("step", 0)),
            best_score=float(data[BEST_SCORE_KEY]),
            best_epoch=int(data["best_epoch"]),
            bad_epochs=int(data["bad_epochs"]),
            history=[dict(record) for record in data["history"]],
            baseline={split: dict(m) for split, m in data["baseline"].items()},
            resumes=[Resume(**r) for r in data.get("resumes", [])],
        )

    def best_val_record(self) -> dict[str, Any]:
        """Validation record of the best epoch; epoch -1 is the starting (pretrained) model."""
        if self.best_epoch >= 0:
            return dict(self.history[self.best_epoch])
        return {"epoch": -1, **{f"val_{k}": v for k, v in self.baseline.get("val", {}).items()}}


@dataclass
class TrainCheckpoint:
    """What `checkpoint.pt` holds: the state and what it takes to continue training exactly.

    `model`: the latest weights (those of `state.history[-1]`); `best_model`: the best epoch's
    weights (the starting weights while `state.best_epoch` is -1); `optimizer`, `scheduler`: their
    state dicts (`scheduler` empty for a job without one); `config`: the job's resolved config as
    a plain dict.
    """

    state: TrainState
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.to_dict(),
            "model": self.model,
            "best_model": self.best_model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "config": plain(self.config),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainCheckpoint:
        known = {f.name for f in fields(cls)}
        _check_keys("train checkpoint", data, known, known)
        return cls(
            state=TrainState.from_dict(data["state"]),
            model=data["model"],
            best_model=data["best_model"],
            optimizer=data["optimizer"],
            scheduler=data["scheduler"],
            config=data["config"],
        )

    def save(self, path: str | Path) -> None:
        torch.save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> TrainCheckpoint:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # written before checkpoints held only plain types
            data = torch.load(path, map_location="cpu", weights_only=False)
        return cls.from_dict(data)


def read_final(directory: str | Path) -> tuple[TrainCheckpoint, dict[str, Any]]:
    """The checkpoint and the summary of a run's final checkpoint folder."""
    saved = TrainCheckpoint.load(Path(directory) / CHECKPOINT_FILE)
    summary = json.loads((Path(directory) / SUMMARY_FILE).read_text())
    return saved, summary


def write_best_model(
    run_dir: str, weights: dict[str, torch.Tensor], model_config: dict[str, Any], epoch: int
) -> str:
    """Write `best_model.pt` into the run folder: the best epoch's weights (`model`), the model
    config they go with (`model_config`) and the epoch (-1: the starting weights). Returns its
    path."""
    path = storage.join(run_dir, BEST_MODEL_FILE)
    buffer = io.BytesIO()
    torch.save({"model": weights, "model_config": model_config, "epoch": epoch}, buffer)
    storage.write_bytes(path, buffer.getvalue())
    return path


# the model keys a best_model.pt fixes: the weights only mean what they were trained as
CHECKPOINT_MODEL_KEYS = ("backbone", "image_size", "pooling")


def stored_model_config(path: str) -> dict[str, Any]:
    """The `model_config` a best_model.pt was written with ({} for a bare state dict or a file
    written without one)."""
    source = io.BytesIO(storage.read_bytes(path)) if storage.is_uri(path) else path
    saved = torch.load(source, map_location="cpu", weights_only=True)
    stored = saved.get("model_config") if isinstance(saved, dict) else None
    return dict(stored) if isinstance(stored, dict) else {}


def model_from_checkpoint(model: ModelConfig) -> ModelConfig:
    """`model` with the backbone, image size and pooling stored in its `weights` file: a key left
    at its default (null, or the default backbone) takes the checkpoint's value; a key set to
    another value than the checkpoint's is a ValueError (weights trained at 224 px embedded at
    280 px would silently be another model). Without weights, or a file that stores no model
    settings, `model` is returned as it is."""
    if not model.weights:
        return model
    stored = stored_model_config(model.weights)
    defaults = ModelConfig()
    changes: dict[str, Any] = {}
    for key in CHECKPOINT_MODEL_KEYS:
        want, given = stored.get(key), getattr(model, key)
        if want is None or given == want:
            continue
        if given is not None and given != getattr(defaults, key):
            raise ValueError(
                f"model.{key}={given} contradicts {model.weights}, trained with "
                f"model.{key}={want}: leave model.{key} out (it is taken from the checkpoint)"
            )
        changes[key] = want
    return replace(model, **changes)
