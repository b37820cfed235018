"""A vision transformer through every job on local Ray: embed, search's query path, train and a
sweep with DINOv2 ViT-S/14 on random weights (its real architecture code) at 56 px, tiny images,
one epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drawmatch.core.config import load_config
from drawmatch.data import embeddings
from drawmatch.jobs import embed, train
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.train import TrainConfig
from drawmatch.models.backbones import resolve_model
from drawmatch.models.embedder import embed_image_file
from drawmatch.workflows import sweep
from drawmatch.workflows.sweep import SweepConfig
from tests.conftest import tiny_training_set

pytest.importorskip("timm")

VIT = [
    "model.backbone=dinov2_vits14",
    "model.pretrained=false",
    "model.image_size=56",
]
TRAIN = [
    "train_resize=64",
    "train_crop=56",
    "batch_size=2",
    "n_hardest=3",
    "epochs=1",
    "lr=0.001",
    "cpus_per_worker=0.5",
    "num_workers=2",
]


@pytest.mark.slow
def test_a_vit_runs_embed_search_train_and_sweep(ray_local, tmp_path):
    out, fold_csv = tiny_training_set(tmp_path, n_folds=1)

    # embed: the tag names backbone, its default pooling (cls), the size and the weights
    result = embed.run(load_config(EmbedConfig, None, [f"out={out}", *VIT, "batch_size=4"]))
    assert result.model_tag == "dinov2_vits14-cls-56-random"
    assert result.embedded == 24 and not result.errors
    info = json.loads((out / "embeddings" / result.model_tag / "model.json").read_text())
    assert info["dim"] == 384 and info["model"]["pooling"] == "cls"
    assert info["model"]["image_size"] == 56
    ids, vectors = embeddings.read_embeddings(out, result.model_tag)
    assert vectors.shape == (24, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)

    # search's query path rebuilds the same model and preprocessing from model.json
    query = embed_image_file(tmp_path / "d" / "draw00.png", out, result.model_tag)
    np.testing.assert_allclose(query[0], vectors[ids.index("draw00")], atol=1e-5)

    # train: one epoch on 2 gloo workers, checkpoints that load into the same backbone
    config = load_config(
        TrainConfig, None, [f"out={out}", f"fold_csv={fold_csv}", *VIT, *TRAIN, "run_name=vit"]
    )
    trained = train.run(config)
    assert [h["epoch"] for h in trained.summary["history"]] == [0]
    assert trained.summary["best"]["test"]["n_queries"] == 2
    again = embed.run(
        load_config(EmbedConfig, None, [f"out={out}", *VIT, f"model.weights={trained.best_model}"])
    )
    if trained.summary["best_epoch"] == -1:  # the epoch did not beat the starting weights
        assert again.model_tag == result.model_tag and again.already_done == 24
    else:
        assert again.model_tag.startswith("dinov2_vits14-cls-56-ft-") and again.embedded == 24

    # sweep: one configuration screened on the fold and confirmed on it
    swept = sweep.run(
        load_config(
            SweepConfig,
            None,
            [
                f"out={out}",
                "name=vit",
                *[f"base.{o}" for o in VIT + TRAIN],
                "margins=[0.5]",
                "lrs=[0.001]",
                "backbones=[dinov2_vits14]",
                "use_styles=[false]",
                "n_hardest=[3]",
                "top_k=1",
                "trial_cpus=0.1",
            ],
        )
    )
    (best_id,) = swept.table
    assert swept.best["params"]["backbone"] == "dinov2_vits14"
    best = load_config(TrainConfig, swept.best_config)
    assert best.model.backbone == "dinov2_vits14"
    # pooling stays null in the sweep's config (each backbone its own): cls for this one
    assert best.model.pooling is None and resolve_model(best.model).pooling == "cls"
    mean, std = swept.table[best_id]["tables"]["val/fine-tuned"]["MAP"]
    assert 0.0 <= mean <= 100.0 and std >= 0.0
