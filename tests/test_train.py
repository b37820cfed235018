"""The train job end to end on local Ray (2 gloo workers, tiny backbone, tiny images)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from drawmatch.core.config import ConfigError, load_config
from drawmatch.jobs import embed, train
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.train import TrainConfig
from drawmatch.training import checkpoints
from tests.conftest import TINY_TRAIN as TINY
from tests.conftest import tiny_train_config

N_PAIRS = 12


def test_training_lowers_the_loss_and_writes_usable_checkpoints(ray_local, tiny_fold):
    out, fold_csv = tiny_fold
    result = train.run(tiny_train_config(out, fold_csv, "epochs=4", "run_name=lower"))
    history = result.summary["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert all(h["steps"] == 2 for h in history)  # 8 pairs / (2 workers x 2 per step)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0.0 <= history[0]["mining_share"] < 1.0
    # 4 anchors gathered from 2 workers, 8 refs (their positives and mined negatives): each anchor
    # has >= 1 positive and >= 1 negative ref, and p * n <= 4 * 4 with p + n = 8
    assert all(4 <= h["triplets_per_step"] <= 4 * 16 for h in history)
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
    assert embedded.embedded == 2 * N_PAIRS
    saved = torch.load(result.best_model, weights_only=True)
    assert saved["epoch"] == result.summary["best_epoch"]
    # Its tag says what the weights are: fine-tuned ones only if an epoch beat the starting
    # weights (the other case has its own test below).
    assert ("-ft-" in embedded.model_tag) == (result.summary["best_epoch"] >= 0)


def test_a_run_resumes_from_its_last_checkpoint(ray_local, tiny_fold):
    out, fold_csv = tiny_fold
    first = train.run(tiny_train_config(out, fold_csv, "epochs=1", "run_name=resume"))
    assert [h["epoch"] for h in first.summary["history"]] == [0]
    again = train.run(tiny_train_config(out, fold_csv, "epochs=2", "run_name=resume"))
    history = again.summary["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0] == first.summary["history"][0]  # epoch 0 was not trained again
    assert again.summary["baseline"] == first.summary["baseline"]


def test_a_checkpoint_is_a_typed_state_that_restores_a_trainer_exactly(tiny_fold, tmp_path):
    """In one process, without Ray: a trainer's checkpoint holds its TrainState (plain types, so
    it loads with weights_only=True) and state dicts; a fresh trainer restored from it has the
    same weights, optimiser and scheduler state and counters, and records the restart."""
    from drawmatch.models.backbones import weights_hash

    out, fold_csv = tiny_fold
    config = tiny_train_config(out, fold_csv, "num_workers=1", "epochs=3")
    trainer = train.Trainer(config)
    baseline = trainer.baseline()
    assert baseline["val"]["n_queries"] == 2 and trainer.state.best_score == baseline["val"]["MAP"]
    record, stop = trainer.run_epoch(0)
    assert not stop and record["steps"] == 4 and record["global_step"] == 4  # 8 pairs / 2
    assert record["weights_hash"] == trainer.weights_hash()
    trainer.save(tmp_path)

    raw = torch.load(tmp_path / checkpoints.CHECKPOINT_FILE, weights_only=True)
    assert set(raw) == {"state", "model", "best_model", "optimizer", "scheduler", "config"}
    state = checkpoints.TrainState.from_dict(raw["state"])
    assert state == trainer.state and state.to_dict() == raw["state"]
    assert (state.epoch, state.step, state.resumes) == (1, 4, [])
    assert json.loads(json.dumps(raw["state"])) == raw["state"]  # plain data

    again = train.Trainer(config)
    resume = again.restore(checkpoints.TrainCheckpoint.load(tmp_path / checkpoints.CHECKPOINT_FILE))
    assert resume == checkpoints.Resume(epoch=1, step=4, weights_hash=record["weights_hash"])
    assert again.state.resumes == [resume]
    assert (
        again.weights_hash() == trainer.weights_hash() != weights_hash(train.Trainer(config).module)
    )
    assert again.scheduler.state_dict() == trainer.scheduler.state_dict()
    assert again.optimizer.state_dict()["state"][0]["step"] == 4
    record1, _ = again.run_epoch(1)
    assert record1["global_step"] == 8 and [h["epoch"] for h in again.state.history] == [0, 1]
    summary, final = again.finish()
    assert summary["resumes"] == [{"epoch": 1, "step": 4, "weights_hash": record["weights_hash"]}]
    assert final["finished"] and final["epoch"] == 1
    assert again.weights_hash() == record1["weights_hash"]  # finish keeps the latest weights

    with pytest.raises(ValueError, match="train state"):
        checkpoints.TrainState.from_dict({"epoch": 1})


def _own_worker(run_dir: Path, rank: int) -> int | None:
    """The pid of rank `rank` of this run, from the file the worker wrote at its start, if that
    process is alive and is a Ray Train worker (not a recycled pid)."""
    import psutil

    path = run_dir / train.WORKERS_DIR / f"rank-{rank:03d}.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    assert info["run"] == run_dir.name and info["rank"] == rank
    try:
        cmdline = " ".join(psutil.Process(info["pid"]).cmdline())
    except psutil.Error:
        return None
    return int(info["pid"]) if cmdline.startswith("ray::RayTrainWorker") else None


def test_a_killed_worker_does_not_lose_the_run(ray_local, tiny_fold):
    """A worker of this run (found by the pid it recorded, never another job's) is killed once a
    checkpoint is registered; the run must resume from that checkpoint (not from scratch): the
    epoch and step counters continue and the restored weights are the checkpoint's."""
    import os
    import signal

    out, fold_csv = tiny_fold
    config = tiny_train_config(out, fold_csv, "epochs=4", "run_name=killed", "max_failures=2")
    run_dir = Path(out) / "runs" / "killed"
    killed: list[int] = []

    def kill_after_a_registered_checkpoint() -> None:
        # A worker's reports go through a queue of one: once a third checkpoint is written the
        # first has certainly been taken by the controller, so the restart must use a checkpoint.
        seen: set[str] = set()
        deadline = time.time() + 300
        while time.time() < deadline:
            seen |= {p.name for p in run_dir.glob("checkpoint_*")}
            pid = _own_worker(run_dir, rank=1)
            if len(seen) >= 3 and pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_a_registered_checkpoint, daemon=True)
    killer.start()
    result = train.run(config)
    killer.join(timeout=5)
    assert killed, "no worker of this run was killed"
    summary = result.summary
    history = summary["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]  # each epoch once, none lost
    steps = [h["steps"] for h in history]
    assert [h["global_step"] for h in history] == [sum(steps[: i + 1]) for i in range(4)]
    # It resumed from a checkpoint, with that checkpoint's weights.
    (resume,) = summary["resumes"]
    assert 1 <= resume["epoch"] <= 3
    before = history[resume["epoch"] - 1]
    assert resume["step"] == before["global_step"]
    assert resume["weights_hash"] == before["weights_hash"]
    # The worker that replaced the killed one recorded itself, starting at the resumed epoch.
    info = json.loads((run_dir / train.WORKERS_DIR / "rank-001.json").read_text())
    assert info["pid"] != killed[0] and info["start_epoch"] == resume["epoch"]


def test_a_run_that_keeps_its_starting_weights_embeds_as_the_starting_model(ray_local, tiny_fold):
    """Best epoch -1 (no epoch beat the starting weights): best_model.pt holds the starting
    weights, and embedding with it gives the starting model's tag and weights hash, not `-ft-`."""
    out, fold_csv = tiny_fold
    result = train.run(
        tiny_train_config(out, fold_csv, "epochs=1", "patience=1", "lr=1e-12", "run_name=kept")
    )
    assert result.summary["best_epoch"] == -1
    assert torch.load(result.best_model, weights_only=True)["epoch"] == -1

    def embedded(*weights: str) -> embed.EmbedResult:
        model = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
        return embed.run(load_config(EmbedConfig, None, [f"out={out}", *model, *weights]))

    start = embedded()
    kept = embedded(f"model.weights={result.best_model}")
    assert kept.model_tag == start.model_tag and start.model_tag.endswith("-random")
    assert kept.weights_hash == start.weights_hash
    info = json.loads((Path(kept.directory) / "model.json").read_text())
    assert info["model_tag"] == start.model_tag and info["weights_hash"] == start.weights_hash


def test_train_config_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="train_crop"):
        load_config(TrainConfig, None, ["train_resize=100", "train_crop=200"])
    with pytest.raises(ConfigError, match="loss"):
        load_config(TrainConfig, None, ["loss=hinge"])
    with pytest.raises(ValueError, match="fold_csv"):
        train.run(load_config(TrainConfig, None, [f"out={tmp_path}"]))


def test_a_set_with_fewer_queries_than_workers_is_evaluated(ray_local, tiny_fold):
    """One val query and two workers: one rank embeds nothing, and the gathered embeddings must
    still line up (an empty shard keeps the embedding width)."""
    import pandas as pd

    out, fold_csv = tiny_fold
    rows = pd.read_csv(fold_csv, dtype=str, keep_default_na=False)
    val = rows.index[rows["set"] == "val"]
    rows.loc[val[1:], "set"] = "train"  # 9 train pairs, 1 val, 2 test
    odd = Path(fold_csv).with_name("fold_odd.csv")
    rows.to_csv(odd, index=False)
    result = train.run(tiny_train_config(out, odd, "epochs=1", "run_name=odd"))
    assert result.summary["baseline"]["val"]["n_queries"] == 1
    assert result.summary["history"][0]["val_n_queries"] == 1


def _hashes(trainer: train.Trainer, epochs: int) -> list[str]:
    trainer.baseline()
    return [trainer.run_epoch(e)[0]["weights_hash"] for e in range(epochs)]


def test_a_seed_gives_the_same_weights_again_even_through_a_resume(tiny_fold, tmp_path):
    """In one process: a pseudo epoch then a pair epoch, run twice with seed 0, give the same
    weights after each epoch; seed 1 gives others; a run checkpointed after its first epoch and
    restored in a fresh trainer ends with the weights of the run that went straight through
    (every random draw of a step comes from the seed, the rank and the step)."""
    out, fold_csv = tiny_fold
    keys = ("num_workers=1", "epochs=1", "pseudo_epochs=1", "selection=last")
    first = _hashes(train.Trainer(tiny_train_config(out, fold_csv, *keys)), 2)
    assert _hashes(train.Trainer(tiny_train_config(out, fold_csv, *keys)), 2) == first
    other = _hashes(train.Trainer(tiny_train_config(out, fold_csv, *keys, "seed=1")), 2)
    assert other[0] != first[0] and other[1] != first[1]

    stopped = train.Trainer(tiny_train_config(out, fold_csv, *keys))
    assert _hashes(stopped, 1) == first[:1]
    stopped.save(tmp_path)
    resumed = train.Trainer(tiny_train_config(out, fold_csv, *keys))
    resumed.restore(checkpoints.TrainCheckpoint.load(tmp_path / checkpoints.CHECKPOINT_FILE))
    assert resumed.run_epoch(1)[0]["weights_hash"] == first[1]


def test_two_ray_runs_with_one_seed_give_the_same_weights_and_metrics(ray_local, tiny_fold):
    """Two DDP workers on Ray, a pseudo epoch and a pair epoch: the same seed twice gives the
    same weights after every epoch and the same test metrics; another seed other weights."""
    out, fold_csv = tiny_fold

    def fit(name: str, seed: int) -> train.TrainResult:
        keys = ("epochs=1", "pseudo_epochs=1", "selection=last", f"seed={seed}")
        return train.run(tiny_train_config(out, fold_csv, *keys, f"run_name={name}"))

    runs = [fit("same-a", 0), fit("same-b", 0), fit("other", 1)]
    hashes = [[h["weights_hash"] for h in r.summary["history"]] for r in runs]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 2
    assert runs[0].summary["best"]["test"] == runs[1].summary["best"]["test"]
    assert hashes[2][0] != hashes[0][0] and hashes[2][1] != hashes[0][1]


def test_embed_takes_the_model_settings_from_the_checkpoint(ray_local, tiny_fold, tmp_path):
    """Weights trained as `tiny`, GeM pooling, 40 px: embed with only --weights uses those
    settings (the tag and model.json say so); a model key that contradicts the checkpoint is
    refused in one line before Ray is asked for anything; the same value given again is fine."""
    from drawmatch.models.backbones import create_backbone
    from tests.conftest import ray_never_started

    out, _fold_csv = tiny_fold
    net = create_backbone("tiny", False, "gem")
    with torch.no_grad():
        net.trunk[0].weight.mul_(1.5)  # fine-tuned weights, not the starting ones
    settings = {"backbone": "tiny", "pretrained": False, "image_size": 40, "pooling": "gem"}
    best = checkpoints.write_best_model(str(tmp_path), net.state_dict(), settings, 2)

    def config(*keys: str) -> EmbedConfig:
        return load_config(EmbedConfig, None, [f"out={out}", "model.pretrained=false", *keys])

    result = embed.run(config(f"model.weights={best}"))
    assert result.model_tag.startswith("tiny-gem-40-ft-") and result.embedded == 2 * N_PAIRS
    info = json.loads((Path(result.directory) / "model.json").read_text())
    assert (info["model"]["backbone"], info["model"]["image_size"], info["model"]["pooling"]) == (
        "tiny",
        40,
        "gem",
    )
    again = embed.run(config(f"model.weights={best}", "model.image_size=40", "model.pooling=gem"))
    assert again.model_tag == result.model_tag and again.embedded == 0
    for key, value in (("image_size", "32"), ("pooling", "avg"), ("backbone", "resnet50")):
        with ray_never_started(), pytest.raises(ValueError) as refused:
            embed.run(config(f"model.weights={best}", f"model.{key}={value}"))
        message = str(refused.value)
        assert f"model.{key}={value} contradicts" in message and "\n" not in message


def _fold_with(fold_csv: Path, name: str, **sets: str) -> Path:
    """A copy of the fold file with the sets of some drawings changed (drawing id -> set)."""
    import pandas as pd

    rows = pd.read_csv(fold_csv, dtype=str, keep_default_na=False)
    rows["set"] = [sets.get(d, s) for d, s in zip(rows["drawing_id"], rows["set"])]
    path = Path(fold_csv).with_name(name)
    rows.to_csv(path, index=False)
    return path


def test_a_pseudo_stage_alone_needs_no_training_pairs(tiny_fold):
    """epochs=0: a fold of validation and test drawings only trains its pseudo epoch and reports
    on them; the same run with epochs=1 is refused, in one line."""
    out, fold_csv = tiny_fold
    no_train = _fold_with(
        fold_csv, "fold_no_train.csv", **{f"draw{i:02d}": "val" for i in range(8)}
    )
    keys = ("num_workers=1", "epochs=0", "pseudo_epochs=1", "selection=last")
    trainer = train.Trainer(tiny_train_config(out, no_train, *keys))
    assert trainer.data.train.empty and len(trainer.data.queries["val"]) == 10
    assert trainer.baseline()["test"]["n_queries"] == 2
    record, _stop = trainer.run_epoch(0)
    assert (record["stage"], record["steps"], record["val_n_queries"]) == ("pseudo", 6, 10)
    with pytest.raises(ValueError, match="no training pairs for epochs=1") as refused:
        train.load_fold(tiny_train_config(out, no_train, "epochs=1"))
    assert "\n" not in str(refused.value)


def test_a_label_free_pseudo_stage_runs_without_a_fold_file(ray_local, tiny_fold):
    """No fold_csv: the pseudo stage trains on the gallery alone (Ray, 2 workers), reports no
    metrics and writes weights that differ from the starting ones; selection=val (nothing to
    select on) and epochs > 0 are refused before Ray is asked for anything."""
    from tests.conftest import ray_never_started

    out, _fold_csv = tiny_fold
    keys = ["epochs=0", "pseudo_epochs=1", "selection=last", "run_name=label-free"]
    config = load_config(TrainConfig, None, [f"out={out}", *TINY, *keys])
    result = train.run(config)
    assert [h["stage"] for h in result.summary["history"]] == ["pseudo"]
    assert result.summary["best"]["test"] == {} and result.summary["best_epoch"] == 0
    assert torch.load(result.best_model, weights_only=True)["epoch"] == 0
    for bad, message in (("selection=val", "selection=last"), ("epochs=1", "needs fold_csv")):
        with ray_never_started(), pytest.raises(ValueError, match=message):
            train.run(load_config(TrainConfig, None, [f"out={out}", *TINY, *keys, bad]))


def test_expert_negatives_reach_their_anchors_and_bad_ones_are_refused(tmp_path):
    """The `set=train` rows of a negatives file become the known negatives of their drawing, in
    file order (gallery index of art05, art03); other sets stay out. An unknown id, a verso, an
    artwork column naming a drawing and a non-match that is also a pair are refused in one line
    before Ray is asked for anything."""
    import pandas as pd

    from drawmatch.data import catalogue as cat
    from tests.conftest import ray_never_started, tiny_training_set

    out, fold_csv = tiny_training_set(tmp_path)
    catalogue = cat.read_catalogue(out)
    verso = catalogue[catalogue["id"] == "art00"].assign(id="art00_verso", verso=True)
    cat.write_catalogue(pd.concat([catalogue, verso], ignore_index=True), out)
    negatives = tmp_path / "negatives.csv"
    negatives.write_text(
        "drawing_id,artwork_id,set\ndraw00,art05,train\ndraw00,art03,train\ndraw08,art01,val\n"
    )
    config = tiny_train_config(out, fold_csv, "num_workers=1", f"negatives_csv={negatives}")
    data = train.load_fold(config)
    gallery = {a: i for i, a in enumerate(data.gallery)}
    assert data.negatives == {"draw00": [gallery["art05"], gallery["art03"]]}

    for row, message in (
        ("draw01,ghost", "1 id(s) not in the catalogue: ghost"),
        ("draw01,art00_verso", "1 verso(s): art00_verso"),
        ("draw01,draw02", "1 id(s) that are no usable drawing or gallery artwork: draw02"),
        ("draw01,art01", "1 non-match(es) that are also pairs of the fold: draw01 - art01"),
    ):
        negatives.write_text(f"drawing_id,artwork_id,set\ndraw00,art05,train\n{row},train\n")
        with ray_never_started(), pytest.raises(ValueError) as refused:
            train.run(config)
        assert message in str(refused.value) and "\n" not in str(refused.value)
