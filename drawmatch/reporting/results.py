"""Results the jobs wrote, gathered for people: evaluations per model, fold tables, training runs,
and rankings of chosen drawings. Used by the report job and the notebooks; reads files only
(`evaluation/<tag>/metrics*.json`, `evaluation/folds.json`, `runs/<run>/metrics.json`, the
embeddings store), and never re-defines a metric: ranks and scores come from `drawmatch.retrieval.metrics`.

Ranks: `metrics` works with the thesis' 0-based ranks (MP and MMP are means of them); what this
module hands to people (`Ranking.top`, `Ranking.annotated`) is 1-based.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import read_embeddings
from drawmatch.data.pairs import read_pairs
from drawmatch.retrieval.metrics import (
    _key_order,
    aggregate,
    metrics_from_ranks,
    relevant_ranks,
    scores_in_chunks,
)

FOLDS_FILE = "folds.json"
RUN_METRICS = "metrics.json"
FOLD_PATTERN = re.compile(r"fold_\d+")


def metric_keys(metrics: dict[str, Any]) -> list[str]:
    """Metric names in reading order: MAP, MP, MMP, R@k ascending, then counts."""
    return sorted(metrics, key=_key_order)


# ----------------------------------------------------------------------------------------------
# evaluations of embedding models (`drawmatch evaluate`)


@dataclass
class Evaluation:
    """One `evaluation/<tag>/metrics*.json` as evaluate wrote it."""

    model_tag: str
    file: str  # path of the JSON
    pairs: str  # the pairs or split file evaluated, as recorded inside the JSON
    set: str | None  # the split set, or None for a whole pairs file
    gallery_size: int
    metrics: dict[str, float]
    definitions: str
    skipped_pairs: int
    detection: dict[str, float] = field(default_factory=dict)  # copy detection, when evaluated

    @property
    def label(self) -> str:
        """How a person names this evaluation: the pairs file and the set."""
        name = storage.name(self.pairs) if self.pairs else "?"
        return f"{name} ({self.set})" if self.set else name


def read_evaluations(out: str | Path) -> list[Evaluation]:
    """Every `evaluation/<tag>/metrics*.json` under `out`, by model tag then file name."""
    root = storage.join(out, "evaluation")
    if not storage.exists(root):
        return []
    found = sorted(storage.list_files(root, "*/metrics*.json", recursive=True))
    evaluations = []
    for path in found:
        data = json.loads(storage.read_text(path))
        if "metrics" not in data:
            continue
        evaluations.append(
            Evaluation(
                model_tag=str(data.get("model_tag") or storage.name(storage.parent(path))),
                file=path,
                pairs=str(data.get("pairs") or ""),
                set=data.get("set"),
                gallery_size=int(data.get("gallery_size", 0)),
                metrics={k: float(v) for k, v in data["metrics"].items()},
                definitions=str(data.get("definitions", "")),
                skipped_pairs=len(data.get("skipped_pairs", [])),
                detection={k: float(v) for k, v in (data.get("detection") or {}).items()},
            )
        )
    return sorted(evaluations, key=lambda e: (e.model_tag, e.label))


def evaluation_pairs(evaluation: Evaluation, catalogue: pd.DataFrame) -> pd.DataFrame | None:
    """The (drawing_id, artwork_id) pairs an evaluation scored, read again from the file named
    inside it (originals of searchable drawings, artworks in the gallery); None if the file is
    gone."""
    if not evaluation.pairs or not storage.exists(evaluation.pairs):
        return None
    if evaluation.set:
        pairs = storage.read_csv(evaluation.pairs, dtype=str, keep_default_na=False)
        pairs = pairs[pairs["set"] == evaluation.set]
    else:
        pairs = read_pairs(evaluation.pairs)
    pairs = pairs[["drawing_id", "artwork_id"]].drop_duplicates()
    keep = pairs["drawing_id"].isin(set(cat.query_ids(catalogue))) & pairs["artwork_id"].isin(
        set(cat.gallery_ids(catalogue))
    )
    return pairs[keep].reset_index(drop=True)


def annotated(pairs: pd.DataFrame) -> dict[str, list[str]]:
    """drawing id -> its annotated artwork ids (in file order, each once)."""
    out: dict[str, list[str]] = {}
    for drawing, artwork in zip(pairs["drawing_id"], pairs["artwork_id"]):
        artworks = out.setdefault(str(drawing), [])
        if str(artwork) not in artworks:
            artworks.append(str(artwork))
    return dict(sorted(out.items()))


def positions(
    out: str | Path, tag: str, catalogue: pd.DataFrame, relevant: dict[str, list[str]]
) -> dict[str, np.ndarray]:
    """0-based rank (the thesis' position) of each annotated artwork in its drawing's ranking of
    the whole gallery: drawing id -> int64 array, in the order of `relevant[drawing]`."""
    gallery = cat.gallery_ids(catalogue)
    queries = sorted(relevant)
    if not queries:
        return {}
    _ids, emb = read_embeddings(out, tag, ids=gallery + queries)
    where = {a: i for i, a in enumerate(gallery)}
    rel = [np.array([where[a] for a in relevant[q]], dtype=np.int64) for q in queries]
    result: dict[str, np.ndarray] = {}
    for start, block in scores_in_chunks(emb[len(gallery) :], emb[: len(gallery)]):
        ranks = relevant_ranks(block, rel[start : start + block.shape[0]])
        for i, r in enumerate(ranks):
            result[queries[start + i]] = r
    return result


def metrics_of_positions(ranks: dict[str, np.ndarray], ks: list[int]) -> dict[str, float]:
    """The metrics (drawmatch.retrieval.metrics) of per-drawing 0-based ranks, drawings in sorted order."""
    return metrics_from_ranks([ranks[q] for q in sorted(ranks)], ks)


# ----------------------------------------------------------------------------------------------
# training runs (`drawmatch train`) and fold tables (`drawmatch evaluate --folds`)


@dataclass
class Run:
    """One `runs/<run>/metrics.json` as the train job wrote it."""

    name: str
    best_epoch: int
    history: list[dict[str, float]]
    baseline: dict[str, dict[str, float]]
    best: dict[str, dict[str, float]]

    @property
    def group(self) -> str:
        """The run's configuration: its name with the fold replaced by `fold_*`."""
        return FOLD_PATTERN.sub("fold_*", self.name)

    def columns(self) -> dict[str, dict[str, float]]:
        """Metrics as `evaluate --folds` reads them: `val|test` x `pretrained|fine-tuned`."""
        best_val = {k[4:]: v for k, v in self.best.get("val", {}).items() if k.startswith("val_")}
        rows = {
            "val/pretrained": self.baseline.get("val", {}),
            "val/fine-tuned": best_val,
            "test/pretrained": self.baseline.get("test", {}),
            "test/fine-tuned": self.best.get("test", {}),
        }
        return {k: {m: float(x) for m, x in v.items()} for k, v in rows.items() if v}


def read_runs(out: str | Path) -> list[Run]:
    """Every finished train run under `out/runs` (those with a `metrics.json`), by name."""
    root = storage.join(out, "runs")
    if not storage.exists(root):
        return []
    runs = []
    for path in sorted(storage.list_files(root, f"*/{RUN_METRICS}", recursive=True)):
        data = json.loads(storage.read_text(path))
        runs.append(
            Run(
                name=storage.name(storage.parent(path)),
                best_epoch=int(data.get("best_epoch", -1)),
                history=list(data.get("history", [])),
                baseline=dict(data.get("baseline", {})),
                best=dict(data.get("best", {})),
            )
        )
    return runs


@dataclass
class RunGroup:
    """Runs of one configuration over folds: mean and std (ddof=1) per column and metric."""

    name: str
    runs: list[str]
    tables: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


def group_runs(runs: list[Run]) -> list[RunGroup]:
    """Runs grouped by configuration (`Run.group`), aggregated as `evaluate --folds` does."""
    by_group: dict[str, list[Run]] = {}
    for run in runs:
        by_group.setdefault(run.group, []).append(run)
    groups = []
    for name, members in sorted(by_group.items()):
        columns: dict[str, list[dict[str, float]]] = {}
        for run in members:
            for column, metrics in run.columns().items():
                columns.setdefault(column, []).append(metrics)
        tables = {c: aggregate(v) for c, v in columns.items() if len(v) == len(members)}
        groups.append(RunGroup(name, [r.name for r in members], tables))
    return groups


def read_fold_tables(out: str | Path) -> dict[str, Any] | None:
    """`evaluation/folds.json` (`evaluate --folds`), or None."""
    path = storage.join(out, "evaluation", FOLDS_FILE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else None


# ----------------------------------------------------------------------------------------------
# rankings of chosen drawings (qualitative sheets) and candidates for review


@dataclass
class Ranking:
    """One drawing under one model. `top`: (artwork id, cosine distance, 1-based rank);
    `annotated`: artwork id -> (1-based rank in the whole gallery, distance)."""

    drawing_id: str
    model_tag: str
    top: list[tuple[str, float, int]]
    annotated: dict[str, tuple[int, float]]


def rankings(
    out: str | Path,
    tag: str,
    catalogue: pd.DataFrame,
    drawing_ids: list[str],
    relevant: dict[str, list[str]],
    k: int = 10,
) -> list[Ranking]:
    """Top-k artworks of each drawing and the rank of each annotated artwork (even far beyond
    the top-k), from the whole gallery; ties broken as `drawmatch.retrieval.metrics` does."""
    gallery = cat.gallery_ids(catalogue)
    if not drawing_ids:
        return []
    _ids, emb = read_embeddings(out, tag, ids=gallery + list(drawing_ids))
    where = {a: i for i, a in enumerate(gallery)}
    out_rankings = []
    for start, block in scores_in_chunks(emb[len(gallery) :], emb[: len(gallery)]):
        for i, row in enumerate(block):
            drawing = drawing_ids[start + i]
            order = np.argsort(-row, kind="stable")[:k]
            top = [(gallery[j], float(1.0 - row[j]), r + 1) for r, j in enumerate(order)]
            known = list(dict.fromkeys(a for a in relevant.get(drawing, []) if a in where))
            ann: dict[str, tuple[int, float]] = {}
            if known:
                idx = np.array([where[a] for a in known], dtype=np.int64)
                ranks = relevant_ranks(row[None, :], [idx])[0]
                ann = {a: (int(r) + 1, float(1.0 - row[j])) for a, r, j in zip(known, ranks, idx)}
            out_rankings.append(Ranking(drawing, tag, top, ann))
    return out_rankings


def review_candidates(
    out: str | Path,
    tag: str,
    catalogue: pd.DataFrame,
    pairs: pd.DataFrame,
    count: int,
    per_drawing: int = 3,
) -> pd.DataFrame:
    """The closest drawing-artwork pairs that nobody annotated (thesis appendix B): each searchable
    drawing's `per_drawing` nearest artworks, annotated pairs left out, the `count` smallest
    distances overall. Columns `drawing_id`, `artwork_id`, `distance`, `rank` (1-based)."""
    gallery = cat.gallery_ids(catalogue)
    queries = cat.query_ids(catalogue)
    columns = ["drawing_id", "artwork_id", "distance", "rank"]
    if not queries or not gallery or count < 1:
        return pd.DataFrame(columns=columns)
    known = set(zip(pairs["drawing_id"], pairs["artwork_id"]))
    _ids, emb = read_embeddings(out, tag, ids=gallery + queries)
    rows = []
    n = min(len(gallery), per_drawing + max((len(g) for g in annotated(pairs).values()), default=0))
    for start, block in scores_in_chunks(emb[len(gallery) :], emb[: len(gallery)]):
        for i, row in enumerate(block):
            drawing = queries[start + i]
            order = np.argsort(-row, kind="stable")[:n]
            taken = 0
            for r, j in enumerate(order):
                if (drawing, gallery[j]) in known:
                    continue
                rows.append((drawing, gallery[j], float(1.0 - row[j]), r + 1))
                taken += 1
                if taken == per_drawing:
                    break
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["distance", "drawing_id"], kind="stable").head(count)
