"""The regions job: region embeddings of the artworks, their FAISS region index and (optionally)
local features for geometric verification, for finding drawings that copy only a detail.

Ray Data pipeline like the embed job: CPU tasks decode and resize artworks to `region_size`²,
an actor pool of `RegionEmbedder`s (the same model as the stored global embeddings of `model_tag`,
rebuilt from its `model.json` and checked by weights hash) turns each image into one vector per box,
and write tasks store them as Parquet parts under `embeddings/<model_tag>/regions/`. Local features
(SIFT or ORB keypoints and descriptors) are extracted by CPU tasks into `local_features/`. A rerun
does only the artworks that are missing or whose content changed; the region index
(`index/<model_tag>/regions/`) then takes the stored region vectors of the gallery artworks that
have a global embedding, updated with those added, changed or removed since, written as a new
segment (or rebuilt where it cannot be, or with `rebuild_index=true`:
`drawmatch.retrieval.region_index`, `drawmatch.retrieval.segments`), with each
artwork's content hash for the staleness check of `drawmatch.retrieval.region_index.RegionIndex`.

One run per output root at a time (`drawmatch.core.locks`: it writes the local features, which every
model shares, and the model's regions and region index): a second is refused in one line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    redeclare,
    save_config,
    section,
    setting,
)
from drawmatch.core.locks import job_lock
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import (
    drop_rows,
    embeddings_dir,
    pick_model_tag,
    read_model_info,
    remove_rows,
    stored_ids,
    write_part,
)
from drawmatch.models.local_features import SETTINGS_FILE as FEATURES_FILE
from drawmatch.models.local_features import (
    STORED_COLUMNS,
    LocalFeatureExtractor,
    features_dir,
    stored_feature_ids,
    stored_table,
)
from drawmatch.models.preprocess import decode_rows
from drawmatch.models.region_embedder import (
    REGIONS_FILE,
    RegionEmbedder,
    region_boxes,
    regions_dir,
    regions_table,
)
from drawmatch.retrieval.faiss_index import check_index, index_setting
from drawmatch.retrieval.region_index import (
    KINDS,
    update_region_index,
)
from drawmatch.runtime.pipeline import (
    PipelineConfig,
    Stage,
    model_actor_stage,
    record_errors,
    reserve_actor_pool,
    run_stages,
)
from drawmatch.runtime.ray_setup import RayConfig


@dataclass(frozen=True)
class RegionsConfig(PipelineConfig):
    """The regions job: region embeddings of the artworks at `region_size` px (`levels` windows
    per side, neighbours overlapping by `overlap`), their index (`index_kind` flat, ivf, ivfpq or hnsw)
    and local features for verification (`local_features` sift, orb or null)."""

    rows_per_file: int = redeclare(PipelineConfig, "rows_per_file", 64)
    out: str = setting("drawmatch-out", help="output root")
    model_tag: str | None = setting(None, help="model (null: the only one)")
    region_size: int = setting(448, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE, help="region side in px")
    levels: tuple[int, ...] = setting(
        (1, 2, 3), ge=1, le=16, help="windows per side, one grid per level (16: 256 windows)"
    )
    overlap: float = setting(0.4, ge=0, lt=1, help="overlap of neighbouring windows")
    index_kind: str = setting(
        "flat", choices=KINDS, help="region index kind: flat is exact, the others approximate"
    )
    nlist: int = index_setting("nlist")
    nprobe: int = index_setting("nprobe")
    pq_m: int = index_setting("pq_m")
    hnsw_m: int = index_setting("hnsw_m")
    ef_search: int = index_setting("ef_search")
    local_features: str | None = setting(
        "sift", choices=("sift", "orb"), help="local features for verification (null: none)"
    )
    feature_side: int = setting(
        800, ge=32, le=MAX_IMAGE_SIZE, help="artworks' local features: longer side in px"
    )
    n_features: int = setting(2000, ge=1, help="artworks' local features: most keypoints")
    rebuild_index: bool = setting(
        False, help="build the region index from all vectors (false: update it with what changed)"
    )
    ray: RayConfig = section(RayConfig)


@dataclass
class RegionsResult:
    model_tag: str
    directory: str
    selected: int = 0
    already_done: int = 0
    embedded: int = 0
    regions_per_artwork: int = 0
    index_size: int = 0
    index_seconds: float = 0.0
    features_extracted: int = 0
    features_reused: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def decode_regions_batch(
    batch: dict[str, np.ndarray], roots: dict[str, str], size: int, max_pixels: int
) -> dict[str, np.ndarray]:
    """Decode catalogue rows and resize to (size, size): `image`, `ok`, `error` as the embed job."""
    return decode_rows(batch, roots, size, max_pixels)


def write_regions_part(
    batch: dict[str, np.ndarray],
    out_dir: str,
    tag: str,
    weights_hash: str,
    settings: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Write the ok rows of a region batch as one part; return id, ok, error per input image."""
    ok = np.asarray(batch["ok"], dtype=bool)
    if ok.any():
        table = regions_table(
            [str(x) for x in batch["id"][ok]],
            [str(x) for x in batch["sha256"][ok]],
            np.asarray(batch["region"])[ok],
            np.asarray(batch["box"])[ok],
            np.asarray(batch["embedding"])[ok],
            tag,
            weights_hash,
            settings,
        )
        write_part(out_dir, table)
    first = np.asarray(batch["region"]) <= 0  # one row per image: its first region, or its error
    return {"id": batch["id"][first], "ok": ok[first], "error": batch["error"][first]}


def write_features_part(batch: dict[str, np.ndarray], out_dir: str) -> dict[str, np.ndarray]:
    """Write the ok rows of a local features batch as one part (their stored bytes as they are:
    an artwork with zero keypoints is a valid row); return id, ok, error per input image."""
    ok = np.asarray(batch["ok"], dtype=bool)
    if ok.any():
        write_part(out_dir, stored_table({k: np.asarray(batch[k])[ok] for k in STORED_COLUMNS}))
    return {"id": batch["id"], "ok": ok, "error": batch["error"]}


def drop_stale_regions(directory: str, current: pd.DataFrame) -> int:
    """Remove every region row of an artwork whose content changed since (`current`: `id`,
    `sha256`), and of an artwork stored again in a later part (two runs at once): an artwork's
    regions are many rows of one part, dropped together. Returns the number of rows dropped."""
    stored = stored_ids(directory)
    if stored.empty:
        return 0
    per_part = stored.drop_duplicates(["id", "part"]).sort_values("part", kind="stable")
    merged = per_part.merge(current[["id", "sha256"]], on="id", how="left", suffixes=("", "_now"))
    changed = merged["sha256_now"].notna() & (merged["sha256"] != merged["sha256_now"])
    repeated = pd.Series(False, index=merged.index)
    repeated[~changed] = merged.loc[~changed, "id"].duplicated(keep="first")
    gone = set(zip(merged.loc[changed | repeated, "id"], merged.loc[changed | repeated, "part"]))
    drop = stored[[(i, p) in gone for i, p in zip(stored["id"], stored["part"])]]
    remove_rows(drop)
    return len(drop)


def index_params(config: RegionsConfig) -> dict[str, int]:
    """The region index's parameters of `config` (`drawmatch.retrieval.faiss_index`)."""
    keys = ("nlist", "nprobe", "pq_m", "hnsw_m", "ef_search")
    return {key: getattr(config, key) for key in keys}


def run(config: RegionsConfig) -> RegionsResult:
    """Embed the regions of the artworks that lack them, extract local features, build the index;
    one run per output root at a time (`drawmatch.core.locks`). The index's kind and parameters
    are checked first, before any work."""
    check_index(config.index_kind, KINDS, "region index", **index_params(config))
    with job_lock(str(config.out), "regions", name="regions"):
        return _run(config)


def build_region_index(
    config: RegionsConfig, tag: str, gallery: set[str], provenance: dict[str, Any]
) -> tuple[int, int, int]:
    """Bring the region index up to date with the stored region vectors of the gallery artworks
    that have a global embedding, each with its artwork's content hash: updated in place or
    rebuilt (`drawmatch.retrieval.region_index.update_region_index`); `provenance` holds the
    weights hash, region settings and local features of `index.json`. Returns the vectors, the
    artworks and the artworks left out for lack of a global embedding."""
    directory = regions_dir(storage.absolute(config.out), tag)
    region_rows = stored_ids(directory)
    region_sha = region_rows.drop_duplicates("id", keep="first")  # as read_regions
    sha_of = dict(zip(region_sha["id"], region_sha["sha256"]))
    stored = stored_ids(embeddings_dir(config.out, tag)).drop_duplicates("id")
    embedded = set(stored["id"])
    current = {k: sha_of[k] for k in sorted(sha_of) if k in gallery and k in embedded}
    no_global = len({k for k in sha_of if k in gallery and k not in embedded})
    if not current:
        raise ValueError(
            f"no artwork regions for model {tag} (with a global embedding): nothing to index"
        )
    params = {"kind": config.index_kind, **index_params(config)}
    info = {
        "model_tag": tag,
        "weights_hash": provenance["weights_hash"],
        "kind": config.index_kind,
        "params": params,
        "artworks": len(current),
        "regions": provenance["regions"],
        "local_features": provenance["local_features"],
        # artworks whose regions failed (their image did not decode): left out, not stale
        "without_regions": {
            k: s for k, s in zip(stored["id"], stored["sha256"]) if k in gallery and k not in sha_of
        },
    }
    size, how = update_region_index(
        config.out, tag, current, params, info, config.rebuild_index, region_rows
    )
    print(f"regions {tag}: region index {how}")
    return size, len(current), no_global


def _run(config: RegionsConfig) -> RegionsResult:
    """Check the settings, embed the missing regions and features, then rebuild the region index."""
    tag = pick_model_tag(config.out, config.model_tag)
    info = read_model_info(config.out, tag)
    _check_pooling(info, tag)  # before Ray starts: the actors would refuse it
    whash = str(info["weights_hash"])
    catalogue = cat.read_catalogue(config.out)
    roots = cat.read_roots(config.out)
    gallery = set(cat.gallery_ids(catalogue))
    rows = catalogue[catalogue["id"].isin(gallery)][["id", "root", "path", "sha256"]]
    boxes = region_boxes(tuple(config.levels), config.overlap)
    settings = _region_settings(config, boxes)
    directory = regions_dir(storage.absolute(config.out), tag)
    settings_path = storage.join(directory, REGIONS_FILE)
    _check_region_settings(config, directory, settings_path, settings)
    feat_settings = {
        "kind": config.local_features,
        "max_side": config.feature_side,
        "n_features": config.n_features,
    }
    if config.local_features:
        _check_feature_settings(config, config.local_features)
    storage.makedirs(directory)
    storage.write_text(settings_path, json.dumps(settings, indent=2))
    save_config(config, storage.join(directory, "regions_config.yaml"))

    result = RegionsResult(model_tag=tag, directory=str(directory), selected=len(rows))
    result.regions_per_artwork = len(boxes)
    drop_stale_regions(directory, rows)
    done = set(stored_ids(directory)["id"])
    todo = rows[~rows["id"].isin(done)].reset_index(drop=True)
    result.already_done = len(rows) - len(todo)
    feat_todo, feat_dir = pd.DataFrame(), ""
    if config.local_features:
        feat_todo, feat_dir = _features_todo(config, config.local_features, rows, feat_settings)
        # local features do not depend on the model: another model tag's run reuses them
        result.features_reused = len(rows) - len(feat_todo)
    print(
        f"regions {tag}: {len(rows)} artworks, {result.already_done} already done, {len(todo)} "
        f"to embed ({len(boxes)} regions each at {config.region_size} px)"
        + (f", {len(feat_todo)} to extract {config.local_features} features" if feat_dir else "")
    )
    errors: list[tuple[str, str]] = []
    if len(todo) or len(feat_todo):
        reserve_actor_pool(config, "the regions job (num_actors x cpus_per_actor + decode_cpus)")
    block_rows = max(config.decode_batch_size * 4, 1)
    if len(todo):
        stages = _region_stages(config, roots, info, directory, tag, whash, settings, len(boxes))
        result.embedded, errs = run_stages(todo, block_rows, stages, f"regions {tag}")
        errors += errs
    if len(feat_todo):
        stages = _feature_stages(config, roots, feat_dir)
        result.features_extracted, errs = run_stages(
            feat_todo, block_rows, stages, f"local features {tag}"
        )
        errors += errs
    result.errors = record_errors(directory, errors)

    start = time.perf_counter()
    local = feat_settings if config.local_features else None
    n_vectors, n_artworks, no_global = build_region_index(
        config, tag, gallery, {"weights_hash": whash, "regions": settings, "local_features": local}
    )
    result.index_seconds = time.perf_counter() - start
    result.index_size = n_vectors
    print(summary(result, config, n_artworks, no_global))
    return result


def summary(result: RegionsResult, config: RegionsConfig, n_artworks: int, no_global: int) -> str:
    """The run's last line: what was embedded, extracted or reused, the errors and the index."""
    features = (
        f"local features {result.features_extracted} extracted and {result.features_reused} "
        "reused, "
        if config.local_features
        else ""
    )
    left_out = (
        f"; {no_global} artworks left out (no global embedding yet: run `drawmatch embed`)"
        if no_global
        else ""
    )
    return (
        f"regions {result.model_tag}: {result.embedded} artworks embedded, {features}"
        f"{sum(result.errors.values())} errors {result.errors}; {config.index_kind} region index "
        f"of {result.index_size} vectors ({n_artworks} artworks) in {result.index_seconds:.1f} s"
        f"{left_out}"
    )


def _check_pooling(info: dict[str, Any], tag: str) -> None:
    """Refuse a model that pools the class token: it has no regions."""
    if info["model"].get("pooling") == "cls":
        raise ValueError(
            f"{tag} pools the class token, which has no regions: embed with model.pooling=avg "
            "(the mean of the patch tokens) for region search"
        )


def _region_settings(config: RegionsConfig, boxes: Any) -> dict[str, Any]:
    """The region settings stored beside the regions and in the index."""
    return {
        "region_size": config.region_size,
        "levels": list(config.levels),
        "overlap": config.overlap,
        "boxes": [[round(float(v), 6) for v in b] for b in boxes],
    }


def _check_region_settings(
    config: RegionsConfig, directory: str, settings_path: str, settings: dict[str, Any]
) -> None:
    """Refuse to add regions of other boxes or size to a folder that holds some."""
    if storage.exists(settings_path):
        old = json.loads(storage.read_text(settings_path))
        if old.get("boxes") != settings["boxes"] or old.get("region_size") != config.region_size:
            raise ValueError(
                f"{directory} holds regions made with other settings ({old.get('region_size')} px,"
                f" levels {old.get('levels')}, overlap {old.get('overlap')}); remove that folder "
                "or use the same settings"
            )


def _check_feature_settings(config: RegionsConfig, kind: str) -> None:
    """Refuse to mix features of another keypoint limit at the same side (they share the folder)."""
    feat_where = features_dir(storage.absolute(config.out), kind, config.feature_side)
    feat_path = storage.join(feat_where, FEATURES_FILE)
    if storage.exists(feat_path):
        before = int(json.loads(storage.read_text(feat_path)).get("n_features", 500))
        if before != config.n_features:
            raise ValueError(
                f"{feat_where} holds {kind} features of at most {before} "
                f"keypoints (n_features={before}); remove that folder or use n_features={before}"
            )


def _features_todo(
    config: RegionsConfig, kind: str, rows: pd.DataFrame, feat_settings: dict[str, Any]
) -> tuple[pd.DataFrame, str]:
    """Prepare the local features folder, drop stale rows; the artworks to extract and the folder."""
    feat_dir = features_dir(storage.absolute(config.out), kind, config.feature_side)
    storage.makedirs(feat_dir)
    storage.write_text(storage.join(feat_dir, FEATURES_FILE), json.dumps(feat_settings))
    stored = stored_feature_ids(config.out, kind, config.feature_side)
    drop_rows(feat_dir, stored, rows)
    have = set(stored_feature_ids(config.out, kind, config.feature_side)["id"])
    return rows[~rows["id"].isin(have)].reset_index(drop=True), feat_dir


def _region_stages(
    config: RegionsConfig,
    roots: dict[str, str],
    info: dict[str, Any],
    directory: str,
    tag: str,
    whash: str,
    settings: dict[str, Any],
    n_boxes: int,
) -> list[Stage]:
    """Decode, embed every region, write parts: the stages of the region embedding."""
    return [
        Stage(
            decode_regions_batch,
            batch_size=config.decode_batch_size,
            num_cpus=config.decode_cpus,
            kwargs={
                "roots": roots,
                "size": config.region_size,
                "max_pixels": config.max_image_pixels,
            },
        ),
        model_actor_stage(
            RegionEmbedder,
            config,
            config.batch_size,
            {
                "model": dict(info["model"]),
                "levels": list(config.levels),
                "overlap": config.overlap,
            },
        ),
        Stage(
            write_regions_part,
            batch_size=config.rows_per_file * n_boxes,
            num_cpus=0.1,
            kwargs={
                "out_dir": directory,
                "tag": tag,
                "weights_hash": whash,
                "settings": settings,
            },
        ),
    ]


def _feature_stages(config: RegionsConfig, roots: dict[str, str], feat_dir: str) -> list[Stage]:
    """Extract keypoints and descriptors, write parts: the stages of the local features."""
    return [
        Stage(
            LocalFeatureExtractor,
            batch_size=config.decode_batch_size,
            num_cpus=config.decode_cpus,
            kwargs={
                "roots": roots,
                "kind": config.local_features,
                "max_side": config.feature_side,
                "n_features": config.n_features,
                "max_pixels": config.max_image_pixels,
            },
            actors=config.num_actors,
        ),
        Stage(
            write_features_part,
            batch_size=config.rows_per_file,
            num_cpus=0.1,
            kwargs={"out_dir": feat_dir},
        ),
    ]
