"""`drawmatch retrain` on tiny data: decisions in the annotation store -> a new model that the
workbench lists and the report compares with the old one; an interrupted round resumes without
redoing finished steps; a round without annotations or without a reviewed model is refused in
one line before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from drawmatch.cli import main
from drawmatch.core.config import load_config
from drawmatch.data.annotations import AnnotationStore, db_path
from drawmatch.data.embeddings import list_model_tags
from drawmatch.jobs import embed, evaluate
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.workflows import retrain
from drawmatch.workflows.retrain import RetrainConfig
from tests.conftest import TINY_TRAIN, ray_never_started, tiny_training_set

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ("model.backbone=tiny", "model.pretrained=false", "model.image_size=32")
# the tiny training settings for both stages (model keys come from the round's `model`)
STAGE = [k for k in TINY_TRAIN if not k.startswith("model.")] + ["max_steps_per_epoch=2"]
TINY_ROUND = (
    *TINY_MODEL,
    *[f"pseudo.{k}" for k in STAGE],
    "pseudo.pseudo_epochs=1",
    *[f"pairs.{k}" for k in STAGE],
    "pairs.epochs=1",
    "pairs.train_blocks=0",
    "pairs.positives_per_anchor=1",
    "embed.batch_size=4",
)
STEPS = ("export", "split", "train pseudo", "train pairs", "embed", "index", "evaluate", "report")


def run_retrain(*argv: str) -> int:
    """The retrain job through its Ray entrypoint, `jobs/retrain.py`."""
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import retrain as retrain_entrypoint
    finally:
        sys.path.pop(0)
    return int(retrain_entrypoint.main(list(argv)))


def reviewed(root: Path) -> tuple[Path, str]:
    """The tiny set catalogued and embedded with the tiny random model (the model whose
    candidates were reviewed): (out, its tag)."""
    out, _fold = tiny_training_set(root)
    tag = embed.run(load_config(EmbedConfig, None, [f"out={out}", *TINY_MODEL])).model_tag
    return out, tag


def decide(out: Path) -> list[str]:
    """An expert's round: 4 known pairs in a pairs file (imported by the round), the other 8
    true pairs accepted in the workbench (one after a change of mind), two candidates rejected,
    one skipped. Returns the round's arguments."""
    known = out.parent / "known_pairs.csv"
    rows = [f"draw{i:02d},art{i:02d}" for i in range(8, 12)]
    known.write_text("drawing_id,artwork_id\n" + "\n".join(rows) + "\n")
    store = AnnotationStore(db_path(out))
    store.add("draw00", "art01", "match", "ana")
    store.add("draw00", "art01", "non-match", "ana")  # the latest decision wins
    for i in range(8):
        store.add(f"draw{i:02d}", f"art{i:02d}", "match", "ana")
    store.add("draw03", "art07", "non-match", "ben")
    store.add("draw04", "art08", "skip", "ben")
    return [f"out={out}", "name=round-1", f"pairs_csv=[{known}]", *TINY_ROUND]


@pytest.fixture(scope="module")
def round_run(ray_local, tmp_path_factory):
    out, old_tag = reviewed(tmp_path_factory.mktemp("retrain"))
    args = decide(out)
    assert run_retrain(*args) == 0
    return out, old_tag, args


def test_a_round_adds_a_model_the_workbench_and_the_report_show(round_run):
    from drawmatch.serve.data import Workbench

    out, old_tag, _args = round_run
    where = out / "retrain" / "round-1"
    exported = pd.read_csv(where / "pairs.csv")
    assert sorted(exported["drawing_id"]) == [f"draw{i:02d}" for i in range(12)]
    assert (exported["drawing_id"].str[4:] == exported["artwork_id"].str[3:]).all()
    negatives = pd.read_csv(where / "negatives.csv")
    assert sorted(zip(negatives["drawing_id"], negatives["artwork_id"])) == [
        ("draw00", "art01"),
        ("draw03", "art07"),
    ]
    # the fold carries the negatives, and the pairs stage mines them first
    fold_negatives = pd.read_csv(where / "folds" / "negatives_00.csv")
    assert len(fold_negatives) == 2 and set(fold_negatives["set"]) <= {"train", "val", "test"}
    pairs_stage = yaml.safe_load((out / "runs" / "round-1-pairs" / "train_config.yaml").read_text())
    assert pairs_stage["negatives_csv"] == str(where / "folds" / "negatives_00.csv")
    steps = json.loads((where / "steps.json").read_text())
    assert list(steps) == list(STEPS)
    new_tag = Path(steps["embed"]["outputs"]["embeddings"]).name
    weights = steps["train pairs"]["outputs"]["weights"]
    assert weights == str(out / "runs" / "round-1-pairs" / "best_model.pt")
    assert new_tag != old_tag and new_tag.startswith("tiny-") and "-ft-" in new_tag
    # the workbench's model discovery lists both models
    assert Workbench(str(out), load_models=False).tags == sorted([old_tag, new_tag])
    # the report compares the new model with the old one on the fold's test drawings
    data = json.loads((out / "report" / "report.json").read_text())
    assert sorted(data["models"]) == sorted([old_tag, new_tag])
    (diff,) = data["comparison"]["differences"]
    assert (diff["reference"], diff["model"], diff["set"]) == (old_tag, new_tag, "test")
    assert diff["pairs"] == str(out / "retrain" / "round-1" / "folds" / "fold_00.csv")
    assert {r["name"] for r in data["comparison"]["runs"]} == {"round-1-pseudo", "round-1-pairs"}


def test_an_interrupted_round_resumes_where_it_stopped(round_run, monkeypatch, capsys):
    out, _old_tag, args = round_run
    steps_file = out / "retrain" / "round-1" / "steps.json"
    run_metrics = out / "runs" / "round-1-pairs" / "metrics.json"
    trained_at = run_metrics.stat().st_mtime_ns
    # what a round stopped during its evaluate step leaves: the first six steps recorded
    done = json.loads(steps_file.read_text())
    steps_file.write_text(json.dumps({k: done[k] for k in STEPS[:6]}))
    (out / "report" / "index.html").unlink()

    def stopped(_config):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "run_pairs", stopped)  # stopped again, in the same step
    with pytest.raises(KeyboardInterrupt):
        retrain.run(load_config(RetrainConfig, None, args))
    monkeypatch.undo()
    assert list(json.loads(steps_file.read_text())) == list(STEPS[:6])  # no record of it
    printed = capsys.readouterr().out
    for n, step in enumerate(STEPS[:6], start=1):
        assert f"== {n}/8 {step}: finished before, skipped" in printed
    assert "== 7/8 evaluate\n" in printed

    assert run_retrain(*args) == 0
    printed = capsys.readouterr().out
    assert "== 6/8 index: finished before, skipped" in printed
    assert "== 7/8 evaluate\n" in printed and "== 8/8 report\n" in printed
    assert (out / "report" / "index.html").is_file()
    assert list(json.loads(steps_file.read_text())) == list(STEPS)
    assert run_metrics.stat().st_mtime_ns == trained_at  # no step of training ran again
    # a third run finds every step finished
    assert run_retrain(*args) == 0
    printed = capsys.readouterr().out
    assert all(f"{step}: finished before, skipped" in printed for step in STEPS)
    assert f"report: {out / 'report' / 'index.html'}" in printed


def test_changed_training_settings_under_the_same_name_are_refused(round_run, capsys):
    _out, _old, args = round_run
    assert run_retrain(*args, "pairs.lr=0.02") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "runs/round-1-pairs was trained with other settings" in err


def test_a_round_without_annotations_is_refused_in_one_line(ray_local, tmp_path, capsys):
    out, _tag = reviewed(tmp_path)
    with ray_never_started():
        assert main(["retrain", f"out={out}", *TINY_ROUND]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no annotations at" in err and "drawmatch serve" in err
    store = AnnotationStore(db_path(out))
    store.add("draw01", "art02", "non-match", "ana")  # decisions, but no match among them
    with ray_never_started():
        assert main(["retrain", f"out={out}", *TINY_ROUND]) == 1
    assert "no annotated pairs in" in capsys.readouterr().err
    assert not (out / "retrain").exists() and not (out / "runs").exists()


def test_an_out_folder_without_embeddings_is_refused_in_one_line(tmp_path, capsys):
    out, _fold = tiny_training_set(tmp_path)
    AnnotationStore(db_path(out)).add("draw01", "art01", "match", "ana")
    with ray_never_started():
        assert main(["retrain", f"out={out}", *TINY_ROUND]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"no embeddings under {out}" in err
    assert not (out / "retrain").exists() and list_model_tags(out) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pairs.run_name=mine", "pairs.run_name: set by the retrain"),
        ("pairs.negatives_csv=n.csv", "pairs.negatives_csv: set by the retrain"),
        ("pseudo.model.image_size=64", "pseudo.model.image_size: set by the retrain"),
        ("embed.ray.num_cpus=1", "embed.ray.num_cpus: set by the retrain"),
        ("pseudo.epochs=2", "pseudo.epochs: the first stage is pseudo-pairs alone"),
        ("pseudo.pseudo_epochs=0", "pseudo.pseudo_epochs: the first stage trains on pseudo-pairs"),
        ("pairs.epochs=0", "pairs.epochs: 0 is out of range"),
        ("pairs.pseudo_epochs=1", "pairs.pseudo_epochs: the pseudo-pairs are the first stage's"),
        ("model.weights=w.pt", "model.weights: a retrain starts"),
        ("name=../x", "name"),
        ("pairs.lr=0", "pairs.lr: 0"),
    ],
)
def test_the_whole_round_config_is_checked_before_anything_runs(
    tmp_path, capsys, override, message
):
    with ray_never_started():
        assert main(["retrain", f"out={tmp_path}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not any(tmp_path.iterdir())
