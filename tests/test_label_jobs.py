"""The verify and classify jobs end to end on local Ray with the tiny backbone, on a tiny
folder-per-label set (each label a colour, its images noisy variants of it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings as store
from drawmatch.models.embedder import ModelConfig
from tests.conftest import hand_catalogue

JOBS = Path(__file__).resolve().parents[1] / "jobs"
TINY = [
    "model.backbone=tiny",
    "model.image_size=32",
    "train_resize=36",
    "train_crop=32",
    "eval_batch_size=8",
    "cpus_per_worker=0.5",
]


# A small run of each job on the `styles` set.
VERIFY = (
    "steps_per_epoch=2",
    "batch_size=2",
    "test_labels=0.34",
    "val_images=0.2",
    "eval_triplets=50",
    "lr=1e-3",
)
CLASSIFY = ("val=0.2", "test=0.2", "batch_size=4", "head_lr=0.01")


def _args(out: Path, styles: Path, *keys: str) -> list[str]:
    """A job's arguments: `out`, the `styles` images, the tiny model, then `keys`."""
    return [f"out={out}", f"data.images={styles}", *TINY, *keys]


def _job(name: str):
    sys.path.insert(0, str(JOBS))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def styles(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("labelled") / "movements"
    rng = np.random.default_rng(0)
    for c in range(6):
        base = rng.integers(0, 255, (3, 3, 3)).astype(int)
        for i in range(5):
            noisy = np.clip(base + rng.integers(-25, 25, (3, 3, 3)), 0, 255).astype(np.uint8)
            path = root / f"movement{c}" / f"painting{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(noisy).resize((40, 40), Image.Resampling.BICUBIC).save(path)
    return root


@pytest.mark.slow
def test_verify_trains_on_labels_and_scores_unseen_labels(ray_local, styles, tmp_path):
    from drawmatch.models.backbones import create_backbone, load_weights

    out = tmp_path / "out"
    args = _args(
        out,
        styles,
        *VERIFY,
        "triplets=random",
        "loss=triplet",
        "epochs=2",
        "labels_per_batch=2",
        "images_per_label=2",
        "run_name=r",
    )
    assert _job("verify").main(args) == 0
    run = out / "verify" / "r"
    splits = pd.read_csv(run / "splits.csv")
    test_labels = set(splits.loc[splits["set"] == "test", "label"])
    assert len(test_labels) == 2  # 34 % of 6 labels
    assert not test_labels & set(splits.loc[splits["set"] != "test", "label"])
    assert (splits["set"] == "val").sum() == 4  # 20 % of the 20 training-label images
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["best"]["test"]
    assert test["n_labels"] == 2 and test["n_images"] == 10
    assert test["n_pairs"] == 45
    assert 0.0 <= test["triplet_accuracy"] <= 1.0 and 0.0 <= test["roc_auc"] <= 1.0
    assert metrics["baseline"]["test"]["n_pairs"] == 45
    assert [r["epoch"] for r in metrics["history"]] == [0, 1]
    assert all(np.isfinite(r["train_loss"]) for r in metrics["history"])
    assert metrics["data"]["sets"]["test"] == {"images": 10, "labels": 2}
    backbone = create_backbone("tiny", pretrained=False)
    load_weights(backbone, run / "best_model.pt")  # the weights embed --weights reads


def _verify_worker(styles: Path, **keys: Any):
    """A verify worker in this process on the `styles` set (label-disjoint split, tiny model,
    lr 1e-2, 20 evaluation triplets; `keys` set the rest)."""
    from drawmatch.jobs.verify import Verifier, VerifyConfig
    from drawmatch.training.labels import LabelsConfig, label_disjoint_split, load_labelled

    table = load_labelled(LabelsConfig(images=str(styles))).images
    table["set"] = label_disjoint_split(table["label"], 0.34, 0.2, 0).to_numpy()
    config = VerifyConfig(
        data=LabelsConfig(images=str(styles)),
        lr=1e-2,
        eval_triplets=20,
        model=ModelConfig(backbone="tiny", pretrained=False, image_size=32),
        train_resize=36,
        train_crop=32,
        **keys,
    )
    return Verifier(config, table)


@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_mined_steps_without_ray_move_the_weights(styles, loss):
    """The `triplets=mined` branch of a worker in one process: P x K batches, batch-hard
    triplets (or every pair), finite losses, weights that change, scores in range."""
    from drawmatch.models.backbones import weights_hash

    worker = _verify_worker(
        styles,
        triplets="mined",
        loss=loss,
        steps_per_epoch=3,
        labels_per_batch=3,
        images_per_label=2,
    )
    before = weights_hash(worker.module)
    record = worker.train_epoch(0)
    assert record["steps"] == 3 and np.isfinite(record["train_loss"])
    assert weights_hash(worker.module) != before
    scores = worker.evaluate("test")
    assert scores["n_labels"] == 2 and 0.0 <= scores["roc_auc"] <= 1.0


def test_a_verify_checkpoint_restores_a_worker_exactly(styles, tmp_path):
    """In one process: a verify worker's checkpoint (the train job's format) restores a fresh
    worker with the same weights, optimiser, state and best weights, and records the restart."""
    from drawmatch.training.checkpoints import CHECKPOINT_FILE, Resume, TrainCheckpoint

    worker = _verify_worker(styles, steps_per_epoch=2, batch_size=2)
    worker.baseline()
    record, stop = worker.run_epoch(0)
    assert not stop and worker.state.step == 2 and worker.state.history == [record]
    worker.save(tmp_path)
    again = _verify_worker(styles, steps_per_epoch=2, batch_size=2)
    resume = again.restore(TrainCheckpoint.load(tmp_path / CHECKPOINT_FILE))
    assert resume == Resume(epoch=1, step=2, weights_hash=worker.weights_hash())
    assert again.weights_hash() == worker.weights_hash()
    assert again.state.history == worker.state.history
    assert again.state.baseline == worker.state.baseline
    assert again.optimizer.state_dict()["state"][0]["step"] == 2
    assert all(torch.equal(again.best_model[k], v) for k, v in worker.best_model.items())


def _latest_checkpoint(run: Path):
    from drawmatch.training.checkpoints import CHECKPOINT_FILE, TrainCheckpoint

    latest = max((p for p in run.glob("checkpoint_*") if p.is_dir()), key=lambda p: p.name)
    return TrainCheckpoint.load(latest / CHECKPOINT_FILE)


@pytest.mark.slow
def test_verify_resumes_from_its_last_checkpoint(ray_local, styles, tmp_path):
    """A run of one epoch, then the same run with two: the second continues from the first's
    last checkpoint (epoch 0 is not trained again) instead of starting over."""
    args = _args(tmp_path / "out", styles, *VERIFY, "run_name=again")
    verify = _job("verify")
    assert verify.main([*args, "epochs=1"]) == 0
    metrics_file = tmp_path / "out" / "verify" / "again" / "metrics.json"
    first = json.loads(metrics_file.read_text())
    assert first["resumes"] == []
    assert verify.main([*args, "epochs=2"]) == 0
    again = json.loads(metrics_file.read_text())
    assert [r["epoch"] for r in again["history"]] == [0, 1]
    assert again["history"][0] == first["history"][0]
    assert again["baseline"] == first["baseline"]
    (resume,) = again["resumes"]
    assert (resume["epoch"], resume["step"]) == (1, 2)
    assert _latest_checkpoint(metrics_file.parent).state.history == again["history"]


@pytest.mark.slow
def test_classify_finetune_resumes_from_its_last_checkpoint(ray_local, styles, tmp_path):
    """The same for the classify fine-tune: the rerun continues at epoch 1."""
    args = _args(tmp_path / "out", styles, *CLASSIFY, "method=finetune", "run_name=again")
    classify = _job("classify")
    assert classify.main([*args, "epochs=1"]) == 0
    run = tmp_path / "out" / "classify" / "again"
    first = json.loads((run / "metrics.json").read_text())
    assert _latest_checkpoint(run).state.resumes == []
    assert classify.main([*args, "epochs=2"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in again["history"]] == [0, 1]
    assert again["history"][0] == first["history"][0]
    state = _latest_checkpoint(run).state
    (resume,) = state.resumes
    assert resume.epoch == 1 and resume.step == 5  # 18 training images, 4 a step
    assert state.history == again["history"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["probe", "finetune"])
def test_classify_writes_metrics_and_confusion(ray_local, styles, tmp_path, method):
    out = tmp_path / "out"
    args = _args(out, styles, *CLASSIFY, f"method={method}", "epochs=2", "run_name=c")
    assert _job("classify").main(args) == 0
    run = out / "classify" / "c"
    metrics = json.loads((run / "metrics.json").read_text())
    predictions = pd.read_csv(run / "predictions.csv")
    test = predictions[predictions["set"] == "test"]
    assert len(test) == 6  # one of each movement's five images
    assert metrics["confusion_set"] == "test"
    expected_top1 = 100.0 * (test["label"] == test["predicted"]).mean()
    assert metrics["top1"]["test"] == pytest.approx(expected_top1)
    confusion = pd.read_csv(run / "confusion.csv", index_col=0)
    assert list(confusion.columns) == [f"movement{c}" for c in range(6)]
    assert int(confusion.to_numpy().sum()) == 6
    assert int(np.trace(confusion.to_numpy())) == int((test["label"] == test["predicted"]).sum())
    per_class = pd.read_csv(run / "per_class.csv")
    assert per_class["support"].tolist() == [1] * 6
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["head"]["weight"].shape == (6, 32)
    if method == "finetune":
        assert [r["epoch"] for r in metrics["history"]] == [0, 1]
        assert "model" in saved
    else:
        assert len(metrics["history"]) == 4  # one record per probe_l2 value


def test_probe_on_stored_embeddings_of_catalogue_labels(tmp_path):
    """`model_tag=` reads the embeddings store (no Ray): catalogue images labelled by a
    catalogue column; the probe separates two artists whose embeddings differ."""
    from drawmatch.jobs.classify import ClassifyConfig, run
    from drawmatch.training.labels import LabelsConfig
    from tests.conftest import make_image

    files = [make_image(tmp_path / "img" / f"a{i:02d}.jpg", seed=i) for i in range(20)]
    out = tmp_path / "out"
    df = hand_catalogue(out, {"artwork": files})
    df["artist"] = ["Monet" if i % 2 else "Kahlo" for i in range(20)]
    cat.write_catalogue(df, out)
    rng = np.random.default_rng(0)
    emb = rng.normal(scale=0.3, size=(20, 8)).astype(np.float32)
    emb[1::2, 0] += 3.0  # Monet's embeddings lie along the first axis, Kahlo's opposite
    emb[0::2, 0] -= 3.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    tag = "fake-avg-32-random"
    directory = store.embeddings_dir(out, tag)
    ids = df["id"].tolist()
    store.write_part(directory, store.embeddings_table(ids, df["sha256"].tolist(), emb, tag, "h"))
    store.write_model_info(directory, {"weights_hash": "h", "dim": 8})
    config = ClassifyConfig(
        out=str(out), data=LabelsConfig(label_column="artist"), model_tag=tag, run_name="p"
    )
    result = run(config)
    assert result.metrics["top1"]["test"] == 100.0
    assert result.metrics["classes"] == ["Kahlo", "Monet"]
    with pytest.raises(ValueError, match="leave data.images out"):
        run(ClassifyConfig(out=str(out), data=LabelsConfig(images=str(tmp_path)), model_tag=tag))


def test_verify_and_classify_refuse_bad_input_before_writing(tmp_path, capsys):
    from drawmatch.cli import main

    out = tmp_path / "out"
    assert main(["verify", f"out={out}"]) == 1
    assert "needs data.images=DIR" in capsys.readouterr().err
    assert main(["classify", f"out={out}", f"data.images={tmp_path / 'nope'}"]) == 1
    assert "data.images" in capsys.readouterr().err
    assert main(["verify", f"out={out}", "data.label_pattern=("]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", f"out={out}", f"data.images={empty}", "model.backbone=tiny"]) == 1
    assert "no labelled images" in capsys.readouterr().err
    assert not out.exists()
