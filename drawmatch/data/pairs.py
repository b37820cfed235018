"""Annotated drawing-artwork pairs in the thesis format: `drawing_id, artwork_id, keep, parent_id`.

`keep` may be named `pair` (the thesis' own file); missing `keep` means true, missing `parent_id`
means empty. Pairs with keep=false are dropped on reading.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from drawmatch.core import storage

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class PairsError(ValueError):
    """A pairs file that cannot be used as it is."""


def _parse_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text == "" or text == "nan":
        return True
    if text in _FALSE:
        return False
    raise PairsError(f"{where}: keep value {value!r} is not true/false")


def read_pairs(path: str | Path, keep_only: bool = True) -> pd.DataFrame:
    """Pairs as a DataFrame with columns drawing_id, artwork_id, keep (bool), parent_id (str|None)."""
    df = storage.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    if "keep" not in df.columns and "pair" in df.columns:
        df = df.rename(columns={"pair": "keep"})
    missing = {"drawing_id", "artwork_id"} - set(df.columns)
    if missing:
        raise PairsError(f"{path}: missing column(s) {sorted(missing)}")
    if "keep" not in df.columns:
        df["keep"] = "true"
    if "parent_id" not in df.columns:
        df["parent_id"] = ""
    df["drawing_id"] = df["drawing_id"].str.strip()
    df["artwork_id"] = df["artwork_id"].str.strip()
    df["keep"] = [_parse_bool(v, f"{path} row {i + 2}") for i, v in enumerate(df["keep"])]
    df["parent_id"] = [p.strip() or None for p in df["parent_id"]]
    empty = (df["drawing_id"] == "") | (df["artwork_id"] == "")
    if empty.any():
        rows = [int(i) + 2 for i in df.index[empty][:5]]
        raise PairsError(f"{path}: empty drawing_id or artwork_id on row(s) {rows}")
    df = df[["drawing_id", "artwork_id", "keep", "parent_id"]]
    if keep_only:
        df = df[df["keep"]]
    return df.drop_duplicates(subset=["drawing_id", "artwork_id"]).reset_index(drop=True)


def check_known(pairs: pd.DataFrame, known_ids: set[str], where: str = "pairs") -> None:
    """Raise one PairsError listing every pair id that is not in `known_ids`."""
    unknown_d = sorted(set(pairs["drawing_id"]) - known_ids)
    unknown_a = sorted(set(pairs["artwork_id"]) - known_ids)
    if unknown_d or unknown_a:
        parts = []
        if unknown_d:
            parts.append(f"{len(unknown_d)} unknown drawing id(s): {', '.join(unknown_d[:20])}")
        if unknown_a:
            parts.append(f"{len(unknown_a)} unknown artwork id(s): {', '.join(unknown_a[:20])}")
        raise PairsError(f"{where} names ids not in the catalogue: " + "; ".join(parts))


def check_collections(
    pairs: pd.DataFrame, collection_of: dict[str, str], where: str = "pairs"
) -> None:
    """Raise one PairsError listing every `drawing_id` that is an artwork and every `artwork_id`
    that is a drawing in the catalogue (`collection_of`: id -> `drawing` | `artwork`); ids the
    catalogue lacks are `check_known`'s business."""
    wrong_d = sorted(
        {d for d in pairs["drawing_id"] if collection_of.get(d, "drawing") != "drawing"}
    )
    wrong_a = sorted(
        {a for a in pairs["artwork_id"] if collection_of.get(a, "artwork") != "artwork"}
    )
    if wrong_d or wrong_a:
        parts = []
        if wrong_d:
            parts.append(
                f"{len(wrong_d)} drawing_id(s) that are artworks: {', '.join(wrong_d[:20])}"
            )
        if wrong_a:
            parts.append(
                f"{len(wrong_a)} artwork_id(s) that are drawings: {', '.join(wrong_a[:20])}"
            )
        raise PairsError(
            f"{where} puts ids in the wrong column: " + "; ".join(parts) + " (an id names one "
            "image; a drawing and an artwork with the same file name are an ingest error: rename "
            "one of the files and ingest again)"
        )


NEGATIVE_COLUMNS = ["drawing_id", "artwork_id"]


def read_negatives(path: str | Path, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Expert non-matches (`negatives.csv` of `drawmatch export`, or a fold's `negatives_XX.csv`):
    columns drawing_id, artwork_id and `columns` (e.g. `set`), ids stripped, repeated rows
    dropped; other columns are ignored. A missing column or an empty id is one PairsError."""
    df = storage.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    wanted = [*NEGATIVE_COLUMNS, *columns]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise PairsError(f"{path}: missing column(s) {missing}")
    df = df[wanted].apply(lambda column: column.str.strip())
    empty = (df["drawing_id"] == "") | (df["artwork_id"] == "")
    if empty.any():
        rows = [int(i) + 2 for i in df.index[empty][:5]]
        raise PairsError(f"{path}: empty drawing_id or artwork_id on row(s) {rows}")
    return df.drop_duplicates(subset=NEGATIVE_COLUMNS).reset_index(drop=True)
