"""The catalogue: one row per image (`catalogue.parquet` under the output root).

The selections every job shares live here, once: `usable` (embeddable and searchable rows),
`originals` (usable rows that are not style copies), `gallery_ids` (the searchable artworks) and
`query_ids` (the drawings that are searched).

Paths in the table are relative to a named root: `drawings`, `artworks` (the folders given to
ingest, recorded in `roots.json`) or `out` (the output root itself, e.g. styled copies).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from drawmatch.core import storage

CATALOGUE_FILE = "catalogue.parquet"
ROOTS_FILE = "roots.json"

# Columns every catalogue has, in order; ingest adds metadata columns after these.
CORE_COLUMNS = [
    "id",
    "collection",
    "root",
    "path",
    "sha256",
    "width",
    "height",
    "status",
    "error",
    "parent_id",
    "style",
    "parent_sha256",
    "duplicate_of",
    "verso",
]
DRAWING_COLUMNS = [
    "year",
    "age_group_raw",
    "age_group",
    "country_code",
    "country_iso3",
    "side",
    "quality",
    "scan_uid",
    "sub_drawing",
    "name_parsed",
]
ARTWORK_COLUMNS = ["artist", "title", "source"]
# name_flags: every deviation of a drawing's file name from the IMAJ convention, with its reason
EXTRA_COLUMNS = ["file_name", "name_flags"]
# every column ingest writes, in order, and their types (the rest are strings)
COLUMNS = CORE_COLUMNS + DRAWING_COLUMNS + ARTWORK_COLUMNS + EXTRA_COLUMNS
INT_COLUMNS = ("width", "height", "year")
BOOL_COLUMNS = ("verso",)
NULLABLE_BOOL_COLUMNS = ("name_parsed",)
STRING_COLUMNS = tuple(
    c for c in COLUMNS if c not in INT_COLUMNS + BOOL_COLUMNS + NULLABLE_BOOL_COLUMNS
)


def typed_frame(rows: list[dict]) -> pd.DataFrame:
    """Catalogue rows (dicts) as a frame of `COLUMNS` with their declared types (nullable ints,
    booleans and strings)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in INT_COLUMNS:
        df[col] = pd.array(df[col].tolist(), dtype="Int64")
    for col in BOOL_COLUMNS:
        df[col] = df[col].astype(bool)
    for col in NULLABLE_BOOL_COLUMNS:
        df[col] = pd.array(df[col].tolist(), dtype="boolean")
    for col in STRING_COLUMNS:
        df[col] = pd.array(df[col].tolist(), dtype="string")
    return df


def catalogue_path(out: str | Path) -> str:
    return storage.join(out, CATALOGUE_FILE)


def read_catalogue(out: str | Path) -> pd.DataFrame:
    path = catalogue_path(out)
    if not storage.exists(path):
        raise FileNotFoundError(f"no catalogue at {path}: run `drawmatch ingest` first")
    return storage.read_parquet(path).to_pandas()


def write_catalogue(df: pd.DataFrame, out: str | Path) -> str:
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].head(5).tolist()
        raise ValueError(f"catalogue ids must be unique; repeated: {dup}")
    path = catalogue_path(out)
    storage.write_parquet(
        pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), path
    )
    return path


def write_roots(out: str | Path, roots: dict[str, str]) -> None:
    data = {k: storage.absolute(v) for k, v in roots.items() if v is not None}
    storage.write_bytes(storage.join(out, ROOTS_FILE), json.dumps(data, indent=2).encode())


def read_roots(out: str | Path) -> dict[str, str]:
    path = storage.join(out, ROOTS_FILE)
    roots = json.loads(storage.read_text(path)) if storage.exists(path) else {}
    roots["out"] = storage.absolute(out)
    return dict(roots)


def resolve_paths(df: pd.DataFrame, roots: dict[str, str]) -> list[str]:
    """Absolute file paths (or URIs) of catalogue rows (columns `root`, `path`)."""
    missing = sorted(set(df["root"]) - set(roots))
    if missing:
        raise ValueError(f"catalogue names root(s) {missing} that roots.json does not define")
    return [storage.join(roots[r], p) for r, p in zip(df["root"], df["path"])]


def usable(df: pd.DataFrame) -> pd.Series:
    """Rows that can be embedded and searched: status ok and not a verso. Content duplicates
    (`duplicate_of`) stay usable: they are flagged for experts, never silently merged."""
    return (df["status"] == "ok") & ~df["verso"].fillna(False).astype(bool)


def is_original(df: pd.DataFrame) -> pd.Series:
    """Rows that are not style copies: no `parent_id`, and no style other than `original` (a
    collection's own styled copy whose parent is not catalogued has a style but no parent)."""
    style = df["style"].astype(object).where(df["style"].notna(), "original")
    return df["parent_id"].isna() & (style == "original")


def originals(df: pd.DataFrame) -> pd.Series:
    """Usable rows that are originals, not style copies."""
    return usable(df) & is_original(df)


def gallery_ids(df: pd.DataFrame) -> list[str]:
    """The searchable artworks: usable originals of the artwork collection, catalogue order."""
    return df.loc[originals(df) & (df["collection"] == "artwork"), "id"].tolist()


def query_ids(df: pd.DataFrame) -> list[str]:
    """The drawings that are searched: usable originals of the drawing collection, catalogue order."""
    return df.loc[originals(df) & (df["collection"] == "drawing"), "id"].tolist()
