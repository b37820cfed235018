"""Index folders kept as a base and delta segments, so that an update writes what changed.

An index folder (`index/<model_tag>/`, `index/<model_tag>/regions/`) holds `index.json`: the
provenance and, under `files`, the manifest of what makes up the index:

- `base`: `<base>.faiss` (a FAISS index), `<base>.parquet` (its map: one row per vector) and, for
  every kind but HNSW, `<base>.trained.faiss` (the same index emptied: its trained quantisers);
- `segments`: `<segment>.faiss` and `<segment>.parquet` per update: the vectors it added, in an
  index made from the base's trained quantisers, and their map rows;
- `removed`: `<removed>.parquet`, the rows that updates took out (column `row`, numbered over the
  base's rows then each segment's, in order); null when none.
- `generation`: the counter that names new files (`base-0003`, `segment-0004`, `removed-0004`).

A reader (`load`) merges the segments into the base in memory (the vectors appended to a flat
index, the lists of an IVF index merged with `merge_from`) and takes the removed rows out, so it
holds what the base's trained index filled with the kept vectors and then the added ones holds:
for a flat index exactly what a full rebuild holds. An update (`save_update`) writes a new segment
and removed list, then the manifest; no file is ever rewritten in place, and `index.json` is
written whole through a rename, so an update killed before its manifest leaves the previous index
as it was. Files the manifest no longer names are deleted after it is written.

An update compacts instead (the merged index written as a new base) once the segments would exceed
`MAX_SEGMENTS` or the removed rows `MAX_REMOVED_SHARE` of all rows. An HNSW graph cannot be merged:
it is updated as before, the new vectors added to the loaded graph and the whole index written as
a new base. A folder written before segments (`index.faiss` and its map, no `files` in
`index.json`) is read as a base without segments; its first update writes a new base.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.retrieval.faiss_index import remove_positions

INFO_FILE = "index.json"
LEGACY_INDEX_FILE = "index.faiss"
MAX_SEGMENTS = 8  # segments an index keeps before an update compacts them into a new base
MAX_REMOVED_SHARE = 0.2  # share of removed rows past which an update compacts
PREFIXES = ("base-", "segment-", "removed-")
SAID = {  # what an update wrote (`save_update`), as the jobs say it
    "segment": "written as a segment",
    "removed": "removed rows listed",
    "unchanged": "nothing to write",
    "compacted": "compacted into a new base",
}


def read_info(directory: str) -> dict[str, Any] | None:
    """The folder's `index.json` (provenance and manifest); None where there is none."""
    path = storage.join(directory, INFO_FILE)
    if not storage.exists(path):
        return None
    info: dict[str, Any] = json.loads(storage.read_text(path))
    return info


def files_of(info: dict[str, Any]) -> dict[str, Any]:
    """The manifest of `info`; an index of an older version is one base under the old names."""
    return info.get("files") or {"generation": 0, "base": None, "segments": [], "removed": None}


def _index_path(directory: str, name: str | None) -> str:
    return storage.join(directory, LEGACY_INDEX_FILE if name is None else f"{name}.faiss")


def _map_path(directory: str, name: str | None, map_file: str) -> str:
    return storage.join(directory, map_file if name is None else f"{name}.parquet")


def _read_index(path: str) -> Any:
    import faiss

    data = storage.read_bytes(path)
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def _removed_rows(directory: str, files: dict[str, Any]) -> np.ndarray:
    if not files["removed"]:
        return np.zeros(0, dtype=np.int64)
    path = storage.join(directory, f"{files['removed']}.parquet")
    return storage.read_parquet(path).column("row").to_numpy().astype(np.int64)


def read_maps(
    directory: str, info: dict[str, Any], map_file: str, columns: list[str] | None = None
) -> tuple[pa.Table, np.ndarray]:
    """The live rows of the map (base then segments, removed rows out) with `columns` (all
    when None), and each one's row number over base and segments. No vectors are read."""
    files = files_of(info)
    names = [files["base"], *files["segments"]]
    tables = [storage.read_parquet(_map_path(directory, n, map_file), columns) for n in names]
    keep_columns = [c for c in tables[0].column_names if c != "position"]
    table = pa.concat_tables([t.select(keep_columns) for t in tables])
    live = np.ones(len(table), dtype=bool)
    live[_removed_rows(directory, files)] = False
    return table.filter(pa.array(live)), np.flatnonzero(live).astype(np.int64)


def _load_once(directory: str, map_file: str) -> tuple[Any, pa.Table, dict[str, Any]]:
    import faiss

    info = read_info(directory)
    if info is None:
        raise FileNotFoundError(f"no index in {directory}")
    files = files_of(info)
    index = _read_index(_index_path(directory, files["base"]))
    for name in files["segments"]:
        segment = _read_index(_index_path(directory, name))
        index.merge_from(segment, index.ntotal if isinstance(index, faiss.IndexIVF) else 0)
    table, _rows = read_maps(directory, info, map_file)
    removed = _removed_rows(directory, files)
    remove_positions(index, removed)
    return index, table, info


def load(directory: str, map_file: str) -> tuple[Any, pa.Table, dict[str, Any]]:
    """The index of `directory` as one in-memory FAISS index (segments merged, removed rows out),
    its map (one row per vector, in order) and its `index.json`. A file deleted by an update that
    finished while this was reading: the manifest is read again, once."""
    try:
        return _load_once(directory, map_file)
    except FileNotFoundError:
        return _load_once(directory, map_file)


def _trained(index: Any) -> Any:
    """`index` without its vectors (its trained quantisers); None for an HNSW graph."""
    import faiss

    if isinstance(index, faiss.IndexHNSW):
        return None
    if isinstance(index, faiss.IndexFlat):
        return faiss.IndexFlat(index.d, index.metric_type)
    empty = faiss.clone_index(index)
    empty.reset()
    return empty


def _write_index(path: str, index: Any) -> None:
    import faiss

    storage.write_bytes(path, faiss.serialize_index(index).tobytes())


def _swap_manifest(directory: str, info: dict[str, Any], files: dict[str, Any]) -> None:
    """Write `index.json` with `files` (whole, through a rename), then delete what it no longer
    names."""
    storage.write_bytes(
        storage.join(directory, INFO_FILE), json.dumps({**info, "files": files}, indent=2).encode()
    )
    named = {files["base"], files["removed"], *files["segments"]}
    for path in storage.list_files(directory):
        name = storage.name(path)
        stem = name.split(".", 1)[0]
        if (name.startswith(PREFIXES) and stem not in named) or name == LEGACY_INDEX_FILE:
            storage.remove(path)


def save_base(
    directory: str, index: Any, table: pa.Table, info: dict[str, Any], map_file: str
) -> None:
    """Write `index` and its map `table` as a new base without segments, then the manifest; the
    files of the index before (and an older version's `map_file`) are then deleted."""
    storage.makedirs(directory)
    old = read_info(directory)
    generation = files_of(old)["generation"] + 1 if old else 1
    name = f"base-{generation:04d}"
    _write_index(_index_path(directory, name), index)
    storage.write_parquet(table, _map_path(directory, name, map_file))
    trained = _trained(index)
    if trained is not None:
        _write_index(storage.join(directory, f"{name}.trained.faiss"), trained)
    files: dict[str, Any] = {
        "generation": generation,
        "base": name,
        "segments": [],
        "removed": None,
    }
    _swap_manifest(directory, info, files)
    if storage.exists(storage.join(directory, map_file)):
        storage.remove(storage.join(directory, map_file))


@dataclass(frozen=True)
class Saved:
    """A saved index folder's manifest and live map, without its vectors: what an update plans
    with. `frame` has the map's columns (`id` and `sha256` at least) and `row` (row number over
    base and segments); `rows` counts every row, the removed ones included."""

    directory: str
    map_file: str
    info: dict[str, Any]
    frame: pd.DataFrame
    rows: int


def read_saved(directory: str, map_file: str) -> Saved | None:
    """The saved index of `directory` as `Saved`; None where there is none, or its map has no
    content hashes, or (written before segments, so not through a manifest) its vectors and map
    differ: an older version's, which must be rebuilt."""
    info = read_info(directory)
    if info is None:
        return None
    table, rows = read_maps(directory, info, map_file)
    if "sha256" not in table.column_names:
        return None
    legacy = files_of(info)["base"] is None
    if legacy and _read_index(_index_path(directory, None)).ntotal != len(table):
        return None
    frame = pd.DataFrame(
        {"id": table.column("id").to_pylist(), "sha256": table.column("sha256").to_pylist()}
    )
    removed = len(_removed_rows(directory, files_of(info)))
    return Saved(directory, map_file, info, frame.assign(row=rows), len(frame) + removed)


def save_update(
    saved: Saved, remove: np.ndarray, emb: np.ndarray, table: pa.Table, info: dict[str, Any]
) -> str:
    """Take the rows at positions `remove` of `saved.frame` out and add the vectors `emb` with
    their map rows `table`: as a new segment and removed list where the index takes segments,
    else by writing the merged index as a new base (see the module's docstring). Returns which
    (a key of `SAID`)."""
    files = files_of(saved.info)
    removed_before = _removed_rows(saved.directory, files)
    removed = np.union1d(removed_before, saved.frame["row"].to_numpy()[remove])
    rows = saved.rows + len(emb)
    trained = f"{files['base']}.trained.faiss"
    if (
        files["base"] is None
        or not storage.exists(storage.join(saved.directory, trained))
        or len(files["segments"]) + (1 if len(emb) else 0) > MAX_SEGMENTS
        or len(removed) > MAX_REMOVED_SHARE * rows
    ):
        index, old_table, _info = load(saved.directory, saved.map_file)
        remove_positions(index, remove)
        keep = np.ones(len(old_table), dtype=bool)
        keep[remove] = False
        if len(emb):
            index.add(np.ascontiguousarray(emb, dtype=np.float32))
        merged = pa.concat_tables([old_table.filter(pa.array(keep)), table.cast(old_table.schema)])
        save_base(saved.directory, index, merged, info, saved.map_file)
        return "compacted"
    generation = files["generation"] + 1
    segments = list(files["segments"])
    if len(emb):
        segment = _read_index(storage.join(saved.directory, trained))
        segment.add(np.ascontiguousarray(emb, dtype=np.float32))
        name = f"segment-{generation:04d}"
        _write_index(_index_path(saved.directory, name), segment)
        storage.write_parquet(table, _map_path(saved.directory, name, saved.map_file))
        segments.append(name)
    removed_name = files["removed"]
    if len(removed) > len(removed_before):
        removed_name = f"removed-{generation:04d}"
        path = storage.join(saved.directory, f"{removed_name}.parquet")
        storage.write_parquet(pa.table({"row": pa.array(removed, pa.int64())}), path)
    new_files = {**files, "generation": generation, "segments": segments, "removed": removed_name}
    _swap_manifest(saved.directory, info, new_files)
    if len(emb):
        return "segment"
    return "removed" if removed_name != files["removed"] else "unchanged"
