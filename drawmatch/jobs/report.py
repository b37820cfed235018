"""The report job: a static HTML report of what the other jobs wrote under one output root.

`output/index.html` (default `out/report/`) opens from disk: no server, nothing fetched, every
image in `output/images/` beside it. Its three parts (the collection, model comparison,
qualitative sheets) are built by `drawmatch.reporting.report_sections` and rendered with the
templates of `drawmatch/reporting/templates`; this job reads the configuration, chooses what
the sheets show and writes the files.

Every table is also written as text (`tables.txt`, and under each table), and every number in
`report.json`. Versos are never shown: not as an image, not as an id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import MIN_IMAGE_SIZE, Config, save_config, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import list_model_tags
from drawmatch.data.pairs import read_pairs
from drawmatch.reporting.html_report import Images, Table, render_page
from drawmatch.reporting.report_sections import (
    CONVENTIONS,
    Bootstrap,
    SheetChoice,
    collection_section,
    comparison_section,
    sheets_section,
)
from drawmatch.reporting.results import Evaluation, evaluation_pairs, read_evaluations


@dataclass(frozen=True)
class ReportConfig(Config):
    """A static HTML report of what the jobs wrote under `out`: `output/index.html` with its
    images beside it (default `output`: `out/report`).

    `model_tags`: the models compared (empty: every model with embeddings); `drawings`: the
    drawings of the qualitative sheets (empty: `examples` annotated drawings drawn with `seed`);
    `pairs_csv`: the annotations shown (default: the pairs file of the models' evaluations);
    `review_model`: the model whose closest unannotated pairs are listed for review (default:
    the best by MAP); `reference_model`: the model every other one is compared with, each
    metric's difference with a paired bootstrap 95 % interval over the drawings
    (`bootstrap_resamples` resamples drawn with `seed`; default: the first of `model_tags`)."""

    out: str = setting("drawmatch-out", help="output root")
    output: str | None = setting(None, help="report folder (null: out/report)")
    model_tags: tuple[str, ...] = setting(
        (), may_be_empty=True, help="models compared (empty: all)"
    )
    drawings: tuple[str, ...] = setting((), may_be_empty=True, help="drawings shown (empty: drawn)")
    pairs_csv: str | None = setting(None, help="annotations shown")
    examples: int = setting(6, ge=0, help="drawings drawn for the sheets")
    seed: int = setting(0, ge=0, help="seed of the drawn drawings and of the bootstrap")
    top_k: int = setting(10, ge=1, help="artworks per sheet row")
    samples_per_age_group: int = setting(6, ge=0, help="drawings shown per age group")
    top_countries: int = setting(30, ge=1, help="countries in the country table")
    review_candidates: int = setting(24, ge=0, help="unannotated pairs listed for review")
    review_model: str | None = setting(None, help="model of the review list (null: best MAP)")
    reference_model: str | None = setting(
        None, help="model the others are compared with (null: the first of model_tags)"
    )
    bootstrap_resamples: int = setting(
        2000, ge=100, le=100_000, help="resamples of the comparison's bootstrap intervals"
    )
    thumb_size: int = setting(220, ge=MIN_IMAGE_SIZE, le=1024, help="thumbnail side in px")


INDEX_FILE = "index.html"
JSON_FILE = "report.json"
TEXT_FILE = "tables.txt"


def choose_sheets(
    config: ReportConfig, catalogue: pd.DataFrame, tags: list[str], evaluations: list[Evaluation]
) -> SheetChoice:
    """What the qualitative sheets show, as configured."""
    pairs = _pairs_for_sheets(config, evaluations, catalogue)
    chosen, refused = choose_drawings(config, catalogue, pairs)
    review_model = config.review_model or _best_model(evaluations, tags)
    return SheetChoice(pairs, chosen, refused, review_model)


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


def _best_model(evaluations: list[Evaluation], tags: list[str]) -> str | None:
    """The model with the best MAP on its annotated pairs (no split set), else the first."""
    scored = [
        (e.metrics.get("MAP", -1.0), e.model_tag)
        for e in evaluations
        if e.model_tag in tags and not e.set
    ]
    if scored:
        return max(scored)[1]
    return tags[0] if tags else None


@dataclass
class ReportResult:
    """The index page's path and every number of the report (`report.json`)."""

    index: str
    data: dict[str, Any]


def run(config: ReportConfig) -> ReportResult:
    """Write the report of the outputs under `config.out`; returns the index page's path."""
    out = config.out
    catalogue = cat.read_catalogue(out)
    available = list_model_tags(out)
    unknown = [t for t in config.model_tags if t not in available]
    if unknown:
        raise ValueError(f"no embeddings for model(s) {unknown}; available: {available or 'none'}")
    tags = list(config.model_tags) or available
    if config.reference_model is not None and config.reference_model not in tags:
        raise ValueError(f"reference_model={config.reference_model} is not among the models {tags}")
    output = config.output or storage.join(out, "report")
    storage.makedirs(output)
    evaluations = read_evaluations(out)
    images = Images(out, output, catalogue, config.thumb_size)
    tables: list[Table] = []
    collection, collection_data = collection_section(
        catalogue,
        out,
        images,
        tables,
        top_countries=config.top_countries,
        samples_per_age_group=config.samples_per_age_group,
        seed=config.seed,
    )
    bootstrap = Bootstrap(config.reference_model, config.bootstrap_resamples, config.seed)
    models, model_data = comparison_section(
        out, catalogue, tags, evaluations, images, tables, bootstrap
    )
    sheets, sheet_data = sheets_section(
        out,
        catalogue,
        tags,
        choose_sheets(config, catalogue, tags, evaluations),
        images,
        tables,
        top_k=config.top_k,
        review_candidates=config.review_candidates,
    )
    files = {"json": JSON_FILE, "text": TEXT_FILE}
    page = render_page("drawmatch report", str(out), [collection, models, sheets], files)
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
        "full_images": sorted(images.full_written.values()),
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
