"""The retrain job: one review round's model, from the experts' decisions to the report.

export (the workbench's decisions as pairs) -> split (artwork-disjoint train/val/test) -> train a
pseudo-pair stage (drawn renditions of every artwork, no annotation used) -> train on the pairs
from its weights -> embed the collection with the new weights -> index -> evaluate the new model
and the reference model on the same held-out test drawings -> report.

The new model's tag names its weights (`<backbone>-<pooling>-<size>-ft-<hash>`,
`drawmatch.data.embeddings.model_tag`), so it is one more model under `embeddings/`: the
workbench's model menus and the report list it beside the old ones.

What a round writes: `retrain/<name>/` (the exported `pairs.csv`, `folds/`, the resolved config and
`steps.json`), `runs/<name>-pseudo/` and `runs/<name>-pairs/` (training), `embeddings/<tag>/`,
`index/<tag>/`, `evaluation/<tag>/` and `report/`.

Resuming: `steps.json` records each finished step with a fingerprint (a hash of the step's
config and of the fingerprint of the step before it) and the outputs it wrote. On a rerun a step
is skipped when its record is there, its fingerprint is unchanged and its outputs exist; the
first step that runs makes every later one run too. A step killed half-way has no record and
runs again, where the jobs pick up their own work (train from its last checkpoint, embed the
rows still missing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import yaml

from drawmatch.core import storage
from drawmatch.core.config import (
    Config,
    ConfigError,
    folder_name,
    redeclare,
    save_config,
    section,
    setting,
    to_dict,
)
from drawmatch.data import catalogue as cat
from drawmatch.data.annotations import AnnotationStore, db_path, pairs_frame, read_known_pairs
from drawmatch.data.embeddings import list_model_tags
from drawmatch.jobs import embed, evaluate, export, index, report, split, train
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.export import NEGATIVES_FILE, ExportConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.report import ReportConfig
from drawmatch.jobs.split import SplitConfig
from drawmatch.jobs.train import TrainConfig
from drawmatch.models.embedder import ModelConfig
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class PseudoStage(TrainConfig):
    """The first training stage (jobs/configs/train-tuned.yaml): pseudo-pair epochs alone, on
    drawn renditions of every artwork; multi-similarity loss, small steps held near the starting
    weights (L2-SP), the last weights kept."""

    epochs: int = redeclare(TrainConfig, "epochs", 0)
    pseudo_epochs: int = redeclare(TrainConfig, "pseudo_epochs", 3)
    loss: str = redeclare(TrainConfig, "loss", "multi_similarity")
    lr: float = redeclare(TrainConfig, "lr", 5e-5)
    l2sp: float = redeclare(TrainConfig, "l2sp", 0.01)
    selection: str = redeclare(TrainConfig, "selection", "last")
    use_styles: bool = redeclare(TrainConfig, "use_styles", False)

    def check(self) -> None:
        if self.pseudo_epochs < 1:
            raise ConfigError("pseudo_epochs: the first stage trains on pseudo-pairs: >= 1")
        if self.epochs != 0:
            raise ConfigError("epochs: the first stage is pseudo-pairs alone: 0 (see pairs.epochs)")
        super().check()


@dataclass(frozen=True)
class PairsStage(TrainConfig):
    """The second training stage: the annotated pairs, from the pseudo stage's weights; several
    positives per anchor, the last 10 blocks trained, cosine schedule, L2-SP; the epoch with the
    best validation MAP kept."""

    epochs: int = redeclare(TrainConfig, "epochs", 3)
    loss: str = redeclare(TrainConfig, "loss", "multi_similarity")
    lr: float = redeclare(TrainConfig, "lr", 1e-4)
    positives_per_anchor: int = redeclare(TrainConfig, "positives_per_anchor", 3)
    l2sp: float = redeclare(TrainConfig, "l2sp", 0.01)
    train_blocks: int = redeclare(TrainConfig, "train_blocks", 10)
    lr_schedule: str = redeclare(TrainConfig, "lr_schedule", "cosine")
    use_styles: bool = redeclare(TrainConfig, "use_styles", False)

    def check(self) -> None:
        if self.pseudo_epochs != 0:
            raise ConfigError("pseudo_epochs: the pseudo-pairs are the first stage's: 0")
        super().check()


# keys of a step's section that the retrain sets itself: a value there would be ignored
SET_BY_RETRAIN = {
    "pseudo": ("out", "run_name", "fold_csv", "negatives_csv", "model", "ray"),
    "pairs": ("out", "run_name", "fold_csv", "negatives_csv", "model", "ray"),
    "embed": ("out", "model", "ray"),
}


@dataclass(frozen=True)
class RetrainConfig(Config):
    """One review round's retraining, resumable step by step: export the workbench's decisions
    (with the known pairs of `pairs_csv` imported first) as pairs and non-matches, split them
    (fold 0 of `split_seed`), train `pseudo` then `pairs` from `model`, embed with the new
    weights, index, evaluate the new model and `reference_model` (null: the first model already
    under out/embeddings) on the fold's test drawings, report. A new round takes a new `name`; a
    rerun of the same name skips the steps it finished."""

    out: str = setting("drawmatch-out", help="output root (with the reviewed model's embeddings)")
    name: str = setting("retrain", help="round name: retrain/<name>/, runs/<name>-pseudo, -pairs")
    pairs_csv: tuple[str, ...] = setting(
        (), may_be_empty=True, help="known pairs files imported first (as `serve pairs_csv=`)"
    )
    annotators: tuple[str, ...] = setting(
        (), may_be_empty=True, help="annotators whose decisions are exported (empty: all)"
    )
    reference_model: str | None = setting(
        None, help="old model compared (null: the first under out/embeddings)"
    )
    split_seed: int = setting(0, ge=0, help="seed of the fold split")
    model: ModelConfig = section(ModelConfig)
    pseudo: PseudoStage = section(PseudoStage)
    pairs: PairsStage = section(PairsStage)
    embed: EmbedConfig = section(EmbedConfig)
    ray: RayConfig = section(RayConfig)

    def check(self) -> None:
        folder_name("name", self.name)
        if self.model.weights is not None:
            raise ConfigError("model.weights: a retrain starts from the backbone's own weights")
        for name, keys in SET_BY_RETRAIN.items():
            value = getattr(self, name)
            changed = _changed(value, type(value)(), keys, f"{name}.")
            if changed:
                raise ConfigError(f"{changed}: set by the retrain (from its own keys), not here")
        plan(self)  # every step's config is made (and checked) before anything runs


def _changed(value: Any, default: Any, keys: tuple[str, ...], prefix: str) -> str | None:
    """The first of `keys` (walked into nested sections) whose value is not its default, as a
    dotted key, or None."""
    for key in keys:
        mine, theirs = getattr(value, key), getattr(default, key)
        if mine == theirs:
            continue
        if is_dataclass(mine):
            return _changed(mine, theirs, tuple(f.name for f in fields(mine)), f"{prefix}{key}.")
        return f"{prefix}{key}"
    return None


STEPS_FILE = "steps.json"
CONFIG_FILE = "retrain_config.yaml"
REFERENCE_FILE = "reference_model.txt"


def round_dir(config: RetrainConfig) -> str:
    """The round's own folder: `out/retrain/<name>`."""
    return storage.join(config.out, "retrain", config.name)


@dataclass
class Plan:
    """Every step's config, made up front; the weights and the new tag are known only after
    training, so `embed`, `index` and `evaluate` are completed then."""

    export: ExportConfig
    split: SplitConfig
    fold_csv: str
    pseudo: TrainConfig
    pairs: TrainConfig
    embed: EmbedConfig
    report: ReportConfig


def plan(config: RetrainConfig) -> Plan:
    """The configs of every step of a round (raises ConfigError for a value no step accepts):
    the decisions exported to `retrain/<name>/pairs.csv` and `negatives.csv`, one fold of them
    (`folds/fold_00.csv`, `folds/negatives_00.csv`), the pairs stage mining the fold's expert
    non-matches first."""
    where = round_dir(config)
    pairs_csv = storage.join(where, "pairs.csv")
    exported = ExportConfig(
        out=config.out, output=pairs_csv, annotators=config.annotators, pairs_csv=config.pairs_csv
    )
    negatives = storage.join(where, NEGATIVES_FILE)  # export writes it beside the pairs
    split_config = SplitConfig(
        out=where, pairs_csv=pairs_csv, negatives_csv=negatives, n_folds=1, seed=config.split_seed
    )
    fold_csv = storage.join(where, "folds", "fold_00.csv")
    common: dict[str, Any] = {"out": config.out, "fold_csv": fold_csv, "ray": config.ray}
    pseudo = replace(config.pseudo, run_name=f"{config.name}-pseudo", model=config.model, **common)
    pseudo_best = storage.join(config.out, "runs", f"{config.name}-pseudo", "best_model.pt")
    model = replace(config.model, weights=pseudo_best)
    fold_negatives = storage.join(where, "folds", "negatives_00.csv")
    pairs = replace(
        config.pairs,
        run_name=f"{config.name}-pairs",
        model=model,
        negatives_csv=fold_negatives,
        **common,
    )
    return Plan(
        exported,
        split_config,
        fold_csv,
        TrainConfig(**_fields_of(pseudo)),
        TrainConfig(**_fields_of(pairs)),
        replace(config.embed, out=config.out, model=config.model, ray=config.ray),
        ReportConfig(out=config.out, reference_model=config.reference_model),
    )


def _fields_of(config: Any) -> dict[str, Any]:
    """A stage config's keys, to make the TrainConfig the train job takes."""
    return {f.name: getattr(config, f.name) for f in fields(TrainConfig)}


# ----------------------------------------------------------------------------------------------
# steps: skipped when finished before, run (and recorded) otherwise


def fingerprint(config: Any, before: str) -> str:
    """A step's fingerprint: its config(s) (as YAML) and the fingerprint of the step before it."""
    configs = config if isinstance(config, list) else [config]
    text = "".join(yaml.safe_dump(to_dict(c), sort_keys=True) for c in configs if c is not None)
    return hashlib.sha256((before + "\n" + text).encode()).hexdigest()[:16]


@dataclass
class Steps:
    """The round's record of finished steps (`steps.json`) and the steps of this run."""

    path: str
    count: int
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    before: str = ""
    number: int = 0
    fresh: bool = True  # every step so far was skipped

    @classmethod
    def open(cls, where: str, count: int) -> Steps:
        path = storage.join(where, STEPS_FILE)
        done = json.loads(storage.read_text(path)) if storage.exists(path) else {}
        return cls(path, count, done)

    def run(self, name: str, config: Any, step: Callable[[], dict[str, str]]) -> dict[str, str]:
        """Run step `name` (its outputs: label -> path) unless it finished before with the same
        fingerprint and its outputs are still there; print where its outputs are."""
        self.number += 1
        mark = fingerprint(config, self.before)
        self.before = mark
        record = self.done.get(name)
        if (
            self.fresh
            and record is not None
            and record["fingerprint"] == mark
            and all(storage.exists(p) for p in record["outputs"].values())
        ):
            print(f"== {self.number}/{self.count} {name}: finished before, skipped")
            _print_outputs(record["outputs"])
            return dict(record["outputs"])
        self.fresh = False
        print(f"== {self.number}/{self.count} {name}")
        outputs = step()
        self.done[name] = {"fingerprint": mark, "outputs": outputs}
        storage.write_text(self.path, json.dumps(self.done, indent=2))
        _print_outputs(outputs)
        return outputs


def _print_outputs(outputs: dict[str, str]) -> None:
    for label, path in outputs.items():
        print(f"   {label}: {path}")


# ----------------------------------------------------------------------------------------------
# the round


@dataclass
class RetrainResult:
    """Where a round's results are: the new model's tag, the reference's, the report page."""

    model_tag: str
    reference_model: str
    report: str
    outputs: dict[str, dict[str, str]]


def check_inputs(config: RetrainConfig) -> str:
    """What a round needs before it starts, as one error each; returns the reference model."""
    tags = list_model_tags(config.out)
    if not tags:
        raise FileNotFoundError(
            f"no embeddings under {config.out}: a retrain compares its model with the one the "
            f"round reviewed (run `drawmatch embed out={config.out}` first)"
        )
    saved = storage.join(round_dir(config), REFERENCE_FILE)  # a rerun keeps the round's reference
    if config.reference_model is not None:
        reference = config.reference_model
    elif storage.exists(saved):
        reference = storage.read_text(saved).strip()
    else:
        reference = tags[0]
    if reference not in tags:
        raise FileNotFoundError(f"reference_model={reference}: no embeddings; have {tags}")
    check_pairs(config)
    return reference


def check_pairs(config: RetrainConfig) -> None:
    """Refuse a round with nothing to train on: no annotation store and no known pairs, or no
    accepted match in either (the known pairs files checked against the catalogue)."""
    source = db_path(config.out)
    if not storage.exists(source) and not config.pairs_csv:
        raise FileNotFoundError(
            f"no annotations at {source}: decide some candidates in `drawmatch serve` "
            "(or import known pairs with pairs_csv=[FILE])"
        )
    catalogue = cat.read_catalogue(config.out)
    known = sum(len(pairs) for _name, pairs in read_known_pairs(config.pairs_csv, catalogue))
    decided = 0
    if storage.exists(source):
        allowed = set(catalogue.loc[cat.usable(catalogue), "id"])
        decided = len(pairs_frame(AnnotationStore(source), allowed, config.annotators))
    if known + decided == 0:
        raise ValueError(f"no annotated pairs in {source}: accept some matches first")


def run(config: RetrainConfig) -> RetrainResult:
    """Run the round's steps, skipping those it finished before; returns where its results are."""
    reference = check_inputs(config)
    steps_plan = plan(config)
    where = round_dir(config)
    storage.makedirs(where)
    save_config(config, storage.join(where, CONFIG_FILE))
    storage.write_text(storage.join(where, REFERENCE_FILE), reference + "\n")
    print(f"== drawmatch retrain {config.name}: output {config.out}, round files in {where}")
    steps = Steps.open(where, 8)
    outputs = {"export": steps.run("export", steps_plan.export, lambda: _export(steps_plan))}
    outputs["split"] = steps.run("split", steps_plan.split, lambda: _split(steps_plan))
    outputs["train pseudo"] = steps.run(
        "train pseudo", steps_plan.pseudo, lambda: _train(steps_plan.pseudo)
    )
    outputs["train pairs"] = steps.run(
        "train pairs", steps_plan.pairs, lambda: _train(steps_plan.pairs)
    )
    weights = outputs["train pairs"]["weights"]
    embed_config = replace(steps_plan.embed, model=replace(config.model, weights=weights))
    outputs["embed"] = steps.run("embed", embed_config, lambda: _embed(embed_config))
    tag = storage.name(outputs["embed"]["embeddings"])
    outputs["index"] = steps.run(
        "index", IndexConfig(out=config.out, model_tag=tag), lambda: _index(config.out, tag)
    )
    evaluations = [
        EvaluateConfig(out=config.out, model_tag=t, split_csv=steps_plan.fold_csv, split_set="test")
        for t in dict.fromkeys([reference, tag])
    ]
    outputs["evaluate"] = steps.run("evaluate", evaluations, lambda: _evaluate(evaluations))
    report_config = replace(steps_plan.report, reference_model=reference)
    outputs["report"] = steps.run("report", report_config, lambda: _report(report_config))
    print(f"== done: new model {tag} beside {reference}; report {outputs['report']['report']}")
    return RetrainResult(tag, reference, outputs["report"]["report"], outputs)


def _export(steps_plan: Plan) -> dict[str, str]:
    result = export.run(steps_plan.export)
    return {"pairs": result.path, "negatives": result.negatives_path}


def _split(steps_plan: Plan) -> dict[str, str]:
    split.run(steps_plan.split)
    folds = storage.parent(steps_plan.fold_csv)
    return {"fold": steps_plan.fold_csv, "negatives": storage.join(folds, "negatives_00.csv")}


def _train(config: TrainConfig) -> dict[str, str]:
    _refuse_another_run(config)
    result = train.run(config)
    return {"run": result.run_dir, "weights": result.best_model}


def _refuse_another_run(config: TrainConfig) -> None:
    """A train run resumes the run of its name: refuse one that was started with another config
    (a round whose settings changed takes a new name)."""
    name = str(config.run_name)
    saved = storage.join(config.out, "runs", name, "train_config.yaml")
    if not storage.exists(saved):
        return
    now = to_dict(train.with_backbone_defaults(train.with_absolute_paths(config)))
    before = yaml.safe_load(storage.read_text(saved))
    if yaml.safe_load(yaml.safe_dump(now)) != before:
        raise ValueError(
            f"runs/{name} was trained with other settings: give the round a new name= "
            "(or remove that run folder)"
        )


def _embed(config: EmbedConfig) -> dict[str, str]:
    result = embed.run(config)
    return {"embeddings": result.directory}


def _index(out: str, tag: str) -> dict[str, str]:
    return {"index": index.run(IndexConfig(out=out, model_tag=tag)).directory}


def _evaluate(configs: list[EvaluateConfig]) -> dict[str, str]:
    return {c.model_tag or "": evaluate.run_pairs(c).path for c in configs}


def _report(config: ReportConfig) -> dict[str, str]:
    return {"report": report.run(config).index}
