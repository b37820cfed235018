"""Collection insights: what a drawings collection holds, from the catalogue and ingest's summary.

Counts are of catalogued drawings: originals of the drawing collection (not style copies), versos
left out (a verso is not a drawing, and it carries personal data of minors), unreadable files
included (they are still drawings of the collection; ingest's error counts say how many).
Unknown values are counted as `unknown`, never guessed. Used by the report job and the notebooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data.imaj import AGE_GROUPS

UNKNOWN = "unknown"
SUMMARY_FILE = "ingest_summary.json"


def is_verso(df: pd.DataFrame) -> pd.Series:
    """Rows that are versos (never shown); a catalogue without the column has none."""
    if "verso" not in df:
        return pd.Series(False, index=df.index)
    return df["verso"].fillna(False).astype(bool)


def drawings(df: pd.DataFrame) -> pd.DataFrame:
    """Catalogued drawings: originals of the drawing collection, versos left out (any status)."""
    keep = (df["collection"] == "drawing") & df["parent_id"].isna() & ~is_verso(df)
    return df[keep]


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """A metadata column as strings with `unknown` for nulls (all unknown if it is absent)."""
    if name not in df:
        return pd.Series(UNKNOWN, index=df.index, dtype=object)
    values = df[name].astype(object)
    out = values.where(values.notna(), UNKNOWN).map(str)
    return out.replace({"": UNKNOWN, "<NA>": UNKNOWN})


def _year_order(values: list[str]) -> list[str]:
    def key(v: str) -> tuple[int, float, str]:
        if v == UNKNOWN:
            return (2, 0.0, v)
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(values, key=key)


def _age_order(values: list[str]) -> list[str]:
    known = [a for a in AGE_GROUPS if a in values]
    other = sorted(v for v in values if v not in AGE_GROUPS and v != UNKNOWN)
    return known + other + ([UNKNOWN] if UNKNOWN in values else [])


def counts(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Drawings per value of `column` (`year`, `age_group`, `country_iso3`, ...): columns
    `value`, `drawings`, `share` (percent of all drawings); years and age groups in their natural
    order, anything else ranked by count (most first), `unknown` last."""
    values = _column(drawings(df), column)
    table = values.value_counts().rename_axis("value").reset_index(name="drawings")
    if column == "year":
        order = _year_order(table["value"].tolist())
    elif column == "age_group":
        order = _age_order(table["value"].tolist())
    else:
        table = table.sort_values(["drawings", "value"], ascending=[False, True], kind="stable")
        order = [v for v in table["value"] if v != UNKNOWN] + (
            [UNKNOWN] if UNKNOWN in set(table["value"]) else []
        )
    table = table.set_index("value").loc[order].reset_index()
    total = int(table["drawings"].sum())
    table["share"] = 100.0 * table["drawings"] / total if total else 0.0
    return table


def year_age_table(df: pd.DataFrame) -> pd.DataFrame:
    """Drawings per year (rows) and age group (columns), with totals (thesis table A.1): the
    index holds the years then `total`, the columns the age groups then `total`."""
    d = drawings(df)
    years, ages = _column(d, "year"), _column(d, "age_group")
    table = pd.crosstab(years, ages)
    columns = _age_order(table.columns.tolist())
    if set(columns) - {UNKNOWN}:  # every standard group shown: an empty one is a finding
        columns = _age_order(sorted(set(columns) | set(AGE_GROUPS)))
    table = table.reindex(index=_year_order(table.index.tolist()), columns=columns, fill_value=0)
    table = table.astype(int)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name, table.columns.name = "year", "age group"
    return table


def sample_drawings(df: pd.DataFrame, per_group: int, seed: int = 0) -> dict[str, list[str]]:
    """A seeded sample of up to `per_group` drawing ids per age group (`unknown` included):
    usable originals only (readable, not style copies, never versos)."""
    d = df[cat.originals(df) & (df["collection"] == "drawing")]
    groups = _column(d, "age_group")
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {}
    for group in _age_order(sorted(set(groups))):
        ids = sorted(d.loc[groups == group, "id"].tolist())
        if len(ids) > per_group:
            ids = sorted(rng.choice(ids, size=per_group, replace=False).tolist())
        out[group] = ids
    return out


def read_ingest_summary(out: str | Path) -> dict[str, Any] | None:
    """Ingest's `ingest_summary.json`, or None where ingest did not write one."""
    path = storage.join(out, SUMMARY_FILE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else None


def ingest_counts(summary: dict[str, Any]) -> pd.DataFrame:
    """Ingest's parse and error counts as `item`, `count` rows: files, ok, errors by reason,
    versos, unparsed names, non-standard age groups, unknown country codes, duplicates."""
    rows: list[tuple[str, int]] = [
        ("files catalogued", int(summary.get("rows", 0))),
        ("readable (status ok)", int(summary.get("ok", 0))),
        ("in error", int(summary.get("errors", 0))),
    ]
    for reason, n in summary.get("errors_by_reason", {}).items():
        rows.append((f"  error: {reason}", int(n)))
    rows += [
        ("versos (catalogued, never shown)", int(summary.get("versos", 0))),
        ("drawing names not in the IMAJ convention", int(summary.get("unparsed_names", 0))),
    ]
    for raw, n in summary.get("non_standard_age_groups", {}).items():
        rows.append((f"  non-standard age group {raw}", int(n)))
    for code, n in summary.get("unknown_country_codes", {}).items():
        rows.append((f"  country code without ISO 3166 code: {code}", int(n)))
    rows += [
        ("repeated ids", int(summary.get("duplicate_ids", 0))),
        ("files with the same content as another", int(summary.get("duplicate_content", 0))),
    ]
    return pd.DataFrame(rows, columns=["item", "count"])


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Files flagged as content duplicates (`duplicate_of`), versos on either side left out:
    columns `id`, `duplicate_of`, `collection`."""
    if "duplicate_of" not in df:
        return pd.DataFrame(columns=["id", "duplicate_of", "collection"])
    hidden = set(df.loc[is_verso(df), "id"])
    d = df[df["duplicate_of"].notna() & ~df["id"].isin(hidden) & ~df["duplicate_of"].isin(hidden)]
    return d[["id", "duplicate_of", "collection"]].reset_index(drop=True)


def country_names(codes: list[str]) -> dict[str, str]:
    """ISO 3166 alpha-3 code -> country name (the code itself where pycountry does not know it)."""
    import pycountry

    names = {}
    for code in codes:
        country = pycountry.countries.get(alpha_3=code) if len(code) == 3 else None
        names[code] = str(getattr(country, "name", code)) if country is not None else code
    return names


def sample_thumbnails(
    out: str | Path, df: pd.DataFrame, per_group: int, seed: int = 0, size: int = 160
) -> dict[str, list[tuple[str, Any]]]:
    """`sample_drawings` with their thumbnails: age group -> (id, PIL image) pairs."""
    from drawmatch.reporting.sheets import thumbnail

    paths = dict(zip(df["id"], cat.resolve_paths(df, cat.read_roots(out))))
    return {
        group: [(i, thumbnail(paths[i], size)) for i in ids]
        for group, ids in sample_drawings(df, per_group, seed).items()
    }
