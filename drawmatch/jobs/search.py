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
from drawmatch.core.config import save_config, section, setting
from drawmatch.core.locks import job_lock
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import ERRORS_FILE, pick_model_tag, read_embeddings
from drawmatch.retrieval import batch_search as bs
from drawmatch.retrieval.calibration import (
    BACKGROUND_RANKS,
    Calibration,
    add_confidence,
    calibration_path,
    read_calibration,
)
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
from drawmatch.runtime.pipeline import PipelineConfig, record_errors, reserve_actor_pool, run_stages
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class SearchConfig(PipelineConfig):
    """The `k` nearest artworks of `query` (a drawing id or an image file), or of every drawing
    with `batch=true`; `where.<column>=value` keeps only matching artworks. A batch in the
    region modes runs on Ray: `num_actors` search actors of `cpus_per_actor` CPUs, `batch_size`
    drawings per actor call, parts of at most `rows_per_file` drawings, drawings decoded by tasks of
    `decode_cpus` CPUs (verified mode)."""

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
    nice: int | None = setting(
        0, ge=-20, le=19, help="batch: nice level of decode tasks and actors (null: Ray's 15)"
    )
    ray: RayConfig = section(RayConfig)


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


def batch_target(config: SearchConfig, tag: str) -> str:
    """The batch results file: `batch_output`, or `candidates/<tag>/topk.parquet` (global mode)
    or `candidates/<tag>/topk_<mode>.parquet`."""
    name = "topk.parquet" if config.mode == "global" else f"topk_{config.mode}.parquet"
    return config.batch_output or storage.join(config.out, "candidates", tag, name)


def search_batch(
    config: SearchConfig, catalogue: pd.DataFrame, tag: str, ranker: Ranker | None = None
) -> str:
    """Top-k artworks for every usable original drawing, written to one Parquet file
    (`batch_target`): in the driver in the global mode (or with a `ranker` given), as a Ray
    job in the region modes (`search_batch_ray`)."""
    if config.mode == "global" or ranker is not None:
        return search_batch_in_driver(config, catalogue, tag, ranker)
    return search_batch_ray(config, catalogue, tag)


def search_batch_in_driver(
    config: SearchConfig, catalogue: pd.DataFrame, tag: str, ranker: Ranker | None = None
) -> str:
    """Top-k artworks for every usable original drawing, ranked in chunks in this process and
    written to one Parquet file (`batch_target`). In verified mode a drawing whose file no
    longer decodes is left out, counted by reason."""
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
    target = batch_target(config, tag)
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


def search_batch_ray(config: SearchConfig, catalogue: pd.DataFrame, tag: str) -> str:
    """Batch search in a region mode as a Ray Data job (`drawmatch.retrieval.batch_search`):
    results written in parts beside the final file, a rerun searching only the drawings no part
    holds (a killed run resumes), drawings that do not decode counted by reason, not fatal."""
    out = storage.absolute(config.out)
    gallery = cat.gallery_ids(catalogue)
    info = bs.check_region_search(out, tag, gallery, config.mode)  # before Ray starts
    allowed = allowed_artworks(catalogue, dict(config.where))
    wanted = set(cat.query_ids(catalogue))
    ids, emb = read_embeddings(out, tag)
    keep = [i for i, q in enumerate(ids) if q in wanted]
    if not keep:
        raise ValueError(f"no drawing has a {tag} embedding: run `drawmatch embed` first")
    order = [ids[i] for i in keep]
    rows = catalogue.set_index("id").loc[order, ["root", "path", "sha256"]].reset_index()
    rows["embedding"] = list(emb[keep])
    sha = dict(zip(rows["id"], rows["sha256"]))
    target = batch_target(config, tag)
    directory = bs.parts_dir(target)
    calibration = read_calibration(out, tag, config.mode)
    # ranked deep enough for each drawing's background level; the confidence is added and the
    # ranking cut to k when the parts are assembled, so a new calibration needs no new search
    ranks = calibration.background_ranks if calibration else BACKGROUND_RANKS
    depth = max(config.k, ranks[1])
    settings = bs.settings_of(
        tag, config.mode, depth, dict(config.where), config.region, gallery, info
    )
    with job_lock(directory, "search"):
        removed = bs.prepare_parts(directory, settings)
        done = bs.searched(directory, sha)
        todo = rows[~rows["id"].isin(done)].reset_index(drop=True)
        label = f"search ({config.mode})"
        print(
            f"{label}: {len(rows)} drawings, {len(rows) - len(todo)} already searched, "
            f"{len(todo)} to do"
            + (f" ({removed} parts of other settings removed)" if removed else "")
        )
        errors: list[tuple[str, str]] = []
        if len(todo):
            reserve_actor_pool(config, f"{label} (num_actors x cpus_per_actor + decode_cpus)")
            work = {
                "out": out,
                "tag": tag,
                "gallery": gallery,
                "mode": config.mode,
                "params": config.region,
                "k": depth,
                "allowed": allowed,
            }
            sizes = (config.decode_batch_size, config.batch_size, config.rows_per_file)
            roots = cat.read_roots(out)
            stages = bs.batch_search_stages(
                config, work, roots, directory, sizes, config.max_image_pixels, config.nice
            )
            # blocks of decode_batch_size drawings: an actor returns a block's results when the
            # whole block is ranked, so small blocks keep the parts streaming and the actors even
            _n, errors = run_stages(todo, config.decode_batch_size, stages, label)
        failed = record_errors(directory, errors)
        if not errors and storage.exists(storage.join(directory, ERRORS_FILE)):
            storage.remove(storage.join(directory, ERRORS_FILE))  # of an earlier run
        frame = bs.assemble(directory, order, sha)
    frame = _with_confidence(frame, config.k, calibration)
    print(confidence_note(config, tag, calibration))
    return _write_batch(config, catalogue, tag, frame, (len(rows), len(todo), failed), target)


def _with_confidence(frame: pd.DataFrame, k: int, calibration: Calibration | None) -> pd.DataFrame:
    """The assembled parts (ranked deeper than k) with `confidence` and `likely_copy`, as
    `rank_with_confidence` gives them, cut to the top-k of each drawing."""
    if frame.empty:
        return frame
    frame = frame.assign(similarity=1.0 - frame["distance"])
    frame = add_confidence(frame, calibration, by="drawing_id")
    frame = frame[frame["rank"] <= k].drop(columns=["similarity", "background"])
    return frame.reset_index(drop=True)


def _write_batch(
    config: SearchConfig,
    catalogue: pd.DataFrame,
    tag: str,
    frame: pd.DataFrame,
    counts: tuple[int, int, dict[str, int]],
    target: str,
) -> str:
    """Write a Ray batch search's assembled results as the final file, with the columns of the
    in-driver search, and print what went in, what came out and what failed."""
    n_in, n_todo, failed = counts
    n_failed = sum(failed.values())
    skipped = f"; {n_failed} left out, image unreadable: {failed}" if failed else ""
    if frame.empty:
        raise ValueError(f"no drawing could be searched: {n_in} in{skipped}")
    frame = result_table(frame, config, catalogue, one=False)
    frame["model"] = tag
    storage.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), target)
    n_out = frame["drawing_id"].nunique()
    print(
        f"search ({config.mode}): {n_in} in, {n_todo - n_failed} searched now, "
        f"{n_in - n_todo} earlier, {n_failed} failed; top-{config.k} artworks for {n_out} "
        f"drawings written to {target}" + skipped
    )
    return target


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
