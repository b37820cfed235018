"""The training harness of every training job (train, verify, classify's fine-tune).

A job's worker is an `EpochTrainer`: it builds its model, optimiser (and scheduler) and data, and
says what an epoch is (`run_epoch`), how the starting weights score (`baseline`) and what the run
ends with (`finish`). The harness does the rest, the same for all jobs:

- `fit`, the Ray Train entry of a worker: continue from the latest checkpoint if there is one (a
  rerun of the same run, or a worker that died: Ray Train's `max_failures`), else score the
  starting weights; then epoch after epoch, a checkpoint and the epoch's metrics through
  `ray.train.report`, until the last epoch or early stopping; then the final report.
- `EpochTrainer.select`: the best weights by the job's validation score (the starting weights
  the first candidate, epoch -1), early stopping after `patience` epochs without improvement,
  one record per epoch in `state.history`.
- `fit_with_ray`, the driver: one Ray Train run (`TorchTrainer`) named `name` under `runs`.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from drawmatch.core.config import to_dict
from drawmatch.training.checkpoints import (
    CHECKPOINT_FILE,
    SUMMARY_FILE,
    Resume,
    TrainCheckpoint,
    TrainState,
)

T = TypeVar("T")


@dataclass
class TrainedRun:
    """A finished training run: its folder, its `best_model.pt` and its summary."""

    run_dir: str
    best_model: str
    summary: dict[str, Any]


class EpochTrainer:
    """One worker's share of a run: what the harness needs of every job's worker.

    A job's subclass calls `__init__` (its config, with `patience` and `epochs`, and device) and
    `place` (its network) in its constructor, sets `optimizer` and `scheduler` (or None), calls
    `start_state`, and implements `run_epoch` and `finish`; it overrides `baseline` (the
    starting weights' scores, through `evaluate`) where it has one.
    """

    score_key = ""  # the validation metric that selects the best epoch, e.g. "MAP"
    model: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def __init__(self, config: Any, device: torch.device | None = None) -> None:
        """`config`, this worker's `rank` of `world_size` and its `device` (default: the CPU)."""
        from drawmatch.training.distributed import world

        self.config = config
        self.rank, self.world_size = world()
        self.device = device or torch.device("cpu")

    def place(self, net: nn.Module, prepare_model: Callable[[nn.Module], nn.Module] | None) -> None:
        """`model`: `net` prepared by `prepare_model` (Ray Train's DDP), or moved to the device;
        `module`: the bare network, for embedding without DDP collectives and for state dicts."""
        self.model = prepare_model(net) if prepare_model else net.to(self.device)
        self.module = getattr(self.model, "module", self.model)

    def start_state(self) -> None:
        """A fresh run: no epoch trained, the starting weights as the best ones so far."""
        self.state = TrainState()
        self.best_model = copy.deepcopy(self.module.state_dict())

    # -- what a job says

    @property
    def epochs(self) -> int:
        """How many epochs the run trains (unless it stops early)."""
        return int(self.config.epochs)

    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of `split` with the current weights."""
        raise NotImplementedError

    def baseline(self) -> dict[str, dict[str, float]]:
        """Val and test metrics of the starting weights, which are the first candidate for best:
        an epoch must beat them on the validation score."""
        self.state.baseline = {s: self.evaluate(s) for s in ("val", "test")}
        self.state.best_score = self.state.baseline["val"].get(self.score_key, -1.0)
        return self.state.baseline

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """Train and book epoch `epoch`; returns its record and whether training stops."""
        raise NotImplementedError

    def finish(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's summary (written with the final checkpoint) and the final metrics."""
        raise NotImplementedError

    def epoch_metrics(self, record: dict[str, Any]) -> dict[str, Any]:
        """What `ray.train.report` gets for an epoch."""
        return {**record, "finished": False}

    def write_summary(self, directory: Path, summary: dict[str, Any]) -> None:
        """Write the run's summary into the final checkpoint folder (`summary.json`)."""
        (directory / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))

    def restored(self) -> None:
        """Called once the weights and state of a checkpoint are back (a job's caches)."""

    # -- what the harness does

    def select(
        self, epoch: int, record: dict[str, Any], score: float, latest: bool, counts: bool = True
    ) -> bool:
        """Book epoch `epoch`: `record` goes to the history; its weights become the best if
        `latest` (keep the final weights) or `score` beats the best so far, else it is an epoch
        without improvement if it `counts`. Returns whether training stops (`patience`)."""
        state = self.state
        if latest or score > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            self.best_model = copy.deepcopy(self.module.state_dict())
        elif counts:
            state.bad_epochs += 1
        state.history.append(record)
        state.epoch = epoch + 1
        return state.bad_epochs >= self.config.patience

    def with_best_weights(self, work: Callable[[], T]) -> T:
        """`work()` with the best weights loaded; the latest weights are back afterwards."""
        latest = copy.deepcopy(self.module.state_dict())
        self.module.load_state_dict(self.best_model)
        try:
            return work()
        finally:
            self.module.load_state_dict(latest)

    def weights_hash(self) -> str:
        from drawmatch.models.backbones import weights_hash

        return weights_hash(self.module)

    def checkpoint(self) -> TrainCheckpoint:
        """The state and the state dicts as they stand (copies of the worker's own)."""
        return TrainCheckpoint(
            state=TrainState.from_dict(self.state.to_dict()),
            model=copy.deepcopy(self.module.state_dict()),
            best_model=copy.deepcopy(self.best_model),
            optimizer=copy.deepcopy(self.optimizer.state_dict()),
            scheduler=copy.deepcopy(self.scheduler.state_dict()) if self.scheduler else {},
            config=to_dict(self.config),
        )

    def save(self, directory: str | Path, summary: dict[str, Any] | None = None) -> None:
        """Write `checkpoint.pt` (and the summary) into `directory`."""
        self.checkpoint().save(Path(directory) / CHECKPOINT_FILE)
        if summary is not None:
            self.write_summary(Path(directory), summary)

    def restore(self, checkpoint: TrainCheckpoint) -> Resume:
        """Continue from `checkpoint`: weights, optimiser, scheduler, best weights and state.
        The restart is recorded in `state.resumes` with the hash of the weights restored."""
        self.module.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.scheduler)
        self.best_model = copy.deepcopy(checkpoint.best_model)
        self.state = TrainState.from_dict(checkpoint.state.to_dict())
        self.restored()
        resume = Resume(self.state.epoch, self.state.step, self.weights_hash())
        self.state.resumes.append(resume)
        print(
            f"[rank {self.rank}] resumed at epoch {resume.epoch}, step {resume.step}, "
            f"weights {resume.weights_hash}"
        )
        return resume


def restore_latest(worker: EpochTrainer) -> bool:
    """Restore `worker` from the run's latest checkpoint, if it has one in this format (a label
    job's run from before per-epoch checkpoints holds only its result: it starts again)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as directory:
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            return False
        worker.restore(TrainCheckpoint.load(path))
    return True


def fit(worker: EpochTrainer, started: Callable[[EpochTrainer], None] | None = None) -> None:
    """A worker's run under Ray Train: restore from the latest checkpoint or score the starting
    weights; report each epoch with a checkpoint (until early stopping); then the final report,
    whose checkpoint also holds the summary. `started(worker)` is called once the worker knows
    its first epoch."""
    resumed = restore_latest(worker)
    if started is not None:
        started(worker)
    if not resumed:
        worker.baseline()
    for epoch in range(worker.state.epoch, worker.epochs):
        record, stop = worker.run_epoch(epoch)
        report(worker.rank, worker.epoch_metrics(record), worker.save)
        if stop:
            break
    summary, metrics = worker.finish()
    report(worker.rank, metrics, lambda directory: worker.save(directory, summary))


def report(rank: int, metrics: dict[str, Any], write: Callable[[Path], None]) -> None:
    """`ray.train.report(metrics)` from every worker, with a checkpoint that rank 0 writes with
    `write(directory)`."""
    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            write(Path(directory))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def fit_with_ray(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    config: Any,
    runs: str,
    name: str,
    what: str,
    max_failures: int = 0,
    callbacks: list[Any] | None = None,
) -> Any:
    """Run `loop(loop_config)` on Ray Train workers (their number, CPUs and GPU from `config`) as
    run `name` under `runs`, where Ray Train keeps its checkpoints (the latest two); a rerun of
    the same run continues from the latest one. `max_failures`: restarts after a worker dies;
    `callbacks`: Ray Train callbacks (a sweep trial's). Returns the fit's result; `what` names
    the run in errors ("training", "verification")."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from drawmatch.runtime.ray_setup import init_ray

    init_ray(config.ray)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=runs,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"{what} run {name} failed: {result.error}")
    if result.checkpoint is None:
        raise RuntimeError(f"{what} run {name} reported no checkpoint")
    return result
