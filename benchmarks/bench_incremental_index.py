"""Adding artworks to a large gallery: the index and regions jobs updating their indexes (a new
segment: `drawmatch.retrieval.segments`) against rebuilding them from all vectors, interleaved and
repeated, for two sizes of addition so that the cost per added artwork shows.

    python benchmarks/bench_incremental_index.py [--gallery 10000] [--added 100,1000]
        [--rounds 3] [--dim 1280] [--levels 1,2,3] [--kind flat] [--region-kind flat]

The output root holds a catalogue of `--gallery` + the largest `--added` artworks and, as the
embed and regions jobs leave them, the stored global embeddings (parts of 256 rows) and region
vectors (parts of 64 artworks, `--levels` windows each: 14 for 1,2,3) of all of them: seeded
random unit vectors of `--dim` dimensions (EfficientNet-Lite0's 1280), written straight to the
stores, no images. The indexes are first built for the gallery alone (the state before the new
artworks were catalogued and embedded); each arm restores that state and catalogues the gallery
plus its added artworks (not timed) and times one job run:

- `index: update +N` / `index: rebuild +N`: `drawmatch index` (`rebuild=false` / `true`);
- `regions: update +N` / `regions: rebuild +N`: `drawmatch regions local_features=null` with
  nothing to embed (every region vector is stored), so what it times is its checks of the stores
  and the region index (`rebuild_index=false` / `true`).

Updates run for every `--added` size, rebuilds for the first only (a rebuild reads every vector
whatever was added). The embedding itself is not timed: the embed and regions jobs embed only the
artworks that are missing or changed (ids and content hashes), so adding 100 artworks embeds 100
whatever the gallery's size. Prints median, min-max and IQR of the seconds per arm, the ratios
rebuild / update and larger / smaller update, what each added artwork costs (the difference of
two update medians over the difference of their sizes) and the fixed rest, and the load average."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import loadavg, print_report, run_interleaved

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import embeddings_dir, embeddings_table, write_model_info, write_part
from drawmatch.jobs import index, regions
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.models.region_embedder import REGIONS_FILE, region_boxes, regions_dir, regions_table

TAG = "efficientnet_lite0-avg-280-bench"
WEIGHTS = "bench-weights"


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def catalogue_rows(ids: list[str]) -> pd.DataFrame:
    """Catalogue rows of artworks `ids` (content hash: a hash of the id)."""
    return pd.DataFrame(
        {
            "id": ids,
            "collection": "artwork",
            "root": "artworks",
            "path": [f"{k}.jpg" for k in ids],
            "sha256": [hashlib.sha256(k.encode()).hexdigest() for k in ids],
            "width": None,
            "height": None,
            "status": "ok",
            "error": None,
            "parent_id": None,
            "style": "original",
            "duplicate_of": None,
            "verso": False,
            "artist": None,
            "title": None,
        }
    )


def write_stores(out: Path, rows: pd.DataFrame, dim: int, config: RegionsConfig) -> None:
    """model.json, global embeddings and region vectors of every row, as the jobs write them."""
    rng = np.random.default_rng(0)
    directory = embeddings_dir(str(out), TAG)
    storage.makedirs(directory)
    model = {"backbone": "efficientnet_lite0", "pooling": "avg", "image_size": 280}
    info = {"model_tag": TAG, "weights_hash": WEIGHTS, "dim": dim, "model": model}
    write_model_info(directory, {**info, "runtime": "onnx", "runtimes": ["onnx"]})
    ids, shas = rows["id"].tolist(), rows["sha256"].tolist()
    for start in range(0, len(ids), 256):
        part = slice(start, start + 256)
        emb = unit_vectors(rng, len(ids[part]), dim)
        write_part(directory, embeddings_table(ids[part], shas[part], emb, TAG, WEIGHTS))
    boxes = region_boxes(config.levels, config.overlap)
    settings = regions._region_settings(config, boxes)
    where = regions_dir(str(out), TAG)
    storage.makedirs(where)
    storage.write_text(storage.join(where, REGIONS_FILE), json.dumps(settings))
    r = len(boxes)
    for start in range(0, len(ids), 64):
        part_ids, part_shas = ids[start : start + 64], shas[start : start + 64]
        n = len(part_ids)
        table = regions_table(
            [k for k in part_ids for _ in range(r)],
            [s for s in part_shas for _ in range(r)],
            np.tile(np.arange(r, dtype=np.int16), n),
            np.tile(boxes, (n, 1)),
            unit_vectors(rng, n * r, dim),
            TAG,
            WEIGHTS,
            settings,
        )
        write_part(where, table)


def _arm(
    out: Path, before: Path, rows: pd.DataFrame, job: str, rebuild: bool, args: Any
) -> Callable[[], float]:
    """One timed run of `job` (index or regions) on the gallery plus `len(rows) - args.gallery`
    added artworks, from the saved indexes of the gallery alone."""
    levels = tuple(int(v) for v in args.levels.split(","))
    windows = len(region_boxes(levels, RegionsConfig().overlap))
    config = RegionsConfig(
        out=str(out), levels=levels, local_features=None, index_kind=args.region_kind
    )

    def timed() -> float:
        shutil.rmtree(out / "index")
        shutil.copytree(before, out / "index")
        cat.write_catalogue(rows, out)
        t = time.perf_counter()
        if job == "index":
            size = index.run(IndexConfig(out=str(out), kind=args.kind, rebuild=rebuild)).size
        else:
            size = regions.run(replace(config, rebuild_index=rebuild)).index_size
        secs = time.perf_counter() - t
        expected = len(rows) * (1 if job == "index" else windows)
        if size != expected:
            raise RuntimeError(f"{job}: an index of {size}, not {expected}")
        return secs

    return timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=10000)
    parser.add_argument("--added", default="100,1000", help="artworks added, one size or several")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--levels", default="1,2,3")
    parser.add_argument("--kind", default="flat", help="artwork index kind")
    parser.add_argument("--region-kind", default="flat", help="region index kind")
    args = parser.parse_args(argv)
    added = [int(v) for v in args.added.split(",")]

    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="drawmatch-bench-incremental-"))
    out = work / "out"
    levels = tuple(int(v) for v in args.levels.split(","))
    base_regions = RegionsConfig(
        out=str(out), levels=levels, local_features=None, index_kind=args.region_kind
    )
    try:
        ids = [f"art{i:06d}" for i in range(args.gallery + max(added))]
        rows = catalogue_rows(ids)
        cat.write_roots(out, {"artworks": str(work / "images")})
        t = time.perf_counter()
        write_stores(out, rows, args.dim, base_regions)
        print(f"stores of {len(ids)} artworks written in {time.perf_counter() - t:.1f} s")
        cat.write_catalogue(rows.iloc[: args.gallery], out)  # before the new artworks came
        index.run(IndexConfig(out=str(out), kind=args.kind))
        regions.run(base_regions)
        before = work / "index-before"
        shutil.copytree(out / "index", before)
        arms = {}
        for job in ("index", "regions"):
            for n in added:
                grown = rows.iloc[: args.gallery + n]
                arms[f"{job}: update +{n}"] = _arm(out, before, grown, job, False, args)
            grown = rows.iloc[: args.gallery + added[0]]
            arms[f"{job}: rebuild +{added[0]}"] = _arm(out, before, grown, job, True, args)
        samples = run_interleaved(arms, args.rounds)
        load_after = loadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = []
    for job in ("index", "regions"):
        first = f"{job}: update +{added[0]}"
        ratios.append(
            (f"{job}: rebuild / update +{added[0]}", f"{job}: rebuild +{added[0]}", first)
        )
        ratios += [
            (f"{job}: update +{n} / +{added[0]}", f"{job}: update +{n}", first) for n in added[1:]
        ]
    summary = print_report(
        f"adding {args.added} artworks to a gallery of {args.gallery}: {args.kind} artwork index, "
        f"{args.region_kind} region index of {len(region_boxes(levels, base_regions.overlap))} "
        f"windows per artwork, {args.dim} dimensions, {args.rounds} rounds",
        samples,
        ratios,
        load_before,
        load_after,
        unit="s",
    )
    for job in ("index", "regions"):
        median = {n: summary[f"{job}: update +{n}"]["median"] for n in added}
        for small, large in zip(added, added[1:]):
            per = (median[large] - median[small]) / (large - small)  # seconds per added artwork
            print(
                f"  {job}: update, each added artwork past {small}: {1000 * per:.2f} ms; "
                f"the rest (fixed): {median[small] - small * per:.2f} s (medians)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
