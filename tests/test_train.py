"""The train job end to end on local Ray (2 gloo workers, tiny backbone, tiny images)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from drawmatch import embed, train
from drawmatch.settings import ConfigError, EmbedConfig, TrainConfig, load_config
from tests.conftest import tiny_training_set

N_PAIRS = 12


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    return tiny_training_set(tmp_path_factory.mktemp("train"))


def _config(out, fold_csv, *overrides):
    return load_config(
        TrainConfig,
        None,
        [
            f"out={out}",
            f"fold_csv={fold_csv}",
            "model.backbone=tiny",
            "model.pretrained=false",
            "model.image_size=32",
            "train_resize=36",
            "train_crop=32",
            "batch_size=2",
            "n_hardest=3",
            "lr=0.01",
            "patience=10",
            "cpus_per_worker=0.5",
            "num_workers=2",
            *overrides,
        ],
    )


def test_training_lowers_the_loss_and_writes_usable_checkpoints(ray_local, fold):
    out, fold_csv = fold
    result = train.run(_config(out, fold_csv, "epochs=4", "run_name=lower"))
    history = result.summary["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert all(h["steps"] == 2 for h in history)  # 8 pairs / (2 workers x 2 per step)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0.0 <= history[0]["mining_share"] < 1.0
    assert result.summary["baseline"]["test"]["n_queries"] == 2
    assert result.summary["best"]["test"]["n_queries"] == 2
    run_dir = Path(result.run_dir)
    assert len(list(run_dir.glob("checkpoint_*"))) >= 1
    assert (
        json.loads((run_dir / train.METRICS_FILE).read_text())["best_epoch"]
        == result.summary["best_epoch"]
    )

    # The best weights plug into the embed job.
    embedded = embed.run(
        load_config(
            EmbedConfig,
            None,
            [
                f"out={out}",
                "model.backbone=tiny",
                "model.pretrained=false",
                "model.image_size=32",
                f"model.weights={result.best_model}",
            ],
        )
    )
    assert "-ft-" in embedded.model_tag and embedded.embedded == 2 * N_PAIRS
    saved = torch.load(result.best_model, weights_only=True)
    assert saved["epoch"] == result.summary["best_epoch"]


def test_a_run_resumes_from_its_last_checkpoint(ray_local, fold):
    out, fold_csv = fold
    first = train.run(_config(out, fold_csv, "epochs=1", "run_name=resume"))
    assert [h["epoch"] for h in first.summary["history"]] == [0]
    again = train.run(_config(out, fold_csv, "epochs=2", "run_name=resume"))
    history = again.summary["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0] == first.summary["history"][0]  # epoch 0 was not trained again
    assert again.summary["baseline"] == first.summary["baseline"]


def _train_worker_pids() -> list[int]:
    """Processes of Ray Train workers (Ray titles them `ray::RayTrainWorker...`)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker"):
            pids.append(int(proc.info["pid"]))
    return sorted(pids)


def test_a_killed_worker_does_not_lose_the_run(ray_local, fold):
    import os
    import signal

    out, fold_csv = fold
    config = _config(out, fold_csv, "epochs=3", "run_name=killed", "max_failures=2")
    run_dir = Path(out) / "runs" / "killed"
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            workers = _train_worker_pids()
            if list(run_dir.glob("checkpoint_*")) and workers:
                os.kill(workers[-1], signal.SIGKILL)
                killed.append(workers[-1])
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    result = train.run(config)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    history = result.summary["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_train_config_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="train_crop"):
        load_config(TrainConfig, None, ["train_resize=100", "train_crop=200"])
    with pytest.raises(ConfigError, match="loss"):
        load_config(TrainConfig, None, ["loss=hinge"])
    with pytest.raises(ValueError, match="fold_csv"):
        train.run(load_config(TrainConfig, None, [f"out={tmp_path}"]))


def test_a_set_with_fewer_queries_than_workers_is_evaluated(ray_local, fold):
    """One val query and two workers: one rank embeds nothing, and the gathered embeddings must
    still line up (an empty shard keeps the embedding width)."""
    import pandas as pd

    out, fold_csv = fold
    rows = pd.read_csv(fold_csv, dtype=str, keep_default_na=False)
    val = rows.index[rows["set"] == "val"]
    rows.loc[val[1:], "set"] = "train"  # 9 train pairs, 1 val, 2 test
    odd = Path(fold_csv).with_name("fold_odd.csv")
    rows.to_csv(odd, index=False)
    result = train.run(_config(out, odd, "epochs=1", "run_name=odd"))
    assert result.summary["baseline"]["val"]["n_queries"] == 1
    assert result.summary["history"][0]["val_n_queries"] == 1
