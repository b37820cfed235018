"""The report job: a static HTML report of what the other jobs wrote under one output root.

`output/index.html` (default `out/report/`) opens from disk: no server, nothing fetched, every
image in `output/images/` beside it. Three parts, as the thesis presents its results:

- the collection (chapter 3, table A.1): drawings per year, age group and country, the year x
  age-group table, sample drawings per age group, ingest's parse and error counts, duplicates;
- model comparison (tables 5.1-5.4, 6.1, figures 5.5-5.7): each model's metrics as evaluate
  wrote them, mean +- std over fold runs, the distribution of positions, training curves;
- qualitative sheets (figures 6.1-6.5): chosen drawings, their annotated artworks and each
  model's top-k, with every annotated artwork's rank; the closest unannotated pairs (appendix B).

Every table is also written as text (`tables.txt`, and under each table), and every number in
`report.json`. Versos are never shown: not as an image, not as an id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import MIN_IMAGE_SIZE, Config, save_config, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import list_model_tags
from drawmatch.data.pairs import read_pairs
from drawmatch.reporting import insights, plots
from drawmatch.reporting.results import (
    Evaluation,
    Ranking,
    annotated,
    evaluation_pairs,
    group_runs,
    metric_keys,
    metrics_of_positions,
    positions,
    rankings,
    read_evaluations,
    read_fold_tables,
    read_runs,
    review_candidates,
)
from drawmatch.reporting.sheets import thumbnail


@dataclass(frozen=True)
class ReportConfig(Config):
    """A static HTML report of what the jobs wrote under `out`: `output/index.html` with its
    images beside it (default `output`: `out/report`).

    `model_tags`: the models compared (empty: every model with embeddings); `drawings`: the
    drawings of the qualitative sheets (empty: `examples` annotated drawings drawn with `seed`);
    `pairs_csv`: the annotations shown (default: the pairs file of the models' evaluations);
    `review_model`: the model whose closest unannotated pairs are listed for review (default:
    the best by MAP)."""

    out: str = setting("drawmatch-out", help="output root")
    output: str | None = setting(None, help="report folder (null: out/report)")
    model_tags: tuple[str, ...] = setting(
        (), may_be_empty=True, help="models compared (empty: all)"
    )
    drawings: tuple[str, ...] = setting((), may_be_empty=True, help="drawings shown (empty: drawn)")
    pairs_csv: str | None = setting(None, help="annotations shown")
    examples: int = setting(6, ge=0, help="drawings drawn for the sheets")
    seed: int = setting(0, help="seed of the drawn drawings")
    top_k: int = setting(10, ge=1, help="artworks per sheet row")
    samples_per_age_group: int = setting(6, ge=0, help="drawings shown per age group")
    top_countries: int = setting(30, ge=1, help="countries in the country table")
    review_candidates: int = setting(24, ge=0, help="unannotated pairs listed for review")
    review_model: str | None = setting(None, help="model of the review list (null: best MAP)")
    thumb_size: int = setting(220, ge=MIN_IMAGE_SIZE, le=1024, help="thumbnail side in px")


INDEX_FILE = "index.html"
JSON_FILE = "report.json"
TEXT_FILE = "tables.txt"
IMAGES = "images"

CONVENTIONS = (
    "Ranks shown to people are 1-based: rank 1 is the closest artwork among all searchable "
    "artworks. MP (Mean Position) and MMP (Minimum Mean Position) keep the thesis' 0-based "
    "positions (sec. 4.5): an artwork ranked first has position 0. R@k and MAP are percentages; "
    "MAP is the standard average precision over the full ranking. Distance = 1 - cosine "
    "similarity of the embeddings (0 = identical)."
)


# ----------------------------------------------------------------------------------------------
# tables: one definition, written as HTML and as text


@dataclass
class Table:
    """A table with a header row; a cell is text or (text, exact value) for numbers."""

    key: str
    title: str
    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = []
        for row in self.rows:
            cells = []
            for cell in row:
                if isinstance(cell, tuple):
                    text, value = cell
                    cells.append(
                        f'<td class="num" data-value="{html.escape(repr(value))}">'
                        f"{html.escape(text)}</td>"
                    )
                else:
                    cells.append(f"<td>{html.escape(str(cell))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (
            f'<table id="table-{_slug(self.key)}" data-table="{html.escape(self.key)}">'
            f"<caption>{html.escape(self.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}"
            f"<details><summary>as text</summary><pre>{html.escape(self.text())}</pre></details>"
        )

    def text(self) -> str:
        cells = [[c[0] if isinstance(c, tuple) else str(c) for c in row] for row in self.rows]
        widths = [len(h) for h in self.header]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.header, widths))
        lines = [self.title, line, "-" * len(line)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _num(value: float, digits: int = 2) -> tuple[str, float]:
    return (f"{value:.{digits}f}", float(value))


def _int(value: int | float) -> tuple[str, int]:
    return (f"{int(value)}", int(value))


def _mean_std(pair: tuple[float, float] | list[float]) -> tuple[str, list[float]]:
    mean, std = float(pair[0]), float(pair[1])
    return (f"{mean:.2f} ± {std:.2f}", [mean, std])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


# ----------------------------------------------------------------------------------------------
# images


class Images:
    """Thumbnails and figures written under `output/images`, referenced relatively from HTML.
    Refuses any verso: a verso id can never become an image of the report."""

    def __init__(self, out: str, output: str, catalogue: pd.DataFrame, size: int) -> None:
        self.dir = storage.join(output, IMAGES)
        storage.makedirs(self.dir)
        self.size = size
        roots = cat.read_roots(out)
        self.paths = dict(zip(catalogue["id"], cat.resolve_paths(catalogue, roots)))
        self.hidden = set(catalogue.loc[insights.is_verso(catalogue), "id"])
        self.written: dict[str, str] = {}

    def thumb(self, image_id: str) -> str:
        """Relative path of the thumbnail of catalogue image `image_id` (written once)."""
        if image_id in self.hidden:
            raise ValueError(f"a verso can not be shown: {image_id}")
        if image_id not in self.written:
            digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
            name = f"{_slug(image_id)[:60]}-{digest}.jpg"
            img = thumbnail(self.paths[image_id], self.size)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=85)
            storage.write_bytes(storage.join(self.dir, name), buffer.getvalue())
            self.written[image_id] = f"{IMAGES}/{name}"
        return self.written[image_id]

    def figure(self, name: str, fig: Any) -> str:
        storage.write_bytes(storage.join(self.dir, f"{name}.png"), plots.png(fig))
        return f"{IMAGES}/{name}.png"


def _img(src: str, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}"{c} loading="lazy">'


def _figure(src: str, caption: str) -> str:
    return f"<figure>{_img(src, caption, 'plot')}<figcaption>{html.escape(caption)}</figcaption></figure>"


# ----------------------------------------------------------------------------------------------
# the three parts


@dataclass
class Section:
    key: str
    title: str
    body: list[str] = field(default_factory=list)


def collection_section(
    catalogue: pd.DataFrame, config: ReportConfig, images: Images, tables: list[Table]
) -> tuple[Section, dict[str, Any]]:
    section = Section("collection", "The collection")
    drawings = insights.drawings(catalogue)
    artworks = catalogue[(catalogue["collection"] == "artwork") & cat.originals(catalogue)]
    data: dict[str, Any] = {"drawings": len(drawings), "artworks": len(artworks)}
    section.body.append(
        f"<p>{len(drawings)} drawings catalogued (originals; versos are counted by ingest but "
        f"never shown) and {len(artworks)} searchable artworks. Unknown values are counted as "
        f"<em>unknown</em>, never guessed.</p>"
    )
    for column, title, ranked in (
        ("year", "Drawings per year", False),
        ("age_group", "Drawings per age group", False),
        ("country_iso3", "Drawings per country (ranked)", True),
    ):
        counts = insights.counts(catalogue, column)
        data[f"by_{column}"] = dict(zip(counts["value"], counts["drawings"].astype(int).tolist()))
        names = (
            insights.country_names([v for v in counts["value"] if v != insights.UNKNOWN])
            if column == "country_iso3"
            else {}
        )
        label = {"year": "year", "age_group": "age group", "country_iso3": "country"}[column]
        table = Table(
            f"drawings-by-{column}",
            title,
            [label] + (["ISO 3166 code"] if names else []) + ["drawings", "share (%)"],
        )
        for value, n, share in zip(counts["value"], counts["drawings"], counts["share"]):
            code = [value] if names else []
            table.rows.append([names.get(value, value), *code, _int(n), _num(share, 1)])
        tables.append(table)
        known = counts[counts["value"] != insights.UNKNOWN]
        if known.empty:
            section.body.append(
                f"<h3>{html.escape(title)}</h3><p>Unknown for every drawing (names that do not "
                f"follow the IMAJ convention, and no overrides).</p>"
            )
            continue
        shown = counts.head(config.top_countries) if ranked else counts
        labels = [names.get(v, v) for v in shown["value"]]
        suffix = (
            f" (top {len(shown)} of {len(counts)})" if ranked and len(counts) > len(shown) else ""
        )
        fig = plots.bar_chart(
            labels, shown["drawings"].tolist(), title + suffix, "drawings", ranked
        )
        src = images.figure(f"drawings-by-{column}", fig)
        section.body.append(
            f'<h3>{html.escape(title)}</h3><div class="side">{_img(src, title + suffix, "plot")}'
            f"<div>{table.html()}</div></div>"
        )
    year_age = insights.year_age_table(catalogue)
    data["year_age"] = {
        str(y): {str(a): int(v) for a, v in row.items()} for y, row in year_age.iterrows()
    }
    table = Table(
        "year-age",
        "Drawings per year and age group (thesis table A.1)",
        ["year", *map(str, year_age.columns)],
    )
    for year, row in year_age.iterrows():
        table.rows.append([str(year), *[_int(v) for v in row]])
    tables.append(table)
    section.body.append("<h3>Year × age group</h3>" + table.html())

    samples = insights.sample_drawings(catalogue, config.samples_per_age_group, config.seed)
    data["samples"] = samples
    grid = []
    for group, ids in samples.items():
        tiles = "".join(
            f'<div class="tile">{_img(images.thumb(i), i)}<div class="cap">{html.escape(i)}</div></div>'
            for i in ids
        )
        grid.append(
            f'<h4>age group {html.escape(group)} ({len(ids)} shown)</h4><div class="tiles">{tiles}</div>'
        )
    section.body.append(
        f"<h3>Sample drawings per age group</h3><p>A seeded sample (seed {config.seed}) of up to "
        f"{config.samples_per_age_group} readable original drawings per age group.</p>"
        + "".join(grid)
    )

    summary = insights.read_ingest_summary(config.out)
    if summary is not None:
        counts = insights.ingest_counts(summary)
        data["ingest"] = dict(zip(counts["item"].str.strip(), counts["count"].astype(int).tolist()))
        table = Table("ingest", "Ingest: parse and error counts", ["item", "files"])
        table.rows = [[item, _int(n)] for item, n in zip(counts["item"], counts["count"])]
        tables.append(table)
        section.body.append("<h3>Ingest</h3>" + table.html())
    else:
        section.body.append(
            "<h3>Ingest</h3><p>No <code>ingest_summary.json</code> under this output root.</p>"
        )
    dups = insights.duplicates(catalogue)
    data["duplicates"] = dups.to_dict("records")
    table = Table(
        "duplicates",
        "Files with the same content as another (flagged, not merged)",
        ["id", "same content as", "collection"],
    )
    table.rows = [
        [str(a), str(b), str(c)]
        for a, b, c in zip(dups["id"], dups["duplicate_of"], dups["collection"])
    ]
    tables.append(table)
    section.body.append(table.html() if len(dups) else "<p>No duplicate content found.</p>")
    return section, data


def comparison_section(
    config: ReportConfig,
    catalogue: pd.DataFrame,
    tags: list[str],
    evaluations: list[Evaluation],
    images: Images,
    tables: list[Table],
) -> tuple[Section, dict[str, Any]]:
    section = Section("models", "Model comparison")
    data: dict[str, Any] = {"evaluations": [], "folds": None, "run_groups": [], "runs": []}
    section.body.append(f"<p>{html.escape(CONVENTIONS)}</p>")
    evaluations = [e for e in evaluations if e.model_tag in tags]
    if evaluations:
        keys = [k for k in metric_keys(evaluations[0].metrics)]
        for e in evaluations[1:]:
            keys += [k for k in metric_keys(e.metrics) if k not in keys]
        table = Table(
            "evaluations",
            "Metrics per model, as `drawmatch evaluate` wrote them",
            ["model", "pairs (set)", "gallery", *keys],
            note="MP, MMP: means of 0-based positions; R@k, MAP: percent.",
        )
        for e in evaluations:
            cells = [
                (_int(e.metrics[k]) if k.startswith("n_") else _num(e.metrics[k]))
                if k in e.metrics
                else "–"
                for k in keys
            ]
            table.rows.append([e.model_tag, e.label, _int(e.gallery_size), *cells])
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
        tables.append(table)
        section.body.append("<h3>Each model on its annotated pairs</h3>" + table.html())
        boxes: dict[str, list[float]] = {}
        checks = []
        for e in evaluations:
            pairs = evaluation_pairs(e, catalogue)
            if pairs is None or pairs.empty:
                continue
            ranks = positions(config.out, e.model_tag, catalogue, annotated(pairs))
            ks = [int(k[2:]) for k in e.metrics if k.startswith("R@")]
            again = metrics_of_positions(ranks, ks)
            same = all(abs(again[k] - v) <= 1e-6 for k, v in e.metrics.items() if k in again)
            checks.append((e, same))
            boxes[f"{e.model_tag}\n{e.label}"] = np.concatenate(list(ranks.values())).tolist()
        if boxes:
            fig = plots.box_plot(
                boxes,
                "Positions of the annotated artworks (thesis figs. 5.5-5.7)",
                "position (0-based, as in MP; lower is better)",
            )
            src = images.figure("positions", fig)
            section.body.append(
                "<h3>Where the annotated artworks land</h3>"
                + _figure(
                    src,
                    "One dot per annotated pair; box: quartiles, line: median, diamond: mean (= MP).",
                )
            )
        stale = [e for e, same in checks if not same]
        data["positions_match_evaluate"] = {e.file: same for e, same in checks}
        if stale:
            stale_names = ", ".join(f"{e.model_tag} on {e.label}" for e in stale)
            section.body.append(
                f'<p class="warn">The embeddings of {html.escape(stale_names)} changed after '
                f"<code>drawmatch evaluate</code> ran: the positions above are today's, the table's "
                f"numbers are evaluate's. Run evaluate again.</p>"
            )
    else:
        section.body.append(
            "<p>No <code>evaluation/&lt;model&gt;/metrics*.json</code>: run <code>drawmatch evaluate</code>.</p>"
        )

    folds = read_fold_tables(config.out)
    if folds is not None:
        data["folds"] = folds
        fold_names = list(folds["tables"])
        fold_keys = metric_keys(folds["tables"][fold_names[0]]) if fold_names else []
        table = Table(
            "folds",
            f"Mean ± std over {len(folds.get('runs', []))} fold run(s), as `evaluate --folds` wrote them (evaluation/folds.json)",
            ["metric", *fold_names],
        )
        for k in fold_keys:
            table.rows.append([k, *[_mean_std(folds["tables"][n][k]) for n in fold_names]])
        tables.append(table)
        section.body.append("<h3>Over folds</h3>" + table.html())

    runs = read_runs(config.out)
    if runs:
        for group in group_runs(runs):
            columns = list(group.tables)
            data["run_groups"].append(
                {
                    "name": group.name,
                    "runs": group.runs,
                    "tables": {
                        n: {k: list(v) for k, v in t.items()} for n, t in group.tables.items()
                    },
                }
            )
            if not columns:
                continue
            if folds is not None and sorted(group.runs) == sorted(folds.get("runs", [])):
                section.body.append(
                    f"<p>Training runs {html.escape(group.name)}: the {len(group.runs)} runs of the "
                    f"table above (same figures).</p>"
                )
                continue
            keys = metric_keys(group.tables[columns[0]])
            table = Table(
                f"runs-{group.name}",
                f"{group.name}: mean ± std over {len(group.runs)} run(s)",
                ["metric", *columns],
            )
            for k in keys:
                table.rows.append(
                    [
                        k,
                        *[
                            _mean_std(group.tables[n][k]) if k in group.tables[n] else "–"
                            for n in columns
                        ],
                    ]
                )
            tables.append(table)
            section.body.append(f"<h3>Training runs: {html.escape(group.name)}</h3>" + table.html())
        mp = {
            f"{column}": [
                r.columns()[column]["MP"] for r in runs if "MP" in r.columns().get(column, {})
            ]
            for column in ("test/pretrained", "test/fine-tuned")
        }
        mp = {k: v for k, v in mp.items() if v}
        if mp:
            src = images.figure(
                "fold-mp",
                plots.box_plot(
                    mp,
                    "Test MP per run, pretrained vs fine-tuned (thesis fig. 5.7)",
                    "MP (0-based)",
                ),
            )
            section.body.append(_figure(src, "One dot per train run (fold); diamond: mean."))
        src = images.figure(
            "training-curves", plots.training_curves({r.name: r.history for r in runs})
        )
        section.body.append(
            "<h3>Training curves</h3>"
            + _figure(
                src,
                "Per epoch: training loss, validation MAP and the share of a step spent mining negatives.",
            )
        )
        for run in runs:
            data["runs"].append(asdict(run))
            hist_keys = ["train_loss", "val_MAP", "val_MP", "mining_share", "lr"]
            table = Table(
                f"history-{run.name}",
                f"{run.name}: per epoch (best epoch {run.best_epoch + 1 if run.best_epoch >= 0 else 'none: the pretrained weights'})",
                ["epoch", *hist_keys],
            )
            for h in run.history:
                table.rows.append(
                    [
                        str(int(h["epoch"]) + 1),
                        *[(_num(h[k], 4) if k in h else "–") for k in hist_keys],
                    ]
                )
            tables.append(table)
            section.body.append(table.html())
    return section, data


def _pairs_for_sheets(
    config: ReportConfig, evaluations: list[Evaluation], catalogue: pd.DataFrame
) -> pd.DataFrame:
    """The annotations shown: `pairs_csv`, else every pairs file the evaluations name."""
    frames = []
    if config.pairs_csv:
        frames.append(read_pairs(config.pairs_csv)[["drawing_id", "artwork_id"]])
    else:
        for e in evaluations:
            pairs = evaluation_pairs(e, catalogue)
            if pairs is not None:
                frames.append(pairs)
    if not frames:
        return pd.DataFrame(columns=["drawing_id", "artwork_id"])
    pairs = pd.concat(frames).drop_duplicates()
    keep = pairs["drawing_id"].isin(set(cat.query_ids(catalogue))) & pairs["artwork_id"].isin(
        set(cat.gallery_ids(catalogue))
    )
    return pairs[keep].reset_index(drop=True)


def choose_drawings(
    config: ReportConfig, catalogue: pd.DataFrame, pairs: pd.DataFrame
) -> tuple[list[str], list[str]]:
    """The drawings of the qualitative sheets and the requested ones that can not be shown."""
    searchable = set(cat.query_ids(catalogue))
    if config.drawings:
        chosen = [d for d in config.drawings if d in searchable]
        return chosen, [d for d in config.drawings if d not in searchable]
    annotated_ids = sorted(set(pairs["drawing_id"]))
    rng = np.random.default_rng(config.seed)
    if len(annotated_ids) > config.examples:
        annotated_ids = sorted(
            rng.choice(annotated_ids, size=config.examples, replace=False).tolist()
        )
    return annotated_ids, []


def _tile(images: Images, image_id: str, lines: list[str], cls: str = "") -> str:
    caption = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
    return f'<div class="tile {cls}">{_img(images.thumb(image_id), image_id)}<div class="cap">{caption}</div></div>'


def sheets_section(
    config: ReportConfig,
    catalogue: pd.DataFrame,
    tags: list[str],
    evaluations: list[Evaluation],
    images: Images,
    tables: list[Table],
) -> tuple[Section, dict[str, Any]]:
    section = Section("sheets", "Qualitative sheets")
    pairs = _pairs_for_sheets(config, evaluations, catalogue)
    relevant = annotated(pairs)
    chosen, refused = choose_drawings(config, catalogue, pairs)
    data: dict[str, Any] = {
        "drawings": chosen,
        "not_shown": len(refused),
        "sheets": [],
        "review": None,
    }
    section.body.append(
        f'<div class="legend"><b>How to read a sheet.</b> Left: the drawing (blue frame) and the '
        f"artworks annotated for it (green frame). Right: for each model, its {config.top_k} closest "
        f"artworks, in order. Under each: its rank (1 = closest, among all searchable artworks) and "
        f"its distance (1 − cosine similarity; 0 = identical). A green frame marks an annotated "
        f"artwork; an annotated artwork ranked below {config.top_k} is named after the row with its "
        f"rank.</div>"
    )
    if refused:
        section.body.append(
            f'<p class="warn">{len(refused)} requested drawing(s) are not searchable drawings and are not shown.</p>'
        )
    per_model = {
        tag: {
            r.drawing_id: r
            for r in rankings(config.out, tag, catalogue, chosen, relevant, config.top_k)
        }
        for tag in tags
    }
    for drawing in chosen:
        left = [_tile(images, drawing, ["drawing", drawing], "query")]
        for a in relevant.get(drawing, []):
            ranks = "; ".join(
                f"{tag}: rank {per_model[tag][drawing].annotated[a][0]}" for tag in tags
            )
            left.append(_tile(images, a, ["annotated artwork", a, ranks], "annotated"))
        rows = []
        record: dict[str, Any] = {
            "drawing_id": drawing,
            "annotated": relevant.get(drawing, []),
            "models": {},
        }
        for tag in tags:
            ranking: Ranking = per_model[tag][drawing]
            tiles = [
                _tile(
                    images,
                    a,
                    [f"rank {r} · distance {d:.3f}", a],
                    "annotated" if a in ranking.annotated else "",
                )
                for a, d, r in ranking.top
            ]
            shown = {a for a, _d, _r in ranking.top}
            missed = [
                f"{html.escape(a)}: rank {r} (distance {d:.3f})"
                for a, (r, d) in sorted(ranking.annotated.items(), key=lambda x: x[1][0])
                if a not in shown
            ]
            extra = (
                f'<p class="missed">Annotated, below the top {config.top_k}: '
                + "; ".join(missed)
                + "</p>"
                if missed
                else ""
            )
            rows.append(
                f'<div class="model"><h4>{html.escape(tag)}</h4>'
                f'<div class="topk" style="--k:{config.top_k}">{"".join(tiles)}</div>{extra}</div>'
            )
            record["models"][tag] = {
                "top": [{"artwork_id": a, "distance": d, "rank": r} for a, d, r in ranking.top],
                "annotated_ranks": {
                    a: {"rank": r, "distance": d} for a, (r, d) in ranking.annotated.items()
                },
            }
        data["sheets"].append(record)
        section.body.append(
            f'<div class="sheet" id="sheet-{_slug(drawing)}"><div class="left">{"".join(left)}</div>'
            f'<div class="right">{"".join(rows)}</div></div>'
        )
    if not chosen:
        section.body.append(
            "<p>No drawing to show: give <code>drawings=</code> or evaluate a pairs file.</p>"
        )

    review_tag = config.review_model or _best_model(evaluations, tags)
    if review_tag and config.review_candidates:
        table_df = review_candidates(
            config.out, review_tag, catalogue, pairs, config.review_candidates
        )
        data["review"] = {"model_tag": review_tag, "candidates": table_df.to_dict("records")}
        table = Table(
            "review",
            f"Closest unannotated drawing–artwork pairs under {review_tag}, for expert review (thesis appendix B)",
            ["drawing", "artwork", "distance", "rank"],
        )
        tiles = []
        for drawing, artwork, distance, rank in zip(
            table_df["drawing_id"], table_df["artwork_id"], table_df["distance"], table_df["rank"]
        ):
            table.rows.append([drawing, artwork, _num(distance, 3), _int(rank)])
            caption = [f"rank {rank} · distance {distance:.3f}", artwork]
            tiles.append(
                f'<div class="pair">{_tile(images, drawing, ["drawing", drawing], "query")}'
                f"{_tile(images, artwork, caption)}</div>"
            )
        tables.append(table)
        section.body.append(
            f"<h3>Candidates for review</h3><p>Each searchable drawing's 3 closest artworks under "
            f"<b>{html.escape(review_tag)}</b> that nobody annotated, the {config.review_candidates} "
            f'closest overall.</p><div class="pairs">{"".join(tiles)}</div>' + table.html()
        )
    return section, data


def _best_model(evaluations: list[Evaluation], tags: list[str]) -> str | None:
    scored = [
        (e.metrics.get("MAP", -1.0), e.model_tag)
        for e in evaluations
        if e.model_tag in tags and not e.set
    ]
    if scored:
        return max(scored)[1]
    return tags[0] if tags else None


# ----------------------------------------------------------------------------------------------
# the page

CSS = """
body{font-family:Georgia,'DejaVu Serif',serif;margin:0 auto;max-width:1500px;padding:0 24px 60px;color:#222;line-height:1.4}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 0;z-index:2}
nav a{margin-right:18px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #1f5f8b;padding-bottom:4px;margin-top:40px}
table{border-collapse:collapse;margin:10px 0;font-family:'DejaVu Sans',Arial,sans-serif;font-size:13px}
caption{text-align:left;font-weight:bold;padding:4px 0}
th,td{border:1px solid #ccc;padding:3px 8px;vertical-align:top}
th{background:#eef3f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin-bottom:14px;font-size:12px} pre{background:#f6f6f6;padding:8px;overflow-x:auto}
figure{margin:12px 0} img.plot{max-width:100%;height:auto} figcaption{font-size:13px;color:#555}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.side{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.side img.plot{max-width:62%}
.topk{display:grid;grid-template-columns:repeat(var(--k),minmax(0,1fr));gap:6px}
.topk .tile{width:auto}.topk .tile img{width:100%;height:auto;aspect-ratio:1;box-sizing:border-box}
.topk .tile.annotated img,.topk .tile.query img{width:100%;height:auto}
.tile{width:170px;font-family:'DejaVu Sans',Arial,sans-serif;font-size:12px}
.tile img{width:166px;height:166px;object-fit:contain;background:#fafafa;border:2px solid #ccc}
.tile.query img{border:4px solid #28509f;width:162px;height:162px}
.tile.annotated img{border:4px solid #1e8c3c;width:162px;height:162px}
.cap{overflow-wrap:anywhere;word-break:break-word}
.sheet{display:flex;gap:20px;border-top:1px solid #ddd;padding:14px 0}
.sheet .left{display:flex;flex-direction:column;gap:10px;flex:0 0 175px}
.sheet .right{flex:1}
.model{margin-bottom:14px}
.model h4{margin:0 0 6px;font-family:'DejaVu Sans',Arial,sans-serif;overflow-wrap:anywhere}
.missed{font-size:13px;color:#1e6c2c;overflow-wrap:anywhere}
.legend{background:#f4f7fa;border:1px solid #c8d6e2;padding:10px;font-size:14px}
.warn{color:#9a3a00}
.pairs{display:flex;flex-wrap:wrap;gap:18px}.pair{display:flex;gap:6px;border:1px solid #ddd;padding:6px}
.note{font-size:12px;color:#555}
"""


def render(title: str, sections: list[Section], config: ReportConfig) -> str:
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{"".join(s.body)}</section>'
        for s in sections
    )
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">Output root <code>{html.escape(str(config.out))}</code>, '
        f"written {when}. Numbers: <code>{JSON_FILE}</code>; tables as text: "
        f"<code>{TEXT_FILE}</code>.</p><nav>{nav}</nav>{body}</body></html>"
    )


@dataclass
class ReportResult:
    index: str
    data: dict[str, Any]


def run(config: ReportConfig) -> ReportResult:
    """Write the report of the outputs under `config.out`; returns the index page's path."""
    out = config.out
    catalogue = cat.read_catalogue(out)
    output = config.output or storage.join(out, "report")
    storage.makedirs(output)
    available = list_model_tags(out)
    unknown = [t for t in config.model_tags if t not in available]
    if unknown:
        raise ValueError(f"no embeddings for model(s) {unknown}; available: {available or 'none'}")
    tags = list(config.model_tags) or available
    evaluations = read_evaluations(out)
    images = Images(out, output, catalogue, config.thumb_size)
    tables: list[Table] = []
    collection, collection_data = collection_section(catalogue, config, images, tables)
    models, model_data = comparison_section(config, catalogue, tags, evaluations, images, tables)
    sheets, sheet_data = sheets_section(config, catalogue, tags, evaluations, images, tables)
    page = render("drawmatch report", [collection, models, sheets], config)
    index = storage.join(output, INDEX_FILE)
    storage.write_text(index, page)
    data = {
        "out": str(out),
        "conventions": CONVENTIONS,
        "models": tags,
        "collection": collection_data,
        "comparison": model_data,
        "qualitative": sheet_data,
        "images": sorted(images.written.values()),
    }
    storage.write_text(storage.join(output, JSON_FILE), json.dumps(data, indent=2, default=_plain))
    storage.write_text(
        storage.join(output, TEXT_FILE), "\n\n".join(t.text() for t in tables) + "\n"
    )
    save_config(config, storage.join(output, "report_config.yaml"))
    print(f"report written to {index} ({len(images.written)} thumbnails, {len(tables)} tables)")
    return ReportResult(index, data)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
