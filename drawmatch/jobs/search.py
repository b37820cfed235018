"""The search job: top-k artworks for one drawing id or image file, or for every drawing (batch).

Search uses the index and the embeddings of one model and refuses to mix models: the index, the
stored embeddings and a freshly embedded query image must carry the same weights hash. It refuses
a stale index too (an artwork removed, added or re-embedded since the index was built).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, section, setting
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag, read_embeddings
from drawmatch.data.imaj import is_verso_name
from drawmatch.models.embedder import embed_image_file
from drawmatch.retrieval.artwork_index import ArtworkIndex
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


RESULT_COLUMNS = ["rank", "artwork_id", "distance", "artist", "title"]


def allowed_artworks(catalogue: pd.DataFrame, where: dict[str, str]) -> list[str] | None:
    """Artwork ids whose metadata equal every `column: value` of `where` (None: no filter)."""
    if not where:
        return None
    rows = catalogue[catalogue["collection"] == "artwork"]
    for column, value in where.items():
        if column not in rows.columns:
            raise ValueError(f"cannot filter on {column!r}: the catalogue has no such column")
        rows = rows[rows[column].astype(str) == str(value)]
    return rows["id"].tolist()


def _results(ids: list[str], distances: np.ndarray, catalogue: pd.DataFrame) -> pd.DataFrame:
    meta = catalogue.set_index("id")
    rows = []
    for rank, (artwork, dist) in enumerate(zip(ids, distances), start=1):
        artist = meta.at[artwork, "artist"] if "artist" in meta.columns else None
        title = meta.at[artwork, "title"] if "title" in meta.columns else None
        rows.append((rank, artwork, float(dist), artist, title))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def search_one(config: SearchConfig, catalogue: pd.DataFrame, tag: str) -> pd.DataFrame:
    if not config.query:
        raise ValueError("search needs query=<drawing id or image file>, or batch=true")
    query = config.query
    if is_verso_name(query):  # before anything is read or embedded
        raise ValueError(
            f"{query!r}: the name states a verso (private data of a minor): refused as a query; "
            "rename the file if it is not a verso"
        )
    index = ArtworkIndex(config.out, tag)
    known = catalogue[catalogue["id"] == query]
    if len(known):
        if bool(known["verso"].fillna(False).iloc[0]):
            raise ValueError(f"{query} is a verso (private data of a minor): not searchable")
        _ids, emb = read_embeddings(config.out, tag, ids=[query])
    elif storage.is_file(query):
        emb = embed_image_file(query, config.out, tag)
    else:
        raise ValueError(f"{query!r} is neither a catalogue id nor an image file")
    allowed = allowed_artworks(catalogue, dict(config.where))
    ids, dist = index.search(emb, config.k, allowed=allowed)
    return _results(ids[0], dist[0], catalogue)


def search_batch(config: SearchConfig, catalogue: pd.DataFrame, tag: str) -> str:
    """Top-k artworks for every usable original drawing, searched and written to one Parquet file
    in chunks of 1024 drawings."""
    index = ArtworkIndex(config.out, tag, catalogue)
    wanted = set(cat.query_ids(catalogue))
    allowed = allowed_artworks(catalogue, dict(config.where))
    target = config.batch_output or storage.join(config.out, "candidates", tag, "topk.parquet")
    buffer = pa.BufferOutputStream()
    writer: pq.ParquetWriter | None = None
    meta = catalogue.set_index("id")
    n_queries = 0
    ids, emb = read_embeddings(config.out, tag)
    chunk = 1024
    for start in range(0, len(ids), chunk):
        part_ids = ids[start : start + chunk]
        keep = [i for i, q in enumerate(part_ids) if q in wanted]
        if not keep:
            continue
        top, dist = index.search(emb[start : start + chunk][keep], config.k, allowed=allowed)
        rows = []
        for qi, q in enumerate(part_ids[i] for i in keep):
            for rank, (a, d) in enumerate(zip(top[qi], dist[qi]), start=1):
                rows.append((q, rank, a, float(d)))
        frame = pd.DataFrame(rows, columns=["drawing_id", "rank", "artwork_id", "distance"])
        for column in ("artist", "title"):
            if column in meta.columns:
                frame[column] = meta.loc[frame["artwork_id"], column].to_numpy()
        frame["model"] = tag
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(buffer, table.schema)
        writer.write_table(table)
        n_queries += len(keep)
    if writer is None:
        raise ValueError(f"no drawing has a {tag} embedding: run `drawmatch embed` first")
    writer.close()
    storage.write_bytes(target, buffer.getvalue().to_pybytes())
    print(f"search: top-{config.k} artworks for {n_queries} drawings written to {target}")
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
    if config.mode != "global":  # region modes (partial copies): drawmatch.retrieval.region_search
        from drawmatch.retrieval.region_search import search_mode

        result_or_path = search_mode(config, catalogue, tag)
        if isinstance(result_or_path, str):
            save_config(config, storage.join(storage.parent(result_or_path), "search_config.yaml"))
        elif config.sheet:
            write_sheet(config, catalogue, tag, result_or_path)
        return result_or_path
    if config.batch:
        target = search_batch(config, catalogue, tag)
        save_config(config, storage.join(storage.parent(target), "search_config.yaml"))
        return target
    result = search_one(config, catalogue, tag)
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(f"top-{config.k} artworks for {config.query} ({tag}):")
        print(result.to_string(index=False))
    if config.sheet:
        write_sheet(config, catalogue, tag, result)
    return result
