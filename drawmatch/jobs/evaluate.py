"""The evaluate job: retrieval metrics of one embedding model on annotated pairs.

Queries are the original drawings of the pairs (optionally only those of one set of a split file);
the gallery is every searchable artwork of the catalogue. Metrics (thesis sec. 4.5, 6.1; see
`drawmatch.retrieval.metrics`): MP, MMP, Recall@k and MAP (standard average precision), saved as JSON in
`evaluation/<model_tag>/metrics-<pairs file stem>.json` (or `metrics-<split file stem>-<set>.json`),
with the resolved config beside it as `evaluate_config-<same suffix>.yaml`.

A pairs row whose `drawing_id` is an artwork, or whose `artwork_id` is a drawing, is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, section, setting, to_dict
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag, read_model_info
from drawmatch.data.pairs import check_collections, check_known, read_pairs
from drawmatch.retrieval.calibration import (
    BACKGROUND_RANKS,
    Calibration,
    detection_metrics,
    fit_calibration,
    read_calibration,
    write_calibration,
)
from drawmatch.retrieval.metrics import aggregate, format_table
from drawmatch.retrieval.ranker import evaluate_detection
from drawmatch.retrieval.region_search import SEARCH_MODES, RegionSearchParams


@dataclass(frozen=True)
class EvaluateConfig(Config):
    """Retrieval metrics (MP, MMP, Recall@`ks`, MAP) of one model on `pairs_csv` or on one set of
    `split_csv`; with `folds=true`, mean ± std over the train runs matching `runs`."""

    out: str = setting("drawmatch-out", help="output root")
    model_tag: str | None = setting(None, help="model evaluated (null: the only one)")
    pairs_csv: str | None = setting(None, help="pairs file evaluated")
    split_csv: str | None = setting(None, help="fold file (with split_set)")
    split_set: str | None = setting(None, choices=("train", "val", "test"), help="set of split_csv")
    ks: tuple[int, ...] = setting((1, 5, 10, 20, 50, 100, 200, 400), ge=1, help="k of Recall@k")
    output: str | None = setting(None, help="metrics file written")
    folds: bool = setting(False, help="mean and std over the train runs")
    runs: str = setting("*", help="folds: pattern of the train runs")
    mode: str = setting("global", choices=SEARCH_MODES, help="how artworks are ranked")
    region: RegionSearchParams = section(RegionSearchParams)
    non_copies_csv: str | None = setting(
        None, help="drawings that copy nothing (drawing_id column), searched for copy detection"
    )
    detection_k: int = setting(10, ge=1, le=1000, help="results per drawing in copy detection")
    calibrate: bool = setting(
        False, help="fit the likely-copy confidence here: calibration/<tag>/<mode>.json"
    )
    max_flagged: float = setting(
        0.01, ge=0, lt=1, help="calibrate: share of non-copy drawings the threshold may flag"
    )


MAP_DEFINITION = (
    "MAP: standard average precision over the full ranking, (1/|R|) * sum of precision at the "
    "rank of each relevant artwork, averaged over drawings; R@k and MAP in percent; MP and MMP "
    "are 0-based ranks"
)
DETECTION_DEFINITION = (
    "copy detection: the top detection_k results of every drawing (paired ones and those that "
    "copy nothing) pooled and ranked together; micro_AP: average precision of that pooled "
    "ranking over all pairs (a pair no drawing returned counts as missed); R@P90: the highest "
    "recall at 90 % precision; by the calibrated confidence, and by the raw similarity (_score) "
    "and the similarity minus the drawing's background level (_normalised); flagged_*: percent "
    "at the likely-copy threshold; all in percent"
)


@dataclass
class EvaluateResult:
    model_tag: str
    metrics: dict[str, float]
    path: str
    skipped_pairs: list[dict[Any, Any]] = field(default_factory=list)
    detection: dict[str, float] = field(default_factory=dict)


def evaluation_pairs(config: EvaluateConfig, catalogue: pd.DataFrame) -> pd.DataFrame:
    """The pairs to evaluate: checked against the catalogue, originals only, one split set."""
    if config.split_csv:
        pairs = storage.read_csv(config.split_csv, dtype=str, keep_default_na=False)
        if config.split_set is None:
            raise ValueError("split_csv needs split_set=train|val|test")
        pairs = pairs[pairs["set"] == config.split_set][["drawing_id", "artwork_id"]]
    elif config.pairs_csv:
        pairs = read_pairs(config.pairs_csv)[["drawing_id", "artwork_id"]]
    else:
        raise ValueError("evaluate needs pairs_csv=<file> (or split_csv= with split_set=)")
    where = str(config.split_csv or config.pairs_csv)
    check_known(pairs, set(catalogue["id"]), where=where)
    check_collections(pairs, dict(zip(catalogue["id"], catalogue["collection"])), where=where)
    originals = set(catalogue.loc[cat.is_original(catalogue), "id"])
    return pairs[pairs["drawing_id"].isin(originals)].drop_duplicates().reset_index(drop=True)


SETS = ("val", "test")


def fold_tables(run_dirs: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over fold runs (their `metrics.json`) of the pretrained and the fine-tuned
    model's metrics, on val (the best epoch) and test: keys like `test/fine-tuned`."""
    columns: dict[str, list[dict[str, float]]] = {}
    for run_dir in run_dirs:
        summary = json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))
        best_val = {k[4:]: v for k, v in summary["best"]["val"].items() if k.startswith("val_")}
        rows = {
            "val/pretrained": summary["baseline"].get("val", {}),
            "val/fine-tuned": best_val,
            "test/pretrained": summary["baseline"].get("test", {}),
            "test/fine-tuned": summary["best"]["test"],
        }
        for name, metrics in rows.items():
            if metrics:
                columns.setdefault(name, []).append(metrics)
    return {name: aggregate(runs) for name, runs in columns.items()}


def format_fold_tables(tables: dict[str, dict[str, tuple[float, float]]], n_runs: int) -> str:
    names = list(tables)
    keys = [k for k in next(iter(tables.values())) if not k.startswith("n_")]
    lines = [
        f"mean ± std over {n_runs} fold run(s)",
        f"{'metric':<8}" + "".join(f"{n:>20}" for n in names),
    ]
    for key in keys:
        cells = "".join(
            f"{f'{tables[n][key][0]:.2f} ± {tables[n][key][1]:.2f}':>20}" for n in names
        )
        lines.append(f"{key:<8}{cells}")
    return "\n".join(lines)


def run_folds(config: EvaluateConfig) -> dict[str, Any]:
    """`evaluate --folds`: aggregate the train runs under `out/runs/<runs glob>` over folds."""
    runs = storage.join(config.out, "runs")
    found = storage.list_files(runs, f"{config.runs}/metrics.json", recursive=True)
    run_dirs = sorted(storage.parent(p) for p in found)
    if not run_dirs:
        raise FileNotFoundError(f"no finished train runs match {storage.join(runs, config.runs)}")
    tables = fold_tables(run_dirs)
    report = {
        "runs": [storage.name(p) for p in run_dirs],
        "definitions": MAP_DEFINITION,
        "tables": {name: {k: list(v) for k, v in t.items()} for name, t in tables.items()},
    }
    target = config.output or storage.join(config.out, "evaluation", "folds.json")
    storage.write_bytes(target, json.dumps(report, indent=2).encode())
    print(format_fold_tables(tables, len(run_dirs)))
    print(f"written to {target}")
    return report


def run(config: EvaluateConfig) -> EvaluateResult | dict[str, Any]:
    """`evaluate --folds` aggregates train runs; otherwise one model on a pairs or split file."""
    return run_folds(config) if config.folds else run_pairs(config)


def result_label(config: EvaluateConfig) -> str:
    """What a result is named after, so evaluations on different pairs never overwrite each
    other: the pairs file's stem, or the split file's stem and the set (`fold_00-test`)."""
    if config.split_csv:
        return f"{storage.stem(config.split_csv)}-{config.split_set}"
    return storage.stem(str(config.pairs_csv))


def non_copy_drawings(config: EvaluateConfig, catalogue: pd.DataFrame) -> list[str]:
    """The drawings of `non_copies_csv` (its `drawing_id` column), checked against the catalogue:
    searchable drawings only (usable originals)."""
    if not config.non_copies_csv:
        return []
    table = storage.read_csv(config.non_copies_csv, dtype=str, keep_default_na=False)
    if "drawing_id" not in table.columns:
        raise ValueError(f"{config.non_copies_csv}: no drawing_id column")
    ids = sorted(set(table["drawing_id"].str.strip()) - {""})
    drawings = set(cat.query_ids(catalogue))
    unknown = [i for i in ids if i not in drawings]
    if unknown:
        raise ValueError(
            f"{config.non_copies_csv}: {len(unknown)} id(s) are not searchable drawings of the "
            f"catalogue: {unknown[:10]}"
        )
    return ids


def copy_detection(
    config: EvaluateConfig, tag: str, results: pd.DataFrame, n_pairs: int
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Copy-detection figures of the pooled results, by the calibration fitted here
    (`calibrate=true`, written beside the other models' calibrations) or the stored one."""
    calibration: Calibration | None
    if config.calibrate:
        top = results[results["rank"] <= max(config.detection_k, BACKGROUND_RANKS[1])]
        calibration = fit_calibration(top, tag, config.mode, config.max_flagged, by="drawing_id")
        fitted_on = dict(calibration.fitted_on, pairs=str(config.split_csv or config.pairs_csv))
        fitted_on["non_copies_csv"] = config.non_copies_csv
        calibration = replace(calibration, fitted_on=fitted_on)
        path = write_calibration(config.out, calibration)
        print(f"calibration fitted on these drawings, written to {path}")
    else:
        calibration = read_calibration(config.out, tag, config.mode)
        if calibration is None:
            print(
                f"no calibration for {tag} in mode {config.mode}: confidence figures left out "
                "(fit one with calibrate=true)"
            )
    detection = detection_metrics(results, n_pairs, calibration, config.detection_k)
    about = None
    if calibration is not None:
        about = {
            "fitted_here": config.calibrate,
            "threshold": calibration.threshold,
            "fitted_on": calibration.fitted_on,
        }
    return detection, about


def run_pairs(config: EvaluateConfig) -> EvaluateResult:
    """Metrics of one embedding model on the pairs (or one set of a split file)."""
    tag = pick_model_tag(config.out, config.model_tag)
    catalogue = cat.read_catalogue(config.out)
    pairs = evaluation_pairs(config, catalogue)
    non_copies = non_copy_drawings(config, catalogue)
    depth = max(config.detection_k, BACKGROUND_RANKS[1])
    metrics, skipped, results = evaluate_detection(
        config.out,
        tag,
        pairs,
        catalogue,
        tuple(config.ks),
        config.mode,
        config.region,
        non_copies,
        depth,
    )
    detection, calibration = copy_detection(config, tag, results, int(metrics["n_pairs"]))
    label = result_label(config)
    if config.mode != "global":
        label = f"{label}-{config.mode}"
    target = config.output or storage.join(config.out, "evaluation", tag, f"metrics-{label}.json")
    report: dict[str, Any] = {
        "model_tag": tag,
        "weights_hash": read_model_info(config.out, tag)["weights_hash"],
        "pairs": str(config.split_csv or config.pairs_csv),
        "set": config.split_set,
        "mode": config.mode,
        "region": to_dict(config.region) if config.mode != "global" else None,
        "gallery_size": len(cat.gallery_ids(catalogue)),
        "metrics": metrics,
        "definitions": MAP_DEFINITION,
        "skipped_pairs": skipped.to_dict("records"),
        "detection": detection,
        "detection_definitions": DETECTION_DEFINITION,
        "non_copies": config.non_copies_csv,
        "calibration": calibration,
    }
    storage.write_bytes(target, json.dumps(report, indent=2).encode())
    config_label = label if config.output is None else storage.stem(target)
    save_config(
        config, storage.join(storage.parent(target), f"evaluate_config-{config_label}.yaml")
    )
    print(
        f"evaluate {tag} on {int(metrics['n_queries'])} drawings, "
        f"{int(metrics['n_pairs'])} pairs, gallery {report['gallery_size']}:"
    )
    print(format_table(metrics))
    print(
        f"copy detection: top-{config.detection_k} results of {int(metrics['n_queries'])} "
        f"paired drawings and {len(non_copies)} that copy nothing, pooled:"
    )
    print(format_table(detection))
    if len(skipped):
        print(
            f"warning: {len(skipped)} pair(s) left out, their artwork is not searchable: "
            f"{skipped['artwork_id'].tolist()[:10]}"
        )
    print(f"written to {target}")
    return EvaluateResult(tag, metrics, str(target), skipped.to_dict("records"), detection)
