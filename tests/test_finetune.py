"""Fine-tuning that should hold on unseen drawings: multi-positive losses, extra positives, partial
freezing, L2-SP, pseudo-pairs, last-epoch selection; the sweep's new keys and pooled choice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from drawmatch.core.config import ConfigError, load_config
from drawmatch.jobs import train
from drawmatch.jobs.train import TrainConfig
from drawmatch.models.backbones import create_backbone
from drawmatch.training import losses, pseudo_pairs
from drawmatch.training.freezing import drift, l2sp_penalty, trunk_blocks
from drawmatch.training.losses import make_loss, retrieval_step_loss
from drawmatch.training.mining import extra_positives
from drawmatch.workflows import sweep
from drawmatch.workflows.sweep import SweepConfig
from tests.conftest import tiny_train_config

# Two anchors and four refs on the unit circle, so that every cosine similarity is cos(angle).
ANGLES_A = [0.0, math.pi / 2]
ANGLES_R = [0.3, 1.2, 2.0, -0.6]
MASK = torch.tensor([[True, True, False, False], [False, True, False, True]])


def _unit(angles):
    return torch.tensor([[math.cos(t), math.sin(t)] for t in angles], dtype=torch.float32)


def _sims():
    return [[math.cos(a - r) for r in ANGLES_R] for a in ANGLES_A]


def test_multi_similarity_loss_matches_the_paper_formula_by_hand():
    alpha, beta, lam = 2.0, 50.0, 0.5
    expected = []
    for i, row in enumerate(_sims()):
        pos = [s for s, m in zip(row, MASK[i].tolist()) if m]
        neg = [s for s, m in zip(row, MASK[i].tolist()) if not m]
        expected.append(
            math.log(1 + sum(math.exp(-alpha * (s - lam)) for s in pos)) / alpha
            + math.log(1 + sum(math.exp(beta * (s - lam)) for s in neg)) / beta
        )
    got = retrieval_step_loss(
        make_loss("multi_similarity"), _unit(ANGLES_A), _unit(ANGLES_R), MASK, "multi_similarity"
    )
    assert float(got) == pytest.approx(sum(expected) / 2, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_loss_matches_the_paper_formula_by_hand(temperature):
    expected = []
    for i, row in enumerate(_sims()):
        log_z = math.log(sum(math.exp(s / temperature) for s in row))
        pos = [s for s, m in zip(row, MASK[i].tolist()) if m]
        expected.append(-sum(s / temperature - log_z for s in pos) / len(pos))
    got = retrieval_step_loss(
        make_loss("supcon", temperature=temperature),
        _unit(ANGLES_A),
        _unit(ANGLES_R),
        MASK,
        "supcon",
    )
    assert float(got) == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_multi_positive_losses_reward_pulling_every_positive_close():
    """Moving an anchor's second positive onto it lowers both losses; the triplet loss over all
    positives counts one triplet per (positive, negative)."""
    anchors, refs = _unit([0.0]), _unit([0.1, 1.4, 0.9])
    mask = torch.tensor([[True, True, False]])
    closer = _unit([0.1, 0.2, 0.9])
    for mode in ("multi_similarity", "supcon"):
        loss_fn = make_loss(mode)
        far = retrieval_step_loss(loss_fn, anchors, refs, mask, mode)
        near = retrieval_step_loss(loss_fn, anchors, closer, mask, mode)
        assert float(near) < float(far), mode
    triplet = retrieval_step_loss(make_loss("triplet", 0.7), anchors, refs, mask, "triplet")
    # triplets (p=0.1, n=0.9) and (p=1.4, n=0.9): d_ap - d_an + 0.7, both > 0
    d = [1 - math.cos(t) for t in (0.1, 1.4, 0.9)]
    assert float(triplet) == pytest.approx(
        ((d[0] - d[2] + 0.7) + (d[1] - d[2] + 0.7)) / 2, rel=1e-5
    )


def test_extra_positives_come_from_the_anchor_positives_and_never_repeat_the_given_one():
    sets = [{3, 5, 7, 9}, {2}, {4, 6}]
    given = [5, 2, 6]
    gen = torch.Generator().manual_seed(0)
    more = extra_positives(sets, given, 3, gen)
    assert len(more[0]) == 2 and set(more[0]) <= {3, 7, 9} and len(set(more[0])) == 2
    assert more[1] == []  # no other positive
    assert more[2] == [4]  # fewer than asked: all of them
    assert extra_positives(sets, given, 1, gen) == [[], [], []]
    assert extra_positives(sets, given, 10, gen)[0] != [] and sorted(
        extra_positives(sets, given, 10, gen)[0]
    ) == [3, 7, 9]
    again = extra_positives(sets, given, 3, torch.Generator().manual_seed(0))
    assert again == more  # reproducible with the generator
    with pytest.raises(ValueError):
        extra_positives(sets, given[:2], 2)


def test_trunk_blocks_of_the_registered_backbones():
    tiny = create_backbone("tiny", False)
    # the tiny trunk: conv, BN, (ReLU), conv, BN, (ReLU), conv; parameter-free layers are left out
    assert [n for n, _ in trunk_blocks(tiny)] == [
        "trunk.0",
        "trunk.1",
        "trunk.3",
        "trunk.4",
        "trunk.6",
    ]
    effnet = create_backbone("efficientnet_lite0", False)
    names = [n for n, _ in trunk_blocks(effnet)]
    assert names[:2] == ["trunk.model._conv_stem", "trunk.model._bn0"]
    assert names[2:18] == [f"trunk.model._blocks.{i}" for i in range(16)]
    assert names[18:] == ["trunk.model._conv_head", "trunk.model._bn1"]
    # every parameter belongs to exactly one block
    owned = [f"{n}.{p}" for n, m in trunk_blocks(effnet) for p, _ in m.named_parameters()]
    assert sorted(owned) == sorted(n for n, _ in effnet.named_parameters())


def test_l2sp_penalty_by_hand_counts_only_trained_parameters():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        net[0].weight += torch.tensor([[0.5, 0.0], [0.0, -1.0]])  # squares 0.25 + 1
        net[1].bias -= 2.0  # square 4
    assert float(l2sp_penalty(net, start, 0.1).detach()) == pytest.approx(0.1 * 5.25)
    net[1].bias.requires_grad_(False)
    assert float(l2sp_penalty(net, start, 0.1).detach()) == pytest.approx(0.1 * 1.25)
    penalty = l2sp_penalty(net, start, 0.1)
    penalty.backward()
    # d/dw alpha ||w - w0||^2 = 2 alpha (w - w0)
    assert torch.allclose(net[0].weight.grad, torch.tensor([[0.1, 0.0], [0.0, -0.2]]))
    assert drift(net, start) == pytest.approx(
        math.sqrt(5.25 / sum(float(v.pow(2).sum()) for v in start.values()))
    )


def test_plan_renditions_are_linked_to_their_parents():
    parents = ["art-a", "art-b", "art-c"]
    plan = pseudo_pairs.plan_renditions(parents, 4, np.random.default_rng(1), detail_share=0.5)
    frame = pseudo_pairs.renditions_frame(plan)
    assert len(frame) == 12 and frame["id"].is_unique
    assert frame.groupby("parent_id").size().to_dict() == {p: 4 for p in parents}
    assert all(i.startswith(f"{p}~pseudo-") for i, p in zip(frame["id"], frame["parent_id"]))
    assert set(frame["effect"]) <= set(pseudo_pairs.PSEUDO_EFFECTS)
    for r in plan:
        x0, y0, x1, y1 = r.crop
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        if r.is_detail:
            assert x1 - x0 >= 0.4 - 1e-9 and y1 - y0 >= 0.4 - 1e-9
        assert all(abs(v) <= 0.08 for v in r.warp)
    whole = pseudo_pairs.plan_renditions(
        parents, 2, np.random.default_rng(1), detail_share=0.0, warp=0
    )
    assert not any(r.is_detail or any(r.warp) for r in whole)
    again = pseudo_pairs.plan_renditions(parents, 4, np.random.default_rng(1), detail_share=0.5)
    assert again == plan
    with pytest.raises(ValueError, match="unknown pseudo effect"):
        pseudo_pairs.plan_renditions(parents, 1, np.random.default_rng(0), effects=["sketchy"])


def test_renders_are_drawn_looking_images_of_the_planned_part():
    rng = np.random.default_rng(0)
    img = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    img[20:40, 30:50] = 255  # a white square: edges around it
    for effect in pseudo_pairs.PSEUDO_EFFECTS:
        out = pseudo_pairs.render(img, pseudo_pairs.Rendition("p", 0, effect))
        assert out.shape == img.shape and out.dtype == np.uint8, effect
    lines = pseudo_pairs.edges(img)
    assert set(np.unique(lines)) <= {0, 255} and (lines == 0).any() and (lines == 255).any()
    flat = pseudo_pairs.quantise(img, 4)
    assert set(np.unique(flat)) <= {32, 96, 160, 224}
    detail = pseudo_pairs.render(
        img, pseudo_pairs.Rendition("p", 0, "gray", crop=(0.25, 0.5, 0.75, 1.0))
    )
    assert detail.shape == (30, 40, 3)
    # the crop is taken before the effect: the gray detail is the gray of the image's part
    assert np.array_equal(
        detail, pseudo_pairs.apply_effect(np.ascontiguousarray(img[30:60, 20:60]), "gray")
    )
    warped = pseudo_pairs.render(
        img, pseudo_pairs.Rendition("p", 0, "gray", warp=(0.1,) * 2 + (0.0,) * 6)
    )
    assert warped.shape == img.shape and (warped[0, 0] == 255).all()  # uncovered paper is white


@pytest.fixture(scope="module")
def two_positive_fold(tiny_fold):
    """The tiny set with one training drawing paired to a second artwork."""
    out, fold_csv = tiny_fold
    fold = pd.read_csv(fold_csv, dtype=str, keep_default_na=False)
    extra = fold.iloc[[0]].assign(pair_id="99", artwork_id="art01")
    path = Path(out) / "folds" / "fold_two.csv"
    pd.concat([fold, extra]).to_csv(path, index=False)
    return out, path


def test_frozen_blocks_do_not_move_and_get_no_gradient(two_positive_fold):
    out, fold_csv = two_positive_fold
    config = tiny_train_config(
        out, fold_csv, "num_workers=1", "train_blocks=2", "batchnorm=sync", "epochs=1"
    )
    trainer = train.Trainer(config)
    assert trainer.frozen == ["trunk.0", "trunk.1", "trunk.3"]
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    trainer.baseline()
    trainer.run_epoch(0)
    after = trainer.module.state_dict()
    for name, p in trainer.module.named_parameters():
        block = ".".join(name.split(".")[:2])
        if block in trainer.frozen:
            assert not p.requires_grad and p.grad is None, name
            assert torch.equal(after[name], before[name]), name
        else:
            assert p.requires_grad and not torch.equal(after[name], before[name]), name
    # a frozen block's BatchNorm keeps its statistics even with batchnorm=sync; a trained one not
    assert torch.equal(after["trunk.1.running_mean"], before["trunk.1.running_mean"])
    assert not torch.equal(after["trunk.4.running_mean"], before["trunk.4.running_mean"])
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in trainer.module.parameters() if p.requires_grad
    }


def test_pseudo_stage_then_pairs_with_every_new_option_in_one_process(
    two_positive_fold, monkeypatch
):
    out, fold_csv = two_positive_fold
    config = tiny_train_config(
        out,
        fold_csv,
        "num_workers=1",
        "epochs=2",
        "pseudo_epochs=1",
        "loss=multi_similarity",
        "positives_per_anchor=2",
        "l2sp=0.1",
        "selection=last",
        "lr_schedule=cosine",
    )
    trainer = train.Trainer(config)
    trainer.baseline()
    records = [trainer.run_epoch(e)[0] for e in range(3)]
    assert [r["stage"] for r in records] == ["pseudo", "pairs", "pairs"]
    assert records[0]["steps"] == 6  # 12 gallery artworks, 2 per step
    assert records[1]["steps"] == 5  # 9 training pairs, 2 per step
    assert all(r["drift"] > 0 for r in records)
    assert records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero over 3 epochs
    assert trainer.state.best_epoch == 2  # selection=last: the final weights
    # the anchor paired with two artworks sees both as positive refs when it is in the batch
    rows = trainer.data.train
    i = rows.index[rows["anchor_id"] == rows["anchor_id"].iloc[0]][0]
    anchors = trainer.loader.train_batch([rows["anchor_id"].iloc[i]])
    seen: list[torch.Tensor] = []
    real = losses.distributed_step_loss

    def spy(loss_fn, a, pos, refs, labels, mode):
        seen.append(labels.clone())
        return real(loss_fn, a, pos, refs, labels, mode)

    monkeypatch.setattr(losses, "distributed_step_loss", spy)
    trainer.optimise(anchors, [int(rows["gallery_index"].iloc[i])], [{0, 1}])
    assert {0, 1} <= set(seen[0].tolist()) and len(seen[0]) == 3  # given, negative, extra


@pytest.mark.slow
def test_train_job_with_pseudo_stage_and_the_new_options_on_ray(ray_local, two_positive_fold):
    out, fold_csv = two_positive_fold
    stage = train.run(
        tiny_train_config(
            out, fold_csv, "epochs=0", "pseudo_epochs=1", "selection=last", "run_name=ps"
        )
    )
    assert [h["stage"] for h in stage.summary["history"]] == ["pseudo"]
    assert stage.summary["best_epoch"] == 0
    result = train.run(
        tiny_train_config(
            out,
            fold_csv,
            "epochs=2",
            "loss=supcon",
            "positives_per_anchor=2",
            "train_blocks=3",
            "l2sp=0.01",
            "selection=last",
            f"model.weights={stage.best_model}",
            "run_name=ft",
        )
    )
    history = result.summary["history"]
    assert [h["stage"] for h in history] == ["pairs", "pairs"]
    assert result.summary["best_epoch"] == 1
    # the run started from the pseudo stage's weights: its baseline is that model's
    assert result.summary["baseline"]["test"] == stage.summary["best"]["test"]
    saved = torch.load(result.best_model, weights_only=True)["model"]
    start = torch.load(stage.best_model, weights_only=True)["model"]
    assert torch.equal(saved["trunk.0.weight"], start["trunk.0.weight"])  # frozen
    assert not torch.equal(saved["trunk.6.weight"], start["trunk.6.weight"])  # trained


def test_new_train_and_sweep_keys_are_checked_and_searched(tmp_path):
    with pytest.raises(ConfigError, match="epochs"):
        load_config(TrainConfig, None, ["epochs=0"])
    assert load_config(TrainConfig, None, ["epochs=0", "pseudo_epochs=2"]).epochs == 0
    config = load_config(
        SweepConfig,
        None,
        ["losses=[triplet, multi_similarity]", "l2sp=[0, 0.01]", "train_blocks=[0, 6]"],
    )
    combos = sweep.grid(config)
    assert len(combos) == 2 * 2 * 2 * 2 * 2  # and two margins, two lrs by default
    assert len({c["id"] for c in combos}) == len(combos)
    trial = sweep.trial_train_config(config.base, combos[-1], "f.csv", "r")
    assert (trial.loss, trial.l2sp, trial.train_blocks) == ("multi_similarity", 0.01, 6)


def test_pooled_validation_map_weights_folds_by_their_queries(tmp_path):
    for name, n, value in (("a", 2, 50.0), ("b", 6, 10.0)):
        (tmp_path / name).mkdir()
        summary = {"best": {"val": {"val_MAP": value, "val_n_queries": n}}}
        (tmp_path / name / "metrics.json").write_text(json.dumps(summary))
    pooled = sweep.pooled_val_map([str(tmp_path / "a"), str(tmp_path / "b")])
    assert pooled == pytest.approx((2 * 50 + 6 * 10) / 8)  # not the fold mean, 30
