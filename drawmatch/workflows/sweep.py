"""The sweep job: Ray Tune over margin, learning rate, backbone, style copies, mined negatives,
loss, L2-SP strength, trained blocks and pseudo-pair epochs.

Two stages, so that pruning never cuts a configuration's folds unevenly:
1. screening: every configuration of the grid trains on one fold under an ASHA scheduler that stops
   the weak ones early (metric: validation MAP);
2. confirmation: the `top_k` best configurations train on every fold, without pruning.
Stage-2 runs are aggregated per configuration (mean ± std over folds of val MAP, R@k, MP ...) into
`sweep/<name>/table.json`, and the best configuration is written as a ready-to-use train config,
`sweep/<name>/best_train_config.yaml`. "Best" is the highest validation MAP pooled over the
validation queries of all folds (each fold's MAP weighted by its number of queries), not the
choice of one fold's handful of drawings; with `base.selection=last` it is also free of the
per-fold early-stopping choice.

Each trial is a Ray Train run (Train V2 pattern: the Tune trainable is a driver function that builds
a `TorchTrainer`, its reports reach Tune through `TuneReportCallback`). Train runs are stored under
`runs/` like any other and keep their names, so an interrupted sweep resumes: Tune restores the
experiment, unfinished trials resume their Train runs from their checkpoints, and finished ones
are not run again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace
from typing import Any

from drawmatch.core import storage
from drawmatch.core.config import (
    Config,
    ConfigError,
    folder_name,
    from_dict,
    range_of,
    save_config,
    section,
    setting,
    to_dict,
)
from drawmatch.jobs.evaluate import fold_tables, format_fold_tables
from drawmatch.jobs.train import TrainConfig
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class SweepConfig(Config):
    """A two-stage sweep (see `drawmatch.workflows.sweep`): the lists are the values searched, `base` the
    train settings every trial shares (its fold_csv and run_name are set per trial). The searched
    fine-tuning keys take the values of the TrainConfig keys they set; the best configuration is
    the one with the best validation MAP pooled over the folds' queries."""

    out: str = setting("drawmatch-out", help="output root")
    name: str = setting("sweep", help="sweep folder name under out")
    base: TrainConfig = section(TrainConfig)
    margins: tuple[float, ...] = setting(
        (0.7, 1.0), **range_of(TrainConfig, "margin"), help="margins"
    )
    lrs: tuple[float, ...] = setting(
        (1e-6, 1e-4), **range_of(TrainConfig, "lr"), help="learning rates"
    )
    backbones: tuple[str, ...] = setting(("resnext101_32x8d",), help="backbones")
    use_styles: tuple[bool, ...] = setting((True,), help="use_styles values")
    n_hardest: tuple[int, ...] = setting(
        (10,), **range_of(TrainConfig, "n_hardest"), help="n_hardest"
    )
    screen_fold: int = setting(0, ge=0, help="fold of the first stage")
    max_folds: int | None = setting(None, ge=1, help="folds of the second stage (null: all)")
    top_k: int = setting(2, ge=1, help="configurations kept for the second stage")
    grace_period: int = setting(
        1, ge=1, help="epochs before a trial can be stopped (<= base.epochs)"
    )
    reduction_factor: int = setting(2, ge=2, help="successive halving: trials kept 1 in this")
    max_concurrent_trials: int = setting(1, ge=1, help="trials at once")
    trial_cpus: float = setting(0.1, ge=0, le=1024, help="CPUs of a trial's driver (0: none)")
    ray: RayConfig = section(RayConfig)
    losses: tuple[str, ...] = setting(("triplet",), **range_of(TrainConfig, "loss"), help="losses")
    l2sp: tuple[float, ...] = setting((0.0,), **range_of(TrainConfig, "l2sp"), help="l2sp values")
    train_blocks: tuple[int, ...] = setting(
        (0,), **range_of(TrainConfig, "train_blocks"), help="train_blocks values"
    )
    pseudo_epochs: tuple[int, ...] = setting(
        (0,), **range_of(TrainConfig, "pseudo_epochs"), help="pseudo_epochs values"
    )

    def check(self) -> None:
        folder_name("name", self.name)
        if self.grace_period > self.base.epochs:
            raise ConfigError(
                f"grace_period: {self.grace_period} exceeds base.epochs ({self.base.epochs})"
            )


SEARCH_KEYS = (
    "margin",
    "lr",
    "backbone",
    "use_styles",
    "n_hardest",
    "loss",
    "l2sp",
    "train_blocks",
    "pseudo_epochs",
)


def grid(config: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of the searched values, each with a short stable id."""
    combos = []
    for values in itertools.product(
        config.margins,
        config.lrs,
        config.backbones,
        config.use_styles,
        config.n_hardest,
        config.losses,
        config.l2sp,
        config.train_blocks,
        config.pseudo_epochs,
    ):
        params = dict(zip(SEARCH_KEYS, values))
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        combos.append({"id": digest, **params})
    return combos


def trial_train_config(
    base: TrainConfig, params: dict[str, Any], fold_csv: str, run_name: str
) -> TrainConfig:
    """The train config of one trial: the sweep's base config with the trial's values."""
    return replace(
        base,
        fold_csv=fold_csv,
        run_name=run_name,
        margin=float(params["margin"]),
        lr=float(params["lr"]),
        use_styles=bool(params["use_styles"]),
        n_hardest=int(params["n_hardest"]),
        loss=str(params.get("loss", base.loss)),
        l2sp=float(params.get("l2sp", base.l2sp)),
        train_blocks=int(params.get("train_blocks", base.train_blocks)),
        pseudo_epochs=int(params.get("pseudo_epochs", base.pseudo_epochs)),
        model=replace(base.model, backbone=str(params["backbone"])),
    )


def pooled_val_map(run_dirs: list[str]) -> float:
    """Validation MAP over the union of the runs' validation queries: each run's MAP of its
    chosen weights weighted by its number of validation queries (-1 when there are none)."""
    total = weight = 0.0
    for run_dir in run_dirs:
        summary = json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))
        best = summary["best"]["val"]
        n = float(best.get("val_n_queries", 0) or 0)
        total += n * float(best.get("val_MAP", 0.0))
        weight += n
    return total / weight if weight else -1.0


def train_trial(tune_config: dict[str, Any]) -> None:
    """Tune trainable: one Ray Train run for one configuration on one fold."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from drawmatch.jobs import train

    trial = tune_config["trial"]
    base = from_dict(TrainConfig, trial["base"])
    params = trial["params"]
    config = trial_train_config(base, params, trial["fold_csv"], trial["run_name"])
    train.run(config, callbacks=[TuneReportCallback()])


def fold_files(config: SweepConfig) -> list[str]:
    folds = storage.list_files(storage.join(config.out, "folds"), "fold_*.csv")
    if not folds:
        raise FileNotFoundError(
            f"no folds under {storage.join(config.out, 'folds')}: run `drawmatch split`"
        )
    return folds[: config.max_folds] if config.max_folds else folds


def _run_stage(
    name: str, directory: str, trials: list[dict[str, Any]], config: SweepConfig, scheduler: Any
) -> Any:
    from ray import tune

    trainable = tune.with_resources(train_trial, {"CPU": config.trial_cpus})
    path = storage.join(directory, name)
    param_space = {"trial": tune.grid_search(trials)}
    if tune.Tuner.can_restore(path):
        print(f"sweep: resuming {path}")
        tuner = tune.Tuner.restore(
            path, trainable=trainable, resume_errored=True, param_space=param_space
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="val_MAP",
                mode="max",
                scheduler=scheduler,
                max_concurrent_trials=config.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(name=name, storage_path=directory, verbose=0),
        )
    return tuner.fit()


def check_resources(config: SweepConfig) -> None:
    """A trial that can never be scheduled makes a sweep wait forever: refuse it up front."""
    from drawmatch.runtime.ray_setup import check_resources as check

    base = config.base
    need = {"CPU": config.trial_cpus + base.num_workers * base.cpus_per_worker}
    if base.use_gpu:
        need["GPU"] = float(base.num_workers)
    check(
        config.ray,
        need,
        "a sweep trial (trial_cpus + base.num_workers x base.cpus_per_worker)",
        "lower base.cpus_per_worker (fractions are fine)",
    )


@dataclass
class SweepResult:
    directory: str
    screened: list[dict[str, Any]]
    table: dict[str, Any]
    best: dict[str, Any]
    best_config: str


def run(config: SweepConfig) -> SweepResult:
    """Screen every configuration on one fold, confirm the best `top_k` on every fold, and write
    the table and the best configuration's train config."""
    from drawmatch.runtime.ray_setup import init_ray

    out = storage.absolute(config.out)
    base = replace(config.base, out=out)
    folds = fold_files(replace(config, out=out))
    directory = storage.join(out, "sweep", config.name)
    storage.makedirs(directory)
    save_config(config, storage.join(directory, "sweep_config.yaml"))
    init_ray(config.ray)
    check_resources(config)
    combos = grid(config)
    base_dict = to_dict(base)

    screened = _screen(config, directory, base_dict, combos, folds)
    top = [r for r in screened[: config.top_k]]
    by_id = {c["id"]: c for c in combos}
    table = _confirm(config, out, directory, base_dict, by_id, top, folds)
    best_id = max(table, key=lambda i: (table[i]["pooled_val_MAP"], i))
    best_train = trial_train_config(base, by_id[best_id], folds[0], f"{config.name}-best")
    best_path = storage.join(directory, "best_train_config.yaml")
    save_config(best_train, best_path)
    storage.write_bytes(
        storage.join(directory, "table.json"),
        json.dumps({"screened": screened, "confirmed": table, "best": best_id}, indent=2).encode(),
    )
    print(
        f"best configuration {best_id}: {json.dumps(table[best_id]['params'])}; train config "
        f"written to {best_path} (set fold_csv per fold)"
    )
    return SweepResult(directory, screened, table, table[best_id], best_path)


def _screen(
    config: SweepConfig,
    directory: str,
    base_dict: dict[str, Any],
    combos: list[dict[str, Any]],
    folds: list[str],
) -> list[dict[str, Any]]:
    """Stage 1: screen every configuration on one fold, ASHA stops the weak ones early; the
    configurations with their best validation MAP, best first."""
    from ray.tune.schedulers import ASHAScheduler

    screen_fold = folds[min(config.screen_fold, len(folds) - 1)]
    stage1 = [
        {
            "base": base_dict,
            "params": c,
            "fold_csv": screen_fold,
            "run_name": f"{config.name}-s1-{c['id']}-{storage.stem(screen_fold)}",
        }
        for c in combos
    ]
    # A run reports once per epoch and once at the end: max_t lies beyond that, so ASHA only ever
    # stops the trials it prunes. Stopping a run at its last report would kill its Train
    # controller before the run has written its results.
    asha = ASHAScheduler(
        max_t=config.base.epochs + max(config.pseudo_epochs) + 2,
        grace_period=config.grace_period,
        reduction_factor=config.reduction_factor,
        stop_last_trials=False,
    )
    results1 = _run_stage("stage1", directory, stage1, config, asha)
    screened = []
    for result in results1:
        params = result.config["trial"]["params"]
        history = result.metrics_dataframe
        best = (
            float(history["val_MAP"].max())
            if history is not None and "val_MAP" in history
            else -1.0
        )
        screened.append({**params, "screen_val_MAP": best})
    screened.sort(key=lambda r: (-r["screen_val_MAP"], r["id"]))
    print("sweep stage 1 (one fold, ASHA):")
    for r in screened:
        print(
            f"  {r['id']} {json.dumps({k: r[k] for k in SEARCH_KEYS})} "
            f"val MAP {r['screen_val_MAP']:.2f}"
        )
    return screened


def _confirm(
    config: SweepConfig,
    out: str,
    directory: str,
    base_dict: dict[str, Any],
    by_id: dict[str, dict[str, Any]],
    top: list[dict[str, Any]],
    folds: list[str],
) -> dict[str, Any]:
    """Stage 2: the top configurations on every fold, no pruning; their fold tables and pooled
    validation MAP by configuration id."""
    stage2 = [
        {
            "base": base_dict,
            "params": by_id[r["id"]],
            "fold_csv": f,
            "run_name": f"{config.name}-s2-{r['id']}-{storage.stem(f)}",
        }
        for r in top
        for f in folds
    ]
    _run_stage("stage2", directory, stage2, config, None)
    table: dict[str, Any] = {}
    for r in top:
        run_dirs = [
            storage.join(out, "runs", f"{config.name}-s2-{r['id']}-{storage.stem(f)}")
            for f in folds
        ]
        tables = fold_tables(run_dirs)
        table[r["id"]] = {
            "params": {k: r[k] for k in SEARCH_KEYS},
            "tables": {n: {k: list(v) for k, v in t.items()} for n, t in tables.items()},
            "pooled_val_MAP": pooled_val_map(run_dirs),
        }
        print(f"sweep stage 2, configuration {r['id']} {json.dumps(table[r['id']]['params'])}:")
        print(format_fold_tables(tables, len(run_dirs)))
        print(f"validation MAP pooled over the folds: {table[r['id']]['pooled_val_MAP']:.2f}")
    return table
