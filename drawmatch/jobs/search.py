"""The search job: top-k artworks for one drawing id or image file, or for every drawing (batch).

Search uses the index and the embeddings of one model and refuses to mix models: the index, the
stored embeddings and a freshly embedded query image must carry the same weights hash. It refuses
a stale index too (an artwork removed, added or re-embedded since the index was built).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, section, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag, read_embeddings
from drawmatch.retrieval.calibration import Calibration, calibration_path, read_calibration
from drawmatch.retrieval.queries import (
    add_artwork_columns,
    allowed_artworks,
    check_query,
    query_image,
    query_paths,
    readable_query_images,
    resolve_query,
)
from drawmatch.retrieval.ranker import Ranker, load_ranker, rank_with_confidence
from drawmatch.retrieval.region_search import SEARCH_MODES, RegionSearchParams


@dataclass(frozen=True)
class SearchConfig(Config):
    """The `k` nearest artworks of `query` (a drawing id or an image file), or of every drawing
    with `batch=true`; `where.<column>=value` keeps only matching artworks."""

    out: str = setting("drawmatch-out", help="output root")
    model_tag: str | None = setting(None, help="model searched (null: the only one)")
    query: str | None = setting(None, help="a drawing id or an image file")
    k: int = setting(10, ge=1, help="artworks returned")
    where: dict[str, str] = setting(factory=dict, help="artwork column values to keep")
    batch: bool = setting(False, help="search every drawing")
    batch_output: str | None = setting(None, help="batch: the results file")
    mode: str = setting("global", choices=SEARCH_MODES, help="how artworks are ranked")
    region: RegionSearchParams = section(RegionSearchParams)
    sheet: str | None = setting(
        None, help="a contact sheet (JPEG) of one query's result, boxes drawn"
    )


GLOBAL_CHUNK = 1024  # batch queries ranked at once; region modes score the whole gallery per query
REGION_CHUNK = 256


def result_table(
    frame: pd.DataFrame, config: SearchConfig, catalogue: pd.DataFrame, one: bool
) -> pd.DataFrame:
    """A ranker's table as search writes it: the artworks' artist and title, and the mode in
    region modes (`one`: a one-query table, which in the global mode always has artist and title:
    rank, artwork_id, distance, confidence, likely_copy, artist, title)."""
    frame = add_artwork_columns(frame, catalogue, keep_missing=one and config.mode == "global")
    if config.mode != "global":
        frame["mode"] = config.mode
    return frame


def search_one(
    config: SearchConfig, catalogue: pd.DataFrame, tag: str, ranker: Ranker | None = None
) -> pd.DataFrame:
    """Top-k artworks of one query (a catalogue drawing id or an image file)."""
    check_query(config.query)  # before anything is read or embedded
    if ranker is None:
        ranker = load_ranker(config.out, tag, catalogue, config.mode, config.region)
    query = resolve_query(config.query, catalogue, config.out, tag)
    allowed = allowed_artworks(catalogue, dict(config.where))
    images = [query_image(query, catalogue, config.out)] if config.mode == "verified" else None
    calibration = read_calibration(config.out, tag, config.mode)
    frame = rank_with_confidence(ranker, query.vector, config.k, calibration, allowed, images)
    frame = frame.drop(columns=["query"])
    return result_table(frame, config, catalogue, one=True)


def search_batch(
    config: SearchConfig, catalogue: pd.DataFrame, tag: str, ranker: Ranker | None = None
) -> str:
    """Top-k artworks for every usable original drawing, ranked in chunks and written to one
    Parquet file (`candidates/<tag>/topk.parquet`, or `topk_<mode>.parquet` in region modes).
    In verified mode a drawing whose file no longer decodes is left out, counted by reason."""
    if ranker is None:
        ranker = load_ranker(config.out, tag, catalogue, config.mode, config.region)
    wanted = set(cat.query_ids(catalogue))
    allowed = allowed_artworks(catalogue, dict(config.where))
    ids, emb = read_embeddings(config.out, tag)
    calibration = read_calibration(config.out, tag, config.mode)
    chunk = GLOBAL_CHUNK if config.mode == "global" else REGION_CHUNK
    tables, n_queries, failed = [], 0, Counter[str]()
    for start in range(0, len(ids), chunk):
        keep = [i for i, q in enumerate(ids[start : start + chunk]) if q in wanted]
        images = None
        if keep and config.mode == "verified":
            paths = query_paths(catalogue, config.out, [ids[start + i] for i in keep])
            readable, images, reasons = readable_query_images(paths)
            keep = [keep[i] for i in readable]
            failed.update(reasons)
        if not keep:
            continue
        names = [ids[start + i] for i in keep]
        vectors = emb[start : start + chunk][keep]
        frame = rank_with_confidence(ranker, vectors, config.k, calibration, allowed, images)
        frame.insert(0, "drawing_id", [names[q] for q in frame.pop("query")])
        frame = result_table(frame, config, catalogue, one=False)
        frame["model"] = tag
        tables.append(pa.Table.from_pandas(frame, preserve_index=False))
        n_queries += len(keep)
    skipped = (
        f"; {sum(failed.values())} left out, image unreadable: {dict(failed)}" if failed else ""
    )
    if not tables:
        raise ValueError(f"no drawing has a {tag} embedding: run `drawmatch embed` first{skipped}")
    name = "topk.parquet" if config.mode == "global" else f"topk_{config.mode}.parquet"
    target = config.batch_output or storage.join(config.out, "candidates", tag, name)
    storage.write_parquet(pa.concat_tables(tables, promote_options="default"), target)
    mode = "" if config.mode == "global" else f" ({config.mode})"
    print(
        f"search{mode}: top-{config.k} artworks for {n_queries} drawings written to {target}"
        + skipped
    )
    print(confidence_note(config, tag, calibration))
    return target


def confidence_note(config: SearchConfig, tag: str, calibration: Calibration | None) -> str:
    """What the `confidence` and `likely_copy` columns mean here, or why they are empty."""
    if calibration is None:
        return (
            f"confidence: none, no calibration for {tag} in mode {config.mode} (fit one with "
            f"`drawmatch evaluate pairs_csv=... mode={config.mode} calibrate=true`)"
        )
    return (
        "confidence: calibrated probability that the drawing copies the artwork "
        f"({calibration_path(config.out, tag, config.mode)}); likely_copy at >= "
        f"{calibration.threshold:.3f}"
    )


def write_sheet(
    config: SearchConfig, catalogue: pd.DataFrame, tag: str, result: pd.DataFrame
) -> str:
    """The contact sheet of one query's result (`sheet=`): the query, then its top-k artworks,
    each region-mode result framed where it matches (`drawmatch.reporting.sheets`)."""
    from drawmatch.reporting.sheets import contact_sheet, result_tiles

    assert config.query is not None and config.sheet is not None
    roots = cat.read_roots(config.out)
    known = catalogue[catalogue["id"] == config.query]
    query_path = cat.resolve_paths(known, roots)[0] if len(known) else config.query
    rows = catalogue.set_index("id").loc[result["artwork_id"]].reset_index()
    paths = dict(zip(rows["id"], cat.resolve_paths(rows, roots)))
    legend = [
        f"drawmatch search, model {tag}, mode {config.mode}: the query (blue frame), then its "
        f"top-{config.k} artworks, closest first (cosine distance; 0 = identical)."
    ]
    target = contact_sheet(
        [result_tiles(query_path, config.query, result, paths)], config.sheet, legend
    )
    print(f"contact sheet written to {target}")
    return target


def run(config: SearchConfig) -> pd.DataFrame | str:
    tag = pick_model_tag(config.out, config.model_tag)
    catalogue = cat.read_catalogue(config.out)
    if config.sheet and config.batch:
        raise ValueError("sheet= draws one query's result: give query=, not batch=true")
    if config.batch:
        target = search_batch(config, catalogue, tag)
        save_config(config, storage.join(storage.parent(target), "search_config.yaml"))
        return target
    result = search_one(config, catalogue, tag)
    shown, width, colwidth = result, 160, 60
    label = tag if config.mode == "global" else f"{tag}, mode={config.mode}"
    if config.mode != "global":
        shown, width, colwidth = result.drop(columns=["mode"]), 200, 40
    with pd.option_context("display.width", width, "display.max_colwidth", colwidth):
        print(f"top-{config.k} artworks for {config.query} ({label}):")
        print(shown.to_string(index=False))
    print(confidence_note(config, tag, read_calibration(config.out, tag, config.mode)))
    if config.sheet:
        write_sheet(config, catalogue, tag, result)
    return result
