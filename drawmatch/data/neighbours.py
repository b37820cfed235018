"""Neighbour tables of one model under `similar/<model_tag>/` (written by the `similar` job, read
by the workbench):

- `drawings.parquet`: `drawing_id, rank, similar_id, distance`: for each searchable drawing its
  closest other drawings (rank 0-based in the file, 1-based where people read it);
- `artworks.parquet`: `artwork_id, rank, drawing_id, distance`: for each artwork the drawings
  closest to it.

The batch search's `candidates/<model_tag>/topk.parquet` (`drawing_id, rank, artwork_id, distance,
artist, title, model`) is read through `candidates_path` too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from drawmatch.core import storage

SIMILAR_DIR = "similar"
DRAWINGS_FILE = "drawings.parquet"
ARTWORKS_FILE = "artworks.parquet"


def similar_dir(out: str | Path, tag: str) -> str:
    return storage.join(out, SIMILAR_DIR, tag)


def candidates_path(out: str | Path, tag: str) -> str:
    return storage.join(out, "candidates", tag, "topk.parquet")


def read_table(path: str) -> pd.DataFrame | None:
    """A neighbour or candidates table, or None if it has not been written."""
    if not storage.exists(path):
        return None
    return storage.read_parquet(path).to_pandas()
