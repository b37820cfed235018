"""Shared fixtures: one local Ray instance for the whole session, tiny image makers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAJ = SHARED / "imaj-metadata"


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with 2 CPUs shared by every test that needs Ray."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def imaj_dir() -> Path:
    """The real IMAJ metadata folder from shared data; tests using it skip where it is absent."""
    if not IMAJ.is_dir():
        pytest.skip("shared IMAJ metadata folder is not present")
    return IMAJ


def make_image(
    path: Path, size: tuple[int, int] = (64, 48), seed: int = 0, fmt: str = "JPEG"
) -> Path:
    """Write a small random-but-smooth RGB image (width, height) to `path`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def hand_catalogue(out: Path, files: dict[str, list[Path]]) -> object:
    """Write a catalogue and roots.json for image files without the ingest job.

    `files` maps a collection (`drawing` / `artwork`) to files that all lie in one folder.
    """
    import hashlib

    import pandas as pd

    from drawmatch import catalogue as cat

    rows = []
    roots = {}
    for collection, paths in files.items():
        root = f"{collection}s"
        roots[root] = str(paths[0].parent)
        for p in paths:
            rows.append(
                dict(
                    id=p.stem,
                    collection=collection,
                    root=root,
                    path=p.name,
                    sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                    width=None,
                    height=None,
                    status="ok",
                    error=None,
                    parent_id=None,
                    style="original",
                    duplicate_of=None,
                    verso=False,
                    artist=None,
                    title=None,
                )
            )
    df = pd.DataFrame(rows)
    cat.write_catalogue(df, out)
    cat.write_roots(out, roots)
    return df
