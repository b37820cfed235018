"""Region embeddings: vectors for windows of an artwork at several scales, each with its box, so
that a drawing that copies only a detail can be matched against the part of the artwork it copies.

The artwork is resized to `region_size`² (the eval transform at a larger input than the global
embedding's, so that a window of the artwork is seen at about the scale of a whole query image), run
once through the backbone's trunk, and each window's cells of the last feature map (B, C, h, w) are
pooled with the backbone's own pooling (avg, max or GeM) and L2-normalised: a query's global vector
and a window's vector are then the same kind of vector (R-MAC-like regions, Tolias et al. 2016;
Replica's `search_region` pools windows of a feature map in the same way).

Boxes (`region_boxes`): `levels` lists how many windows per side each scale has; level 1 is the
whole image, level n >= 2 has n x n square windows (in image fractions) of side 1 / (n - (n-1) *
overlap), neighbours overlapping by `overlap` of a side, the first at 0 and the last ending at 1, so
every level covers the image exactly.

The region store lives beside the global embeddings: `embeddings/<model_tag>/regions/part-*.parquet`
with `id`, `model`, `sha256`, `region` (index of the box), `box` (x0, y0, x1, y1 fractions, float32),
`embedding` (L2-normalised float32), and the model tag, weights hash and region settings in every
part's schema metadata; `regions/regions.json` records those settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from drawmatch.core import storage
from drawmatch.data.embeddings import embeddings_dir, part_files, read_model_info

REGIONS_DIR = "regions"
REGIONS_FILE = "regions.json"


def region_boxes(levels: tuple[int, ...] | list[int], overlap: float = 0.4) -> np.ndarray:
    """(R, 4) float32 boxes (x0, y0, x1, y1) in fractions of the image, level by level, row-major
    within a level; R = sum of n² over levels."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    boxes = []
    for n in levels:
        if n < 1:
            raise ValueError(f"a level has at least one window per side, got {n}")
        side = 1.0 / (n - (n - 1) * overlap)
        starts = [i * side * (1.0 - overlap) for i in range(n)]
        if n > 1:
            starts[-1] = 1.0 - side
        for y in starts:
            for x in starts:
                boxes.append((x, y, min(1.0, x + side), min(1.0, y + side)))
    return np.asarray(boxes, dtype=np.float32)


def box_cells(box: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    """Feature-map cells (r0, r1, c0, c1) (half-open) that a fractional box covers, at least one."""
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = min(w - 1, int(np.floor(x0 * w + 1e-6)))
    r0 = min(h - 1, int(np.floor(y0 * h + 1e-6)))
    c1 = max(c0 + 1, min(w, int(np.ceil(x1 * w - 1e-6))))
    r1 = max(r0 + 1, min(h, int(np.ceil(y1 * h - 1e-6))))
    return r0, r1, c0, c1


def pool_regions(fmap: Any, boxes: np.ndarray, pooling: str = "avg") -> np.ndarray:
    """Pool each box of a feature map (B, C, h, w) (torch) -> (B, R, C) float32, L2-normalised."""
    import torch

    b, c, h, w = fmap.shape
    out = torch.empty((b, len(boxes), c), dtype=torch.float32, device=fmap.device)
    fmap = fmap.float()
    if pooling == "gem":
        fmap = fmap.clamp(min=1e-6).pow(3.0)
    for r, box in enumerate(boxes):
        r0, r1, c0, c1 = box_cells(box, h, w)
        cells = fmap[:, :, r0:r1, c0:c1]
        if pooling == "max":
            out[:, r] = cells.amax(dim=(2, 3))
        else:
            out[:, r] = cells.mean(dim=(2, 3))
    if pooling == "gem":
        out = out.pow(1.0 / 3.0)
    out = torch.nn.functional.normalize(out, dim=2)
    return out.cpu().numpy().astype(np.float32)


class RegionEmbedder:
    """Callable Ray Data stage: image batches (`image` (B, S, S, 3) uint8 at `region_size`, `id`,
    `sha256`, `ok`, `error`) -> one row per (image, box): `id`, `sha256`, `region`, `box` (4,),
    `embedding` (D,), `ok`, `error`; an image that failed to decode gives one row, ok=False."""

    def __init__(
        self,
        model: dict[str, Any],
        levels: tuple[int, ...] | list[int],
        overlap: float,
        num_threads: int | None = None,
    ) -> None:
        from drawmatch.models.embedder import Embedder, say_once

        if model.get("runtime", "auto") != "torch":  # the export gives pooled vectors only
            say_once("region embeddings pool the backbone's feature map: they run with torch")
        self.embedder = Embedder({**model, "runtime": "torch"}, num_threads=num_threads)
        self.boxes = region_boxes(tuple(levels), overlap)
        self.pooling = self.embedder.net.pooling
        if self.pooling == "cls":  # a class token sees the whole image: it has no regions
            raise ValueError(
                f"region embeddings pool feature-map cells; {self.embedder.tag} pools the class "
                "token: use pooling avg (the mean of the patch tokens) for regions"
            )
        self.dim = self.embedder.dim

    def embed_regions(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 -> (B, R, D) float32 region vectors, L2-normalised."""
        import torch

        from drawmatch.models.preprocess import normalise

        e = self.embedder
        with torch.inference_mode():
            x = normalise(images, e.mean, e.std, e.device)
            return pool_regions(e.net.feature_map(x), self.boxes, self.pooling)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], dtype=bool)
        n_boxes = len(self.boxes)
        vectors = self.embed_regions(batch["image"][ok]) if ok.any() else None
        ids, shas, regions, boxes, embs, oks, errors = [], [], [], [], [], [], []
        k = 0
        for i in range(len(ok)):
            if ok[i]:
                assert vectors is not None
                ids += [batch["id"][i]] * n_boxes
                shas += [batch["sha256"][i]] * n_boxes
                regions.append(np.arange(n_boxes, dtype=np.int16))
                boxes.append(self.boxes)
                embs.append(vectors[k])
                oks += [True] * n_boxes
                errors += [""] * n_boxes
                k += 1
            else:
                ids.append(batch["id"][i])
                shas.append(batch["sha256"][i])
                regions.append(np.array([-1], dtype=np.int16))
                boxes.append(np.zeros((1, 4), np.float32))
                embs.append(np.zeros((1, self.dim), np.float32))
                oks.append(False)
                errors.append(batch["error"][i])
        return {
            "id": np.asarray(ids, dtype=object),
            "sha256": np.asarray(shas, dtype=object),
            "region": np.concatenate(regions),
            "box": np.concatenate(boxes),
            "embedding": np.concatenate(embs),
            "ok": np.asarray(oks, dtype=bool),
            "error": np.asarray(errors, dtype=object),
        }


def regions_dir(out: str | Path, tag: str) -> str:
    return storage.join(embeddings_dir(out, tag), REGIONS_DIR)


def regions_table(
    ids: list[str],
    sha256: list[str],
    region: np.ndarray,
    box: np.ndarray,
    emb: np.ndarray,
    tag: str,
    weights_hash: str,
    settings: dict[str, Any],
) -> pa.Table:
    """Arrow table of the region contract, with provenance and region settings as metadata."""
    dim = emb.shape[1]
    values = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1))
    box_values = pa.array(np.ascontiguousarray(box, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "model": pa.array([tag] * len(ids), pa.string()),
            "sha256": pa.array(sha256, pa.string()),
            "region": pa.array(np.asarray(region, dtype=np.int16)),
            "box": pa.FixedSizeListArray.from_arrays(box_values, 4),
            "embedding": pa.FixedSizeListArray.from_arrays(values, dim),
        }
    )
    meta = {
        b"drawmatch.model_tag": tag.encode(),
        b"drawmatch.weights_hash": weights_hash.encode(),
        b"drawmatch.jobs.regions": json.dumps(settings, sort_keys=True).encode(),
    }
    return table.replace_schema_metadata(meta)


def read_region_settings(out: str | Path, tag: str) -> dict[str, Any]:
    path = storage.join(regions_dir(out, tag), REGIONS_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"no region embeddings for model {tag!r}: run `drawmatch regions`")
    return dict(json.loads(storage.read_text(path)))


def read_regions(
    out: str | Path, tag: str, parts: list[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """All region vectors of one model (or of its `parts` only): (ids per row, region (N,), box
    (N, 4), embedding (N, D)), rows grouped by id, ids in sorted order. Every part must carry the
    model's weights hash and the region settings of `regions.json`; an id stored twice (two runs
    at once) is read from its first part."""
    info = read_model_info(out, tag)
    settings = read_region_settings(out, tag)
    expected = json.dumps(settings["boxes"], sort_keys=True)
    ids: list[str] = []
    regions, boxes, embs = [], [], []
    seen: set[str] = set()
    for part in part_files(regions_dir(out, tag)) if parts is None else sorted(parts):
        table = storage.read_parquet(part)
        meta = table.schema.metadata or {}
        got = (
            meta.get(b"drawmatch.model_tag", b"").decode(),
            meta.get(b"drawmatch.weights_hash", b"").decode(),
        )
        if got != (tag, str(info["weights_hash"])):
            raise ValueError(f"{part} holds regions of model {got}, not {tag}")
        part_settings = json.loads(meta.get(b"drawmatch.jobs.regions", b"{}").decode() or "{}")
        if json.dumps(part_settings.get("boxes"), sort_keys=True) != expected:
            raise ValueError(f"{part} was made with other region settings than {REGIONS_FILE}")
        part_ids = table.column("id").to_pylist()
        keep = np.array([k not in seen for k in part_ids], dtype=bool)
        seen.update(part_ids)
        n = len(table)
        emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(n, -1)
        box = table.column("box").combine_chunks().flatten().to_numpy().reshape(n, 4)
        ids.extend(k for k, kept in zip(part_ids, keep) if kept)
        regions.append(table.column("region").to_numpy()[keep])
        boxes.append(box[keep])
        embs.append(emb[keep])
    if not embs:
        dim = int(info["dim"])
        return [], np.zeros(0, np.int16), np.zeros((0, 4), np.float32), np.zeros((0, dim))
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    return (
        [ids[i] for i in order],
        np.concatenate(regions)[order],
        np.concatenate(boxes)[order].astype(np.float32),
        np.concatenate(embs)[order].astype(np.float32),
    )
