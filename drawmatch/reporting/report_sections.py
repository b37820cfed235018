"""The report's three parts, as the thesis presents its results:

- the collection (chapter 3, table A.1): drawings per year, age group and country, the year x
  age-group table, sample drawings per age group, ingest's parse and error counts, duplicates;
- model comparison (tables 5.1-5.4, 6.1, figures 5.5-5.7): each model's metrics as evaluate
  wrote them, each model's difference from a reference model with a paired bootstrap 95 %
  interval over the drawings (`drawmatch.reporting.comparison`), mean +- std over fold runs, the distribution of positions, training curves;
- qualitative sheets (figures 6.1-6.5): chosen drawings, their annotated artworks and each
  model's top-k, with every annotated artwork's rank; the closest unannotated pairs (appendix B).

Each part gathers its numbers (returned for `report.json`), appends its tables to the report's
list and renders its template (`collection.html`, `models.html`, `sheets.html`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.data import catalogue as cat
from drawmatch.reporting import insights, plots
from drawmatch.reporting.comparison import (
    RESAMPLES,
    SEED,
    paired_bootstrap,
    per_query_metrics,
    shown_ks,
)
from drawmatch.reporting.html_report import (
    Images,
    Section,
    Table,
    Tile,
    integer,
    mean_std_table,
    num,
    render,
    slug,
)
from drawmatch.reporting.results import (
    Evaluation,
    Ranking,
    Run,
    annotated,
    evaluation_pairs,
    group_runs,
    metric_keys,
    metrics_of_positions,
    positions,
    rankings,
    read_fold_tables,
    read_runs,
    review_candidates,
)

CONVENTIONS = (
    "Ranks shown to people are 1-based: rank 1 is the closest artwork among all searchable "
    "artworks. MP (Mean Position) and MMP (Minimum Mean Position) keep the thesis' 0-based "
    "positions (sec. 4.5): an artwork ranked first has position 0. R@k and MAP are percentages; "
    "MAP is the standard average precision over the full ranking. Distance = 1 - cosine "
    "similarity of the embeddings (0 = identical)."
)

# the drawings counted per value of a catalogue column: (column, title, ranked, label)
COUNTS = (
    ("year", "Drawings per year", False, "year"),
    ("age_group", "Drawings per age group", False, "age group"),
    ("country_iso3", "Drawings per country (ranked)", True, "country"),
)


# ----------------------------------------------------------------------------------------------
# the collection


@dataclass
class Counts:
    """One count table, with its bar chart unless every value is unknown (`figure` None)."""

    title: str
    table: Table
    figure: str | None = None
    caption: str = ""


def collection_section(
    catalogue: pd.DataFrame,
    out: str,
    images: Images,
    tables: list[Table],
    *,
    top_countries: int,
    samples_per_age_group: int,
    seed: int,
) -> tuple[Section, dict[str, Any]]:
    """The collection: counts, the year x age-group table, sample drawings, ingest, duplicates."""
    drawings = insights.drawings(catalogue)
    artworks = catalogue[(catalogue["collection"] == "artwork") & cat.originals(catalogue)]
    data: dict[str, Any] = {"drawings": len(drawings), "artworks": len(artworks)}
    counts = []
    for column, title, ranked, label in COUNTS:
        part, data[f"by_{column}"] = _counts(
            catalogue, column, title, label, top_countries if ranked else None, images
        )
        counts.append(part)
    year_age, data["year_age"] = _year_age(catalogue)
    samples = insights.sample_drawings(catalogue, samples_per_age_group, seed)
    data["samples"] = samples
    ingest, ingest_data = _ingest(out)
    if ingest_data is not None:
        data["ingest"] = ingest_data
    duplicates, data["duplicates"] = _duplicates(catalogue)
    tables += [c.table for c in counts] + [year_age]
    if ingest is not None:
        tables.append(ingest)
    tables.append(duplicates)
    body = render(
        "collection.html",
        drawings=len(drawings),
        artworks=len(artworks),
        counts=counts,
        year_age=year_age,
        samples={g: [images.tile(i, [i]) for i in ids] for g, ids in samples.items()},
        seed=seed,
        samples_per_age_group=samples_per_age_group,
        ingest=ingest,
        duplicates=duplicates,
    )
    return Section("collection", "The collection", body), data


def _counts(
    catalogue: pd.DataFrame,
    column: str,
    title: str,
    label: str,
    top: int | None,
    images: Images,
) -> tuple[Counts, dict[str, int]]:
    """Drawings per value of `column`, ranked and cut to the `top` values in the chart if given."""
    counts = insights.counts(catalogue, column)
    data = dict(zip(counts["value"], counts["drawings"].astype(int).tolist()))
    names = (
        insights.country_names([v for v in counts["value"] if v != insights.UNKNOWN])
        if column == "country_iso3"
        else {}
    )
    table = Table(
        f"drawings-by-{column}",
        title,
        [label] + (["ISO 3166 code"] if names else []) + ["drawings", "share (%)"],
    )
    for value, n, share in zip(counts["value"], counts["drawings"], counts["share"]):
        code = [value] if names else []
        table.rows.append([names.get(value, value), *code, integer(n), num(share, 1)])
    if counts[counts["value"] != insights.UNKNOWN].empty:
        return Counts(title, table), data
    shown = counts.head(top) if top is not None else counts
    suffix = f" (top {len(shown)} of {len(counts)})" if len(counts) > len(shown) else ""
    labels = [names.get(v, v) for v in shown["value"]]
    fig = plots.bar_chart(
        labels, shown["drawings"].tolist(), title + suffix, "drawings", top is not None
    )
    return Counts(title, table, images.figure(f"drawings-by-{column}", fig), title + suffix), data


def _year_age(catalogue: pd.DataFrame) -> tuple[Table, dict[str, dict[str, int]]]:
    """Drawings per year and age group, with totals (thesis table A.1)."""
    year_age = insights.year_age_table(catalogue)
    data = {str(y): {str(a): int(v) for a, v in row.items()} for y, row in year_age.iterrows()}
    table = Table(
        "year-age",
        "Drawings per year and age group (thesis table A.1)",
        ["year", *map(str, year_age.columns)],
    )
    for year, row in year_age.iterrows():
        table.rows.append([str(year), *[integer(v) for v in row]])
    return table, data


def _ingest(out: str) -> tuple[Table | None, dict[str, int] | None]:
    """Ingest's parse and error counts, if `ingest_summary.json` is under `out`."""
    summary = insights.read_ingest_summary(out)
    if summary is None:
        return None, None
    counts = insights.ingest_counts(summary)
    table = Table("ingest", "Ingest: parse and error counts", ["item", "files"])
    table.rows = [[item, integer(n)] for item, n in zip(counts["item"], counts["count"])]
    return table, dict(zip(counts["item"].str.strip(), counts["count"].astype(int).tolist()))


def _duplicates(catalogue: pd.DataFrame) -> tuple[Table, list[dict[Hashable, Any]]]:
    """The files flagged as having the same content as another."""
    dups = insights.duplicates(catalogue)
    table = Table(
        "duplicates",
        "Files with the same content as another (flagged, not merged)",
        ["id", "same content as", "collection"],
    )
    table.rows = [
        [str(a), str(b), str(c)]
        for a, b, c in zip(dups["id"], dups["duplicate_of"], dups["collection"])
    ]
    return table, dups.to_dict("records")


# ----------------------------------------------------------------------------------------------
# model comparison


@dataclass
class RunGroupPart:
    """A group of training runs: its mean ± std table, or None when it is the folds' table."""

    name: str
    runs: int
    table: Table | None


@dataclass(frozen=True)
class Bootstrap:
    """The comparison's reference model (None: the first model of the report) and its paired
    bootstrap: resamples of the drawings and the seed that draws them."""

    reference: str | None = None
    resamples: int = RESAMPLES
    seed: int = SEED


def comparison_section(
    out: str,
    catalogue: pd.DataFrame,
    tags: list[str],
    evaluations: list[Evaluation],
    images: Images,
    tables: list[Table],
    bootstrap: Bootstrap | None = None,
) -> tuple[Section, dict[str, Any]]:
    """Model comparison: evaluate's metrics, the positions behind them, each model's difference
    from the reference with its paired bootstrap interval, folds and training runs."""
    data: dict[str, Any] = {
        "evaluations": [],
        "differences": [],
        "folds": None,
        "run_groups": [],
        "runs": [],
    }
    context: dict[str, Any] = {"conventions": CONVENTIONS, "evaluations": None, "differences": []}
    evaluations = [e for e in evaluations if e.model_tag in tags]
    if evaluations:
        context["evaluations"] = _evaluations_table(evaluations, data)
        tables.append(context["evaluations"])
        context["detection"] = _detection_table(evaluations)
        tables += [context["detection"]] if context["detection"] else []
        ranks = _ranks(out, catalogue, evaluations)
        context.update(_positions(evaluations, ranks, images, data))
        context["differences"] = _differences(evaluations, ranks, tags, bootstrap or Bootstrap())
        data["differences"] = [d.record for d in context["differences"]]
        tables += [d.table for d in context["differences"]]
        context["bootstrap"] = bootstrap or Bootstrap()
    folds = read_fold_tables(out)
    context["folds"] = None
    if folds is not None:
        data["folds"] = folds
        context["folds"] = mean_std_table(
            "folds",
            f"Mean ± std over {len(folds.get('runs', []))} fold run(s), as `evaluate --folds` wrote them (evaluation/folds.json)",
            folds["tables"],
        )
        tables.append(context["folds"])
    runs = read_runs(out)
    context.update(groups=[], fold_mp=None, curves=None, histories=[])
    if runs:
        context["groups"] = _run_groups(runs, folds, tables, data)
        context.update(_run_figures(runs, images))
        data["runs"] = [asdict(run) for run in runs]
        context["histories"] = [_history(run) for run in runs]
        tables += context["histories"]
    return Section("models", "Model comparison", render("models.html", **context)), data


def _r_at(key: str) -> int | None:
    """k of an `R@k` key, else None."""
    return int(key[2:]) if key.startswith("R@") and key[2:].isdigit() else None


def _shown(key: str, gallery_size: int) -> bool:
    """Whether a metric is shown for a gallery: R@k only for k below its size."""
    k = _r_at(key)
    return k is None or bool(shown_ks([k], gallery_size))


def _evaluations_table(evaluations: list[Evaluation], data: dict[str, Any]) -> Table:
    """Each evaluation's metrics, every key any of them has (in `metric_keys` order); an R@k at
    or beyond the gallery size (100 % whatever the model) is left out."""
    keys: list[str] = []
    for e in evaluations:
        keys += [k for k in metric_keys(e.metrics) if k not in keys and _shown(k, e.gallery_size)]
    keys = metric_keys(dict.fromkeys(keys, 0.0))
    table = Table(
        "evaluations",
        "Metrics per model, as `drawmatch evaluate` wrote them",
        ["model", "pairs (set)", "gallery", *keys],
        note="MP, MMP: means of 0-based positions; R@k, MAP: percent. R@k for k at or beyond "
        "the gallery size (always 100 %) is left out.",
    )
    for e in evaluations:
        cells = [
            (integer(e.metrics[k]) if k.startswith("n_") else num(e.metrics[k]))
            if k in e.metrics and _shown(k, e.gallery_size)
            else "–"
            for k in keys
        ]
        table.rows.append([e.model_tag, e.label, integer(e.gallery_size), *cells])
        data["evaluations"].append(
            {
                "model_tag": e.model_tag,
                "file": e.file,
                "pairs": e.pairs,
                "set": e.set,
                "gallery_size": e.gallery_size,
                "metrics": e.metrics,
            }
        )
    return table


DETECTION_KEYS = {
    "micro_AP": "micro-AP",
    "R@P90": "recall @ 90 % precision",
    "micro_AP_score": "micro-AP, raw score",
    "flagged_non_copies": "non-copy drawings flagged",
    "flagged_copies_found": "copies flagged",
    "flagged_precision": "precision of flagged",
    "threshold": "likely-copy threshold",
}


def _detection_table(evaluations: list[Evaluation]) -> Table | None:
    """Copy detection of the evaluations that measured it: every drawing's top results pooled."""
    measured = [e for e in evaluations if e.detection]
    if not measured:
        return None
    table = Table(
        "detection",
        "Copy detection: the top results of all drawings pooled, copies and non-copies together",
        ["model", "pairs (set)", "drawings that copy nothing", *DETECTION_KEYS.values()],
        note="Percent; confidence figures only where a calibration exists (evaluate "
        "calibrate=true); the threshold is the likely-copy confidence, in percent.",
    )
    for e in measured:
        cells = [num(e.detection[k]) if k in e.detection else "–" for k in DETECTION_KEYS]
        n_none = integer(e.detection.get("n_non_copy_drawings", 0))
        table.rows.append([e.model_tag, e.label, n_none, *cells])
    return table


def _ranks(
    out: str, catalogue: pd.DataFrame, evaluations: list[Evaluation]
) -> dict[str, dict[str, np.ndarray]]:
    """Today's 0-based positions of each evaluation's annotated artworks (by evaluation file):
    drawing id -> positions; evaluations whose pairs file is gone or empty are left out."""
    found = {}
    for e in evaluations:
        pairs = evaluation_pairs(e, catalogue)
        if pairs is None or pairs.empty:
            continue
        found[e.file] = positions(out, e.model_tag, catalogue, annotated(pairs))
    return found


def _positions(
    evaluations: list[Evaluation],
    ranks: dict[str, dict[str, np.ndarray]],
    images: Images,
    data: dict[str, Any],
) -> dict[str, Any]:
    """The box plot of the annotated artworks' positions, and the evaluations whose numbers
    those positions no longer give (embeddings changed since evaluate ran)."""
    boxes: dict[str, list[float]] = {}
    checks = []
    for e in evaluations:
        if e.file not in ranks:
            continue
        ks = [int(k[2:]) for k in e.metrics if k.startswith("R@")]
        again = metrics_of_positions(ranks[e.file], ks)
        same = all(abs(again[k] - v) <= 1e-6 for k, v in e.metrics.items() if k in again)
        checks.append((e, same))
        boxes[f"{e.model_tag}\n{e.label}"] = np.concatenate(list(ranks[e.file].values())).tolist()
    figure = None
    if boxes:
        fig = plots.box_plot(
            boxes,
            "Positions of the annotated artworks (thesis figs. 5.5-5.7)",
            "position (0-based, as in MP; lower is better)",
        )
        figure = images.figure("positions", fig)
    data["positions_match_evaluate"] = {e.file: same for e, same in checks}
    stale = ", ".join(f"{e.model_tag} on {e.label}" for e, same in checks if not same)
    return {"positions": figure, "stale": stale}


@dataclass
class DifferencePart:
    """One model against the reference on one pairs file (set): its table and JSON record."""

    table: Table
    record: dict[str, Any]


def _differences(
    evaluations: list[Evaluation],
    ranks: dict[str, dict[str, np.ndarray]],
    tags: list[str],
    bootstrap: Bootstrap,
) -> list[DifferencePart]:
    """Per pairs file (and set) evaluated under two models or more: each model against the
    reference (`bootstrap.reference` if evaluated there, else the first in `tags` order)."""
    by_label: dict[tuple[str, str | None], list[Evaluation]] = {}
    for e in evaluations:
        if e.file in ranks:
            by_label.setdefault((e.pairs, e.set), []).append(e)
    parts = []
    for group in by_label.values():
        group = sorted(group, key=lambda e: tags.index(e.model_tag))
        if len(group) < 2:
            continue
        reference = next((e for e in group if e.model_tag == bootstrap.reference), group[0])
        for e in group:
            if e is not reference:
                parts.append(_difference(reference, e, ranks, bootstrap))
    return parts


def _difference(
    reference: Evaluation,
    model: Evaluation,
    ranks: dict[str, dict[str, np.ndarray]],
    bootstrap: Bootstrap,
) -> DifferencePart:
    """`model` minus `reference` on the drawings both scored, each metric with its interval."""
    ref_ranks, model_ranks = ranks[reference.file], ranks[model.file]
    queries = sorted(set(ref_ranks) & set(model_ranks))
    gallery = min(reference.gallery_size, model.gallery_size)
    ks = [k for k in (_r_at(m) for m in metric_keys(reference.metrics)) if k is not None]
    ks = shown_ks([k for k in ks if f"R@{k}" in model.metrics], gallery)
    found = paired_bootstrap(
        per_query_metrics([ref_ranks[q] for q in queries], ks),
        per_query_metrics([model_ranks[q] for q in queries], ks),
        ["MAP", "MP", "MMP", *[f"R@{k}" for k in ks]],
        bootstrap.resamples,
        bootstrap.seed,
    )
    a, b = reference.model_tag, model.model_tag
    table = Table(
        f"difference-{slug(b)}-vs-{slug(a)}-{slug(model.label)}",
        f"{b} − {a} on {model.label}: {len(queries)} drawings, paired bootstrap 95 % interval",
        ["metric", a, b, "difference", "95 % interval", "clear difference"],
        note=f"Difference: {b} minus {a}; MAP and R@k (percent): higher is better, MP and MMP "
        f"(0-based positions): lower is better. Interval: 2.5th and 97.5th percentiles of the "
        f"difference over {bootstrap.resamples} resamples of the {len(queries)} drawings (drawn "
        f"with replacement, the same draw for both models; seed {bootstrap.seed}). Clear: the "
        "interval leaves out 0.",
    )
    for d in found:
        verdict = ("yes, better" if d.better else "yes, worse") if d.clear else "no (holds 0)"
        table.rows.append(
            [
                d.metric,
                num(d.reference),
                num(d.model),
                (f"{d.difference:+.2f}", d.difference),
                (f"[{d.low:+.2f}, {d.high:+.2f}]", [d.low, d.high]),
                verdict,
            ]
        )
    record = {
        "reference": a,
        "model": b,
        "pairs": model.pairs,
        "set": model.set,
        "queries": len(queries),
        "resamples": bootstrap.resamples,
        "seed": bootstrap.seed,
        "metrics": {d.metric: asdict(d) for d in found},
    }
    return DifferencePart(table, record)


def _run_groups(
    runs: list[Run], folds: dict[str, Any] | None, tables: list[Table], data: dict[str, Any]
) -> list[RunGroupPart]:
    """The groups of training runs with results; a group that is the folds' runs has no table."""
    parts = []
    for group in group_runs(runs):
        data["run_groups"].append(
            {
                "name": group.name,
                "runs": group.runs,
                "tables": {n: {k: list(v) for k, v in t.items()} for n, t in group.tables.items()},
            }
        )
        if not group.tables:
            continue
        if folds is not None and sorted(group.runs) == sorted(folds.get("runs", [])):
            parts.append(RunGroupPart(group.name, len(group.runs), None))
            continue
        table = mean_std_table(
            f"runs-{group.name}",
            f"{group.name}: mean ± std over {len(group.runs)} run(s)",
            group.tables,
        )
        tables.append(table)
        parts.append(RunGroupPart(group.name, len(group.runs), table))
    return parts


def _run_figures(runs: list[Run], images: Images) -> dict[str, str | None]:
    """Test MP per run, pretrained vs fine-tuned (if any run has it), and the training curves."""
    mp = {
        column: [r.columns()[column]["MP"] for r in runs if "MP" in r.columns().get(column, {})]
        for column in ("test/pretrained", "test/fine-tuned")
    }
    mp = {k: v for k, v in mp.items() if v}
    fold_mp = None
    if mp:
        fig = plots.box_plot(
            mp, "Test MP per run, pretrained vs fine-tuned (thesis fig. 5.7)", "MP (0-based)"
        )
        fold_mp = images.figure("fold-mp", fig)
    curves = plots.training_curves({r.name: r.history for r in runs})
    return {"fold_mp": fold_mp, "curves": images.figure("training-curves", curves)}


def _history(run: Run) -> Table:
    """A training run's numbers per epoch."""
    keys = ["train_loss", "val_MAP", "val_MP", "mining_share", "lr"]
    best = run.best_epoch + 1 if run.best_epoch >= 0 else "none: the pretrained weights"
    table = Table(
        f"history-{run.name}", f"{run.name}: per epoch (best epoch {best})", ["epoch", *keys]
    )
    for h in run.history:
        table.rows.append(
            [str(int(h["epoch"]) + 1), *[(num(h[k], 4) if k in h else "–") for k in keys]]
        )
    return table


# ----------------------------------------------------------------------------------------------
# qualitative sheets


@dataclass
class SheetChoice:
    """What the sheets show: the annotations (`drawing_id`, `artwork_id`), the drawings, the
    requested drawings that can not be shown, and the model whose closest unannotated pairs are
    listed for review (None: no review)."""

    pairs: pd.DataFrame
    drawings: list[str]
    refused: list[str]
    review_model: str | None


@dataclass
class ModelRow:
    """One model's top-k on a sheet, and the annotated artworks ranked below it."""

    tag: str
    tiles: list[Tile]
    missed: list[str]


@dataclass
class Sheet:
    """A drawing with its annotated artworks (`left`) and each model's top-k (`models`)."""

    anchor: str
    left: list[Tile]
    models: list[ModelRow]


@dataclass
class Review:
    """The closest unannotated pairs under one model: (drawing, artwork) tiles and their table."""

    model_tag: str
    pairs: list[tuple[Tile, Tile]]
    table: Table


def sheets_section(
    out: str,
    catalogue: pd.DataFrame,
    tags: list[str],
    choice: SheetChoice,
    images: Images,
    tables: list[Table],
    *,
    top_k: int,
    review_candidates: int,
) -> tuple[Section, dict[str, Any]]:
    """Qualitative sheets of the chosen drawings, and the candidates for expert review."""
    relevant = annotated(choice.pairs)
    data: dict[str, Any] = {
        "drawings": choice.drawings,
        "not_shown": len(choice.refused),
        "sheets": [],
        "review": None,
    }
    per_model = {
        tag: {
            r.drawing_id: r for r in rankings(out, tag, catalogue, choice.drawings, relevant, top_k)
        }
        for tag in tags
    }
    sheets = []
    for drawing in choice.drawings:
        sheet, record = _sheet(drawing, relevant.get(drawing, []), tags, per_model, images)
        sheets.append(sheet)
        data["sheets"].append(record)
    review = None
    if choice.review_model and review_candidates:
        review, data["review"] = _review(
            out, catalogue, choice.pairs, choice.review_model, review_candidates, images
        )
        tables.append(review.table)
    body = render(
        "sheets.html",
        top_k=top_k,
        refused=len(choice.refused),
        sheets=sheets,
        review=review,
        review_candidates=review_candidates,
    )
    return Section("sheets", "Qualitative sheets", body), data


def _sheet(
    drawing: str,
    relevant: list[str],
    tags: list[str],
    per_model: dict[str, dict[str, Ranking]],
    images: Images,
) -> tuple[Sheet, dict[str, Any]]:
    """The sheet of one drawing, and its record for `report.json`."""
    left = [images.tile(drawing, ["drawing", drawing], "query")]
    for a in relevant:
        ranks = "; ".join(f"{tag}: rank {per_model[tag][drawing].annotated[a][0]}" for tag in tags)
        left.append(images.tile(a, ["annotated artwork", a, ranks], "annotated"))
    record: dict[str, Any] = {"drawing_id": drawing, "annotated": relevant, "models": {}}
    rows = []
    for tag in tags:
        ranking = per_model[tag][drawing]
        tiles = [
            images.tile(
                a,
                [f"rank {r} · distance {d:.3f}", a],
                "annotated" if a in ranking.annotated else "",
            )
            for a, d, r in ranking.top
        ]
        shown = {a for a, _d, _r in ranking.top}
        missed = [
            f"{a}: rank {r} (distance {d:.3f})"
            for a, (r, d) in sorted(ranking.annotated.items(), key=lambda x: x[1][0])
            if a not in shown
        ]
        rows.append(ModelRow(tag, tiles, missed))
        record["models"][tag] = {
            "top": [{"artwork_id": a, "distance": d, "rank": r} for a, d, r in ranking.top],
            "annotated_ranks": {
                a: {"rank": r, "distance": d} for a, (r, d) in ranking.annotated.items()
            },
        }
    return Sheet(f"sheet-{slug(drawing)}", left, rows), record


def _review(
    out: str,
    catalogue: pd.DataFrame,
    pairs: pd.DataFrame,
    tag: str,
    n: int,
    images: Images,
) -> tuple[Review, dict[str, Any]]:
    """The `n` closest unannotated drawing-artwork pairs under model `tag`."""
    found = review_candidates(out, tag, catalogue, pairs, n)
    table = Table(
        "review",
        f"Closest unannotated drawing–artwork pairs under {tag}, for expert review (thesis appendix B)",
        ["drawing", "artwork", "distance", "rank"],
    )
    tiles = []
    for drawing, artwork, distance, rank in zip(
        found["drawing_id"], found["artwork_id"], found["distance"], found["rank"]
    ):
        table.rows.append([drawing, artwork, num(distance, 3), integer(rank)])
        caption = [f"rank {rank} · distance {distance:.3f}", artwork]
        tiles.append(
            (images.tile(drawing, ["drawing", drawing], "query"), images.tile(artwork, caption))
        )
    data = {"model_tag": tag, "candidates": found.to_dict("records")}
    return Review(tag, tiles, table), data
