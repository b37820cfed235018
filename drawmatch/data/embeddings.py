"""The embeddings store: `embeddings/<model_tag>/` under an output root.

- `part-*.parquet`: `id`, `model`, `sha256`, `embedding` (fixed-size list of float32,
  L2-normalised); each part's schema metadata carries the model tag and weights hash;
- `model.json`: the model config, its weights hash and dimension (provenance);
- `errors.csv`: images that could not be embedded, with the reason.

A model tag names backbone, pooling, input size and weights (`model_tag`). Readers check every
part's provenance against `model.json`, and read an id once even if an older version (or two
concurrent runs on an object store, which cannot be locked) wrote it twice; an embed rerun
drops such repeats from disk (`drop_rows`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from drawmatch.core import storage

MODEL_FILE = "model.json"
ERRORS_FILE = "errors.csv"


def embeddings_dir(out: str | Path, tag: str) -> str:
    return storage.join(out, "embeddings", tag)


def model_tag(backbone: str, pooling: str, image_size: int, weights: str) -> str:
    """Name of an embedding model, e.g. `efficientnet_lite0-avg-280-imagenet`; `weights` is
    `imagenet`, `random` or `ft-<first 8 digits of the fine-tuned weights' hash>`."""
    return f"{backbone}-{pooling}-{image_size}-{weights}"


def embeddings_table(
    ids: list[str], sha256: list[str], emb: np.ndarray, tag: str, weights_hash: str
) -> pa.Table:
    """Arrow table of the embeddings contract: id, model, sha256, embedding (fixed-size float32)."""
    dim = emb.shape[1]
    values = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "model": pa.array([tag] * len(ids), pa.string()),
            "sha256": pa.array(sha256, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(values, dim),
        }
    )
    meta = {b"drawmatch.model_tag": tag.encode(), b"drawmatch.weights_hash": weights_hash.encode()}
    return table.replace_schema_metadata(meta)


def write_part(directory: str, table: pa.Table) -> str:
    """Write one part file (a new unique name, written whole); returns its path."""
    path = storage.join(directory, f"part-{uuid.uuid4().hex}.parquet")
    storage.write_parquet(table, path)
    return path


def part_files(directory: str | Path) -> list[str]:
    return storage.list_files(directory, "part-*.parquet")


def write_model_info(directory: str, info: dict[str, Any]) -> None:
    storage.write_bytes(storage.join(directory, MODEL_FILE), json.dumps(info, indent=2).encode())


def read_model_info(out: str | Path, tag: str) -> dict[str, Any]:
    path = storage.join(embeddings_dir(out, tag), MODEL_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(
            f"no embeddings for model {tag!r} under {storage.join(out, 'embeddings')}"
        )
    return dict(json.loads(storage.read_text(path)))


def list_model_tags(out: str | Path) -> list[str]:
    found = storage.list_files(storage.join(out, "embeddings"), f"*/{MODEL_FILE}", recursive=True)
    return sorted(storage.name(storage.parent(p)) for p in found)


def pick_model_tag(out: str | Path, tag: str | None) -> str:
    """`tag` if given, else the only model under `out/embeddings` (an error if there are several)."""
    if not storage.exists(out):
        raise FileNotFoundError(f"{out} does not exist: no drawmatch output there")
    tags = list_model_tags(out)
    if tag is not None:
        if tag not in tags:
            raise FileNotFoundError(f"no embeddings for model {tag!r}; available: {tags or 'none'}")
        return tag
    if not tags:
        raise FileNotFoundError(f"no embeddings under {out}: run `drawmatch embed` first")
    if len(tags) != 1:
        raise ValueError(
            f"{len(tags)} embedding models under {out}: {tags}; choose one with model_tag="
        )
    return tags[0]


def _check_provenance(part: str, table: pa.Table, tag: str, weights_hash: str) -> None:
    meta = table.schema.metadata or {}
    got = (
        meta.get(b"drawmatch.model_tag", b"").decode(),
        meta.get(b"drawmatch.weights_hash", b"").decode(),
    )
    if got != (tag, weights_hash):
        raise ValueError(f"{part} holds embeddings of model {got}, not {tag} {weights_hash}")


def read_embeddings(
    out: str | Path, tag: str, ids: list[str] | None = None, parts: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Embeddings of one model as (ids, (N, D) float32); optionally only `ids`, in that order,
    and only from `parts` (the parts that hold them, for reading a few of many).

    Every part must carry the same model tag and weights hash as `model.json` (provenance check).
    An id written more than once (two runs at once, or an older version) is read once: its row
    in the first part in name order.
    """
    info = read_model_info(out, tag)
    all_ids: list[str] = []
    chunks: list[np.ndarray] = []
    for part in part_files(embeddings_dir(out, tag)) if parts is None else sorted(parts):
        table = storage.read_parquet(part)
        _check_provenance(part, table, tag, str(info["weights_hash"]))
        all_ids.extend(table.column("id").to_pylist())
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        chunks.append(flat.reshape(len(table), -1))
    emb = np.concatenate(chunks) if chunks else np.zeros((0, int(info["dim"])), np.float32)
    first = pd.Index(all_ids).duplicated(keep="first")
    if first.any():
        all_ids = [k for k, dup in zip(all_ids, first) if not dup]
        emb = emb[~first]
    if ids is None:
        return all_ids, emb.astype(np.float32, copy=False)
    where = {k: i for i, k in enumerate(all_ids)}
    missing = [k for k in ids if k not in where]
    if missing:
        raise ValueError(f"{len(missing)} id(s) have no {tag} embedding: {missing[:10]}")
    return list(ids), emb[[where[k] for k in ids]].astype(np.float32, copy=False)


def stored_ids(directory: str) -> pd.DataFrame:
    """`id`, `sha256`, `part`, `row` (position in its part) of every row stored under an
    embeddings directory, in the order `read_embeddings` reads them."""
    frames = []
    for p in part_files(directory):
        frame = storage.read_parquet(p, columns=["id", "sha256"]).to_pandas()
        frames.append(frame.assign(part=str(p), row=np.arange(len(frame))))
    if not frames:
        return pd.DataFrame(columns=["id", "sha256", "part", "row"])
    return pd.concat(frames, ignore_index=True)


def drop_rows(directory: str, stored: pd.DataFrame, current: pd.DataFrame) -> int:
    """Rewrite parts without the rows that must go: rows whose image content changed since they
    were embedded (`current`: `id`, `sha256`) and repeated rows of an id (all but the first, as
    `read_embeddings` reads them). Returns the number of rows dropped."""
    stored = stored.sort_values("part", kind="stable")
    merged = stored.merge(current[["id", "sha256"]], on="id", how="left", suffixes=("", "_now"))
    changed = merged["sha256_now"].notna() & (merged["sha256"] != merged["sha256_now"])
    # repeats among the rows that stay: a changed row does not make a current one a repeat
    repeated = pd.Series(False, index=merged.index)
    repeated[~changed] = merged.loc[~changed, "id"].duplicated(keep="first")
    drop = merged[changed | repeated]
    remove_rows(drop)
    return len(drop)


def remove_rows(rows: pd.DataFrame) -> None:
    """Rewrite parts without the given rows (`part`, `row`: position in the part), each part
    written whole; a part left empty is removed."""
    for part, part_rows in rows.groupby("part"):
        table = storage.read_parquet(str(part))
        keep = np.ones(len(table), dtype=bool)
        keep[part_rows["row"].to_numpy(dtype=np.int64)] = False
        if keep.any():
            storage.write_parquet(table.filter(pa.array(keep)), str(part))
        else:
            storage.remove(str(part))
