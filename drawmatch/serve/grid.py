"""The grids of the workbench, built once at start. Drawings: each drawing's filter codes and
display text, the pre-sorted orders (numpy), the style copies of each original; a selection is
a few vectorised masks over these arrays. Artworks: id, title and artist, in the order they are
listed, with their text folded for a search that ignores case and accents."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np
import pandas as pd

GRID_FILTERS = ("year", "age_group", "country")
SORTS = {
    "id": ["id"],
    "year": ["year", "id"],
    "country": ["country", "id"],
    "age": ["age_group", "id"],
}
AGE_ORDER = ["3-5", "6-9", "10-13", "14-17", "18-25", "MS"]


def display_text(value: Any) -> str:
    """A catalogue value as people read it: empty when unknown, whole numbers without `.0`."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _country(df: pd.DataFrame) -> pd.Series:
    if "country_iso3" in df.columns:
        iso = df["country_iso3"].astype("string")
        code = df["country_code"].astype("string") if "country_code" in df.columns else iso
        return iso.fillna(code)
    if "country_code" in df.columns:
        return df["country_code"].astype("string")
    return pd.Series(pd.NA, index=df.index, dtype="string")


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(pd.NA, index=df.index, dtype="object")


def _age_rank(value: Any) -> int:
    return AGE_ORDER.index(value) if isinstance(value, str) and value in AGE_ORDER else 99


class DrawingGrid:
    """The showable drawings as the grid lists them (`drawings`: their catalogue rows)."""

    def __init__(self, drawings: pd.DataFrame) -> None:
        self.frame = pd.DataFrame(
            {
                "id": drawings["id"].astype(str).to_numpy(),
                "year": pd.to_numeric(_column(drawings, "year"), errors="coerce").to_numpy(),
                "age_group": _column(drawings, "age_group").astype("string").to_numpy(),
                "country": _country(drawings).to_numpy(),
                "styled": drawings["parent_id"].notna().to_numpy(),
            }
        )
        self.styled = self.frame["styled"].to_numpy(dtype=bool)
        self.ids = self.frame["id"].to_numpy(dtype=object)
        self.row_of = {k: i for i, k in enumerate(self.ids)}
        copies = drawings[drawings["parent_id"].notna()]
        self.copies: dict[str, list[tuple[str, str]]] = {}
        for key, parent, style in zip(copies["id"], copies["parent_id"], copies["style"]):
            self.copies.setdefault(str(parent), []).append((str(key), display_text(style)))
        self.text: dict[str, np.ndarray] = {}
        self.codes: dict[str, np.ndarray] = {}
        self.code_of: dict[str, dict[str, int]] = {}
        self.values: dict[str, list[tuple[str, int]]] = {}
        for name in GRID_FILTERS:
            self._add_filter(name)
        self.orders = {sort: self._order(keys) for sort, keys in SORTS.items()}

    def __len__(self) -> int:
        return len(self.frame)

    def _add_filter(self, name: str) -> None:
        """The display text, codes and offered values (with counts) of one filter column."""
        column = self.frame[name]
        text = column.map(display_text) if name == "year" else column.fillna("").astype(str)
        self.text[name] = np.asarray(text.to_numpy())
        codes, uniques = pd.factorize(self.text[name], sort=True)
        self.codes[name] = codes.astype(np.int32)
        self.code_of[name] = {str(u): i for i, u in enumerate(uniques)}
        counts = np.bincount(codes, minlength=len(uniques))
        values = [(str(u), int(c)) for u, c in zip(uniques, counts) if u != ""]
        if name == "age_group":
            values.sort(key=lambda v: (_age_rank(v[0]), v))
        self.values[name] = values

    def _order(self, keys: list[str]) -> np.ndarray:
        """Grid rows sorted by `keys` (unknown values last)."""
        frame = self.frame[keys].copy()
        if "age_group" in keys:
            frame["age_group"] = frame["age_group"].map(_age_rank)
        columns: list[np.ndarray] = []
        for k in reversed(keys):
            if k in ("year", "age_group"):
                columns.append(frame[k].astype(float).fillna(np.inf).to_numpy())
            else:
                columns.append(frame[k].fillna("\uffff").astype(str).to_numpy())
        return np.lexsort(columns).astype(np.int64)

    def tile(self, key: str) -> dict[str, Any]:
        """What a grid tile shows of a drawing: id, year, country, age group, styled."""
        row = self.row_of[key]
        return {
            "id": key,
            "year": self.text["year"][row],
            "country": self.text["country"][row],
            "age": self.text["age_group"][row],
            "styled": bool(self.styled[row]),
        }

    def select(
        self,
        filters: dict[str, str],
        collection: str,
        states: dict[str, str] | None,
        state: str,
        query: str,
        sort: str,
    ) -> np.ndarray:
        """Grid row positions matching the filters, in the sort order."""
        mask = np.ones(len(self.frame), dtype=bool)
        for name, value in filters.items():
            if not value:
                continue
            code = self.code_of[name].get(value)
            if code is None:
                return np.zeros(0, dtype=np.int64)
            mask &= self.codes[name] == code
        if collection == "originals":
            mask &= ~self.styled
        elif collection == "styled":
            mask &= self.styled
        if state != "all" and states is not None:
            mask &= self._state_mask(states, state)
        if query:
            mask &= self.frame["id"].str.contains(query, case=False, regex=False).to_numpy()
        order = self.orders[sort]
        return order[mask[order]]

    def _state_mask(self, states: dict[str, str], state: str) -> np.ndarray:
        """The rows in annotation `state` (unannotated, annotated, match), from each annotated
        drawing's state."""
        marked = np.zeros(len(self.frame), dtype=bool)
        wanted = {"annotated": ("match", "annotated"), "match": ("match",)}.get(state, ())
        for drawing, drawing_state in states.items():
            row = self.row_of.get(drawing)
            if row is not None and (state == "unannotated" or drawing_state in wanted):
                marked[row] = True
        return ~marked if state == "unannotated" else marked


def folded(text: str) -> str:
    """Text as a search compares it: accents dropped (NFKD, combining marks removed), case
    folded, so that "Mone" finds "Monet" and "cezanne" finds "Cézanne"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def sort_text(text: str) -> str:
    """Text as a listing sorts it: folded, leading quotes and other signs ignored (“Fuji”
    apple sorts under F)."""
    text = folded(text)
    return text[next((i for i, c in enumerate(text) if c.isalnum()), len(text)) :]


class ArtworkGrid:
    """The showable artworks as the artworks grid lists them, by artist, then title, then id
    (unknown artists last, leading quotes ignored); `search` finds the artworks where every
    word of a query begins a word of the id, title or artist (a word starts after a space, a
    sign or an underscore), ignoring case and accents."""

    def __init__(self, artworks: pd.DataFrame) -> None:
        ids = artworks["id"].astype(str).tolist()
        titles = [display_text(v) for v in _column(artworks, "title")]
        artists = [display_text(v) for v in _column(artworks, "artist")]
        self.cards = {
            key: {"id": key, "title": title, "artist": artist}
            for key, title, artist in zip(ids, titles, artists)
        }
        order = sorted(
            range(len(ids)),
            key=lambda i: (artists[i] == "", sort_text(artists[i]), sort_text(titles[i]), ids[i]),
        )
        self.ids = [ids[i] for i in order]
        self.text = [folded(f"{ids[i]} {titles[i]} {artists[i]}") for i in order]

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str) -> list[str]:
        """The ids of the artworks where every word of `query` begins a word of the id, title
        or artist (literal text: no wildcards), in the grid's order; all for an empty query."""
        words = folded(query).split()
        if not words:
            return list(self.ids)
        # a word's start: not after a letter or digit (`[^\W_]`); the words themselves literal
        starts = [re.compile(r"(?<![^\W_])" + re.escape(w)) for w in words]
        return [k for k, t in zip(self.ids, self.text) if all(p.search(t) for p in starts)]
