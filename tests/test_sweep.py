"""The sweep job on local Ray: two stages, aggregation, best config, resumption."""

from __future__ import annotations

import json

import pytest
import yaml

from drawmatch.core.config import ConfigError, load_config
from drawmatch.jobs.train import TrainConfig
from drawmatch.workflows import sweep
from drawmatch.workflows.sweep import SweepConfig
from tests.conftest import tiny_training_set

BASE = [
    "base.model.backbone=tiny",
    "base.model.pretrained=false",
    "base.model.image_size=32",
    "base.train_resize=36",
    "base.train_crop=32",
    "base.batch_size=2",
    "base.n_hardest=3",
    "base.epochs=2",
    "base.cpus_per_worker=0.5",
    "base.num_workers=2",
    "base.patience=5",
]


def test_two_stage_sweep_aggregates_folds_and_writes_the_best_config(ray_local, tmp_path):
    out, _fold = tiny_training_set(tmp_path, n_folds=2)
    config = load_config(
        SweepConfig,
        None,
        [
            f"out={out}",
            "name=t",
            *BASE,
            "margins=[0.3, 0.7]",
            "lrs=[0.01]",
            "backbones=[tiny]",
            "use_styles=[false]",
            "n_hardest=[3]",
            "top_k=1",
            "trial_cpus=0.1",
        ],
    )
    result = sweep.run(config)

    assert len(result.screened) == 2  # both configurations screened on one fold
    assert {r["margin"] for r in result.screened} == {0.3, 0.7}
    assert len(result.table) == 1  # top_k = 1 confirmed
    (best_id,) = result.table
    # Stage 2 ran the confirmed configuration on both folds, each a full Train run.
    for fold in ("fold_00", "fold_01"):
        summary = json.loads((out / "runs" / f"t-s2-{best_id}-{fold}" / "metrics.json").read_text())
        assert [h["epoch"] for h in summary["history"]] == [0, 1]
    table = result.table[best_id]["tables"]
    assert set(table) == {"val/pretrained", "val/fine-tuned", "test/pretrained", "test/fine-tuned"}
    mean, std = table["val/fine-tuned"]["MAP"]
    assert 0.0 <= mean <= 100.0 and std >= 0.0

    # The best configuration is a train config that loads as such.
    best = load_config(TrainConfig, result.best_config)
    assert best.margin == result.best["params"]["margin"]
    assert best.model.backbone == "tiny" and best.lr == 0.01
    assert yaml.safe_load(open(result.best_config))["out"] == str(out)

    # Running the same sweep again resumes: nothing is trained twice.
    before = sorted(p.name for p in (out / "runs").iterdir())
    again = sweep.run(config)
    assert sorted(p.name for p in (out / "runs").iterdir()) == before
    assert again.best["params"] == result.best["params"]


def test_sweep_that_cannot_be_scheduled_is_refused(ray_local, tmp_path):
    out, _fold = tiny_training_set(tmp_path)
    config = load_config(SweepConfig, None, [f"out={out}", *BASE, "base.cpus_per_worker=4"])
    with pytest.raises(ValueError, match="lower base.cpus_per_worker"):
        sweep.run(config)


def test_sweep_config_errors():
    with pytest.raises(ConfigError, match="margins"):
        load_config(SweepConfig, None, ["margins=[]"])
    with pytest.raises(ConfigError, match="base.epochs|epochs"):
        load_config(SweepConfig, None, ["base.epochs=zero"])
