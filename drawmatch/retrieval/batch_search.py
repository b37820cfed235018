"""Batch search in the region modes (`region`, `fused`, `verified`) as a Ray Data job.

The drawings flow through `drawmatch.runtime.pipeline`'s stages: in verified mode CPU tasks decode
the drawings (`read_query_images`), a pool of `SearchActor`s, each holding the region index and
the artworks' local features loaded once, ranks them (`RegionSearcher.rank`, the ranker of every
region mode), and `write_results` tasks write the results as Parquet parts of at most `rows_per_file`
drawings, each part whole or not at all, into `<output>.parts/`. A drawing that does not decode
is a counted failure (`errors.csv` there), not a crash.

A rerun searches only the drawings no part holds yet (or whose content changed since), so a
killed job finishes the rest; parts of other settings (`search.json`: mode, k, filter, region
parameters, model, gallery and region index) are removed first. `assemble` reads the parts back
as one table, each drawing once, in the order the caller gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.data.embeddings import part_files, write_part
from drawmatch.models.embedder import set_nice
from drawmatch.retrieval.queries import QUERY_DRAFT
from drawmatch.retrieval.region_index import RegionIndex
from drawmatch.retrieval.region_search import RegionSearcher, RegionSearchParams
from drawmatch.runtime.pipeline import ActorPoolConfig, Stage, model_actor_stage

SETTINGS_FILE = "search.json"
PARTS_SUFFIX = ".parts"


def parts_dir(target: str) -> str:
    """The folder of a batch search's parts: `<target>.parts` beside the final file."""
    return target + PARTS_SUFFIX


def check_region_search(out: str, tag: str, gallery: list[str], mode: str) -> dict[str, Any]:
    """Refuse, in the driver and before Ray starts, what the actors would refuse: a missing or
    stale region index, and no local features in verified mode; the index's info."""
    info = dict(RegionIndex(out, tag, gallery).info)
    if mode == "verified" and not info.get("local_features"):
        raise FileNotFoundError(
            f"no local features for model {tag!r}: run `drawmatch regions` with "
            "local_features=sift (or orb)"
        )
    return info


def settings_of(
    tag: str,
    mode: str,
    k: int,
    where: dict[str, str],
    params: RegionSearchParams,
    gallery: list[str],
    index_info: dict[str, Any],
) -> dict[str, Any]:
    """What a part's results depend on besides the drawing: parts of other settings are stale."""
    digest = hashlib.sha256("\n".join(gallery).encode()).hexdigest()
    return {
        "model": tag,
        "mode": mode,
        "k": k,
        "where": dict(sorted(where.items())),
        "region": asdict(params),
        "gallery": {"artworks": len(gallery), "sha256": digest},
        "region_index": index_info,
    }


def prepare_parts(directory: str, settings: dict[str, Any]) -> int:
    """Keep the parts of `directory` written with `settings`; remove those of other settings
    (returns how many) and record `settings` for the next run."""
    path = storage.join(directory, SETTINGS_FILE)
    text = json.dumps(settings, indent=2, sort_keys=True, default=str)
    removed = 0
    if storage.exists(path) and storage.read_text(path) != text:
        for part in part_files(directory):
            storage.remove(part)
            removed += 1
    storage.write_text(path, text)
    return removed


def searched(directory: str, sha256: dict[str, str]) -> set[str]:
    """The drawings the parts of `directory` hold results of, for their content `sha256` now
    (a drawing whose file changed since is searched again)."""
    done: set[str] = set()
    for path in part_files(directory):
        table = storage.read_parquet(path, columns=["drawing_id", "sha256"]).to_pandas()
        current = table["drawing_id"].map(sha256) == table["sha256"]
        done.update(table.loc[current, "drawing_id"])
    return done


def assemble(directory: str, order: list[str], sha256: dict[str, str]) -> pd.DataFrame:
    """The parts' results for the drawings of `order` whose content is `sha256` still, each
    drawing from one part only (the first that holds it), drawings in `order`, then by rank."""
    frames = []
    for n, path in enumerate(part_files(directory)):
        frame = storage.read_parquet(path).to_pandas()
        frame["_part"] = n
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    current = table["drawing_id"].map(sha256) == table["sha256"]
    table = table[current]
    first = table.groupby("drawing_id")["_part"].transform("min")
    table = table[table["_part"] == first]
    position = {d: i for i, d in enumerate(order)}
    table = table.assign(_pos=table["drawing_id"].map(position))
    table = table.sort_values(["_pos", "rank"], kind="stable")
    return table.drop(columns=["_part", "_pos", "sha256"]).reset_index(drop=True)


def read_query_images(
    batch: dict[str, np.ndarray], roots: dict[str, str], max_pixels: int, nice: int | None = None
) -> dict[str, np.ndarray]:
    """Decode a batch of drawings as verified search reads them (`open_image` at the query draft
    size): the rows plus `image` (raw RGB bytes), `height`, `width`, `ok` and `error` (the
    reason a drawing does not decode; its image is then empty). `nice`: the nice level to run
    at (Ray's workers start at 15)."""
    from drawmatch.core.images import ImageError, open_image

    if nice is not None and os.nice(0) != nice:
        set_nice(nice)

    n = len(batch["id"])
    images = np.empty(n, dtype=object)
    height, width = np.zeros(n, np.int64), np.zeros(n, np.int64)
    ok, error = np.ones(n, dtype=bool), np.array([""] * n, dtype=object)
    for i in range(n):
        path = storage.join(roots[str(batch["root"][i])], str(batch["path"][i]))
        try:
            img = open_image(path, draft_size=QUERY_DRAFT, max_pixels=max_pixels)
            images[i], (width[i], height[i]) = img.tobytes(), img.size
        except ImageError as exc:
            images[i], ok[i], error[i] = b"", False, exc.reason
    return {**batch, "image": images, "height": height, "width": width, "ok": ok, "error": error}


class SearchActor:
    """A Ray actor that ranks drawings in one region mode: the region index and, in verified
    mode, the artworks' local features are loaded once, when the actor starts."""

    def __init__(
        self,
        out: str,
        tag: str,
        gallery: list[str],
        mode: str,
        params: RegionSearchParams,
        k: int,
        allowed: list[str] | None,
        num_threads: int = 1,
        nice: int | None = None,
    ) -> None:
        import cv2
        import faiss

        if nice is not None:
            set_nice(nice)
        cv2.setNumThreads(num_threads)
        faiss.omp_set_num_threads(num_threads)
        self.searcher = RegionSearcher(out, tag, gallery, mode, params)
        self.k, self.allowed = k, allowed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rank the drawings of `batch` that decoded: per drawing `id`, `sha256`, `ok`, `error`
        and `result` (its top-k table as Arrow IPC bytes; empty for a failure)."""
        n = len(batch["id"])
        ok = np.asarray(batch["ok"], dtype=bool) if "ok" in batch else np.ones(n, dtype=bool)
        error = batch["error"] if "error" in batch else np.array([""] * n, dtype=object)
        results = np.array([b""] * n, dtype=object)
        keep = np.flatnonzero(ok)
        if len(keep):
            images = None
            if self.searcher.mode == "verified":
                images = [query_image(batch, int(i)) for i in keep]
            vectors = np.asarray(batch["embedding"], dtype=np.float32)[keep]
            frame = self.searcher.rank(vectors, self.k, self.allowed, images)
            for q, position in enumerate(keep):
                rows = frame[frame["query"] == q].drop(columns=["query"])
                results[position] = table_bytes(rows)
        return {
            "id": batch["id"],
            "sha256": batch["sha256"],
            "ok": ok,
            "error": error,
            "result": results,
        }


def query_image(batch: dict[str, np.ndarray], i: int) -> Any:
    """The PIL image of row `i` of a decoded batch."""
    from PIL import Image

    size = (int(np.asarray(batch["width"])[i]), int(np.asarray(batch["height"])[i]))
    return Image.frombytes("RGB", size, bytes(batch["image"][i]))


def table_bytes(frame: pd.DataFrame) -> bytes:
    """A table as Arrow IPC stream bytes (types kept exactly: float64 scores stay float64)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def write_results(batch: dict[str, np.ndarray], directory: str) -> dict[str, np.ndarray]:
    """Write the ranked drawings of a batch as one part (`drawing_id`, `sha256`, then the
    ranker's columns); return id, ok, error per drawing."""
    ok = np.asarray(batch["ok"], dtype=bool)
    tables = []
    for i in np.flatnonzero(ok):
        table = pa.ipc.open_stream(pa.py_buffer(bytes(batch["result"][i]))).read_all()
        n = table.num_rows
        table = table.add_column(0, "sha256", pa.array([str(batch["sha256"][i])] * n, pa.string()))
        tables.append(table.add_column(0, "drawing_id", pa.array([str(batch["id"][i])] * n)))
    if tables:
        write_part(directory, pa.concat_tables(tables, promote_options="default"))
    return {"id": batch["id"], "ok": ok, "error": batch["error"]}


def batch_search_stages(
    config: ActorPoolConfig,
    work: dict[str, Any],
    roots: dict[str, str],
    directory: str,
    sizes: tuple[int, int, int],
    max_pixels: int,
    nice: int | None = None,
) -> list[Stage]:
    """Decode (verified mode only), rank, write parts: the stages of a batch search. `work`:
    the `SearchActor`'s arguments; `sizes`: drawings per decode task, per actor call, per part."""
    decode_batch, actor_batch, part_rows = sizes
    stages = []
    if work["mode"] == "verified":
        stages.append(
            Stage(
                read_query_images,
                batch_size=decode_batch,
                num_cpus=config.decode_cpus,
                kwargs={"roots": roots, "max_pixels": max_pixels, "nice": nice},
            )
        )
    stages.append(model_actor_stage(SearchActor, config, actor_batch, {**work, "nice": nice}))
    stages.append(
        Stage(write_results, batch_size=part_rows, num_cpus=0.1, kwargs={"directory": directory})
    )
    return stages
