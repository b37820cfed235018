"""What a search asks and shows, written once for every mode: the query (a catalogue drawing id, an
image file or an uploaded image) resolved to its embedding, the verso refusal, the `where=` metadata filter on the
artworks and the artist and title columns of a result.

A verso (the back of a drawing: private data of a minor) is never a query: neither its catalogue
id nor a file whose name states one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.images import ImageError
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import read_embeddings
from drawmatch.data.imaj import is_verso_name
from drawmatch.models.embedder import embed_image_file

ARTWORK_COLUMNS = ("artist", "title")
QUERY_DRAFT = 1024  # query images for local features are decoded at about this side


@dataclass(frozen=True)
class Query:
    """A resolved query: its name (the id or the file), its embedding (1, D) float32 and, for an
    image file, its path (a catalogue drawing's file is found through the catalogue's roots)."""

    name: str
    vector: np.ndarray
    file: str | None = None


def check_query(query: str | None) -> None:
    """Refuse a missing query, and one whose file name states a verso, before anything is read
    or embedded."""
    if not query:
        raise ValueError("search needs query=<drawing id or image file>, or batch=true")
    if is_verso_name(query):
        raise ValueError(
            f"{query!r}: the name states a verso (private data of a minor): refused as a query; "
            "rename the file if it is not a verso"
        )


def resolve_query(query: str | None, catalogue: pd.DataFrame, out: str | Path, tag: str) -> Query:
    """A catalogue id (its stored embedding; a verso is refused) or an image file (embedded with
    the model of `tag`, which refuses other weights) -> `Query` (`check_query` first)."""
    check_query(query)
    assert query is not None
    known = catalogue[catalogue["id"] == query]
    if len(known):
        if bool(known["verso"].fillna(False).iloc[0]):
            raise ValueError(f"{query} is a verso (private data of a minor): not searchable")
        _ids, emb = read_embeddings(out, tag, ids=[query])
        return Query(query, emb)
    if storage.is_file(query):
        try:
            return Query(query, embed_image_file(query, out, tag), file=query)
        except ImageError as exc:
            raise ValueError(f"query={query}: {exc}") from None
    if storage.is_dir(query):
        raise ValueError(f"query={query} is a folder: give one image file or a drawing id")
    raise ValueError(f"{query!r} is neither a catalogue id nor an image file")


def image_query(embedder: Any, image: Any, name: str = "upload") -> Query:
    """A decoded image (an upload: PIL) embedded with a loaded embedding model (`Embedder`)."""
    from drawmatch.models.preprocess import eval_resize

    return Query(name, embedder.embed_images(eval_resize(image, embedder.image_size)[None]))


def query_paths(catalogue: pd.DataFrame, out: str | Path, ids: list[str]) -> list[str]:
    """The image files of catalogue ids."""
    rows = catalogue.set_index("id").loc[ids].reset_index()
    return cat.resolve_paths(rows, cat.read_roots(out))


def query_images(paths: list[str]) -> list[Any]:
    """The query images (PIL) that verified search extracts local features from; a file that
    does not decode is a ValueError naming it."""
    from drawmatch.core.images import open_image

    images = []
    for path in paths:
        try:
            images.append(open_image(path, draft_size=QUERY_DRAFT))
        except ImageError as exc:
            raise ValueError(f"query image {path}: {exc}") from None
    return images


def readable_query_images(paths: list[str]) -> tuple[list[int], list[Any], list[str]]:
    """`query_images` of the files that decode: their positions in `paths` and images, and the
    reason of each file that does not (one per position left out, in order)."""
    from drawmatch.core.images import open_image

    kept, images, reasons = [], [], []
    for i, path in enumerate(paths):
        try:
            images.append(open_image(path, draft_size=QUERY_DRAFT))
            kept.append(i)
        except ImageError as exc:
            reasons.append(exc.reason)
    return kept, images, reasons


def query_image(query: Query, catalogue: pd.DataFrame, out: str | Path) -> Any:
    """One resolved query's image (PIL)."""
    return query_images([query.file or query_paths(catalogue, out, [query.name])[0]])[0]


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


def add_artwork_columns(
    frame: pd.DataFrame, catalogue: pd.DataFrame, keep_missing: bool = False
) -> pd.DataFrame:
    """Append each row's artwork `artist` and `title` (from `artwork_id`); a column the catalogue
    lacks is left out, or filled with None when `keep_missing`."""
    meta = catalogue.set_index("id")
    for column in ARTWORK_COLUMNS:
        if column in meta.columns:
            frame[column] = meta.loc[frame["artwork_id"], column].to_numpy()
        elif keep_missing:
            frame[column] = None
    return frame
