"""The embed job: catalogue images -> L2-normalised CNN embeddings in `embeddings/<model_tag>/`.

Ray Data pipeline: CPU tasks decode and resize (`decode_batch`, JPEG scans decoded at reduced size),
an actor pool of `Embedder`s (CPUs or GPUs per actor from the config) turns image batches into
vectors, and `write_part` tasks write them as Parquet files, each atomically. A rerun embeds only the
ids that are missing or whose content changed, so a killed job finishes the rest when run again,
and drops rows stored twice (by an older version). One run at a time writes to a model folder
(`drawmatch.core.locks`): a second one is refused with a message naming the first.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import save_config, section, setting
from drawmatch.core.locks import job_lock
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import (
    MODEL_FILE,
    drop_rows,
    embeddings_dir,
    embeddings_table,
    stored_ids,
    write_model_info,
)
from drawmatch.data.embeddings import write_part as write_part_file
from drawmatch.models.embedder import Embedder, ModelConfig, choose_runtime, set_nice
from drawmatch.models.preprocess import decode_rows
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
class EmbedConfig(PipelineConfig):
    """Embed the catalogue images of `collections` with `model`: CPU decode tasks feed
    `num_actors` embedding actors; parts of `rows_per_file` rows go to `embeddings/<model_tag>/`."""

    out: str = setting("drawmatch-out", help="output root")
    model: ModelConfig = section(ModelConfig)
    collections: tuple[str, ...] = setting(
        ("drawing", "artwork"), choices=("drawing", "artwork"), help="collections embedded"
    )
    include_styled: bool = setting(False, help="embed the style copies too")
    decode_concurrency: int | None = setting(None, ge=1, help="parallel decode tasks (null: Ray's)")
    nice: int | None = setting(
        0, ge=-20, le=19, help="nice level of decode tasks and actors (null: Ray's 15)"
    )
    ray: RayConfig = section(RayConfig)


def decode_batch(
    batch: dict[str, np.ndarray],
    roots: dict[str, str],
    image_size: int,
    max_pixels: int,
    nice: int | None = None,
) -> dict[str, np.ndarray]:
    """Decode and resize a batch of catalogue rows (`id`, `root`, `path`, `sha256`).

    Returns the same rows plus `image` (B, size, size, 3) uint8, `ok` (B,) bool and `error` (B,) str;
    a row that fails to decode keeps a black image, ok=False and its reason. `nice`: the nice
    level to run at (Ray's workers start at 15).
    """
    if nice is not None and os.nice(0) != nice:
        set_nice(nice)
    return decode_rows(batch, roots, image_size, max_pixels)


def write_part(
    batch: dict[str, np.ndarray], out_dir: str, tag: str, weights_hash: str
) -> dict[str, np.ndarray]:
    """Write the ok rows of an embedded batch as one Parquet part; return id, ok, error per row."""
    ok = np.asarray(batch["ok"], dtype=bool)
    if ok.any():
        table = embeddings_table(
            [str(x) for x in batch["id"][ok]],
            [str(x) for x in batch["sha256"][ok]],
            np.asarray(batch["embedding"])[ok],
            tag,
            weights_hash,
        )
        write_part_file(out_dir, table)
    return {"id": batch["id"], "ok": ok, "error": batch["error"]}


@dataclass
class EmbedResult:
    model_tag: str
    weights_hash: str
    directory: str
    selected: int = 0
    already_done: int = 0
    embedded: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stale_replaced: int = 0


def select_rows(catalogue: pd.DataFrame, config: EmbedConfig) -> pd.DataFrame:
    """Catalogue rows to embed: usable rows of the chosen collections, originals unless
    `include_styled`."""
    chosen = cat.usable(catalogue) if config.include_styled else cat.originals(catalogue)
    return catalogue[chosen & catalogue["collection"].isin(config.collections)]


def run(config: EmbedConfig) -> EmbedResult:
    """Embed the selected catalogue rows that have no up-to-date embedding yet; refused at once
    (`JobLockedError`) while another embed run writes to the same model folder."""
    from drawmatch.models.backbones import resolve_model
    from drawmatch.training.checkpoints import model_from_checkpoint

    # fine-tuned weights bring the backbone, image size and pooling they were trained with (a key
    # that contradicts them is refused); then the backbone's own input size and pooling where the
    # config leaves them null: decoding, the tag, the saved config and model.json name them
    config = replace(config, model=resolve_model(model_from_checkpoint(config.model)))
    catalogue = cat.read_catalogue(config.out)
    roots = cat.read_roots(config.out)
    rows = select_rows(catalogue, config)

    # Build the model once here to learn its tag and weights hash (provenance); actors rebuild it.
    # `auto` is decided per actor (torch where it holds a GPU, else onnx); the probe takes the
    # actors' choice, so model.json records the runtime they use and CPU actors find the export.
    actors = choose_runtime(config.model.runtime, cuda=config.gpus_per_actor > 0)
    probe = Embedder({**asdict(config.model), "runtime": actors}, num_threads=None)
    tag, whash, dim, runtime = probe.tag, probe.weights_hash, probe.dim, probe.runtime
    del probe
    directory = embeddings_dir(storage.absolute(config.out), tag)
    # One run per model folder: two at once would embed and write every vector twice.
    with job_lock(directory, "embed"):
        return _run_locked(config, rows, roots, (tag, whash, runtime), dim, directory)


def _run_locked(
    config: EmbedConfig,
    rows: pd.DataFrame,
    roots: dict[str, str],
    model: tuple[str, str, str],
    dim: int,
    directory: str,
) -> EmbedResult:
    """The embed job's writes, under the lock of its model folder; `model`: tag, weights hash
    and the runtime the actors use."""
    from drawmatch.runtime.ray_setup import init_ray

    tag, whash, runtime = model
    runtimes = _check_weights(directory, whash, runtime)
    stored = stored_ids(directory)
    current = stored.merge(rows[["id", "sha256"]], on=["id", "sha256"])
    if not rows["id"].isin(set(current["id"])).all():
        # there is work: refuse resources the cluster can never hold before anything is written
        reserve_actor_pool(
            config,
            "the embed job (num_actors x cpus_per_actor + decode_cpus, num_actors x gpus_per_actor)",
        )
    _write_model_info(config, directory, model, dim, runtimes)

    result = EmbedResult(model_tag=tag, weights_hash=whash, directory=str(directory))
    result.selected = len(rows)
    result.stale_replaced = drop_rows(directory, stored_ids(directory), rows)
    done = set(stored_ids(directory)["id"])
    todo = rows[~rows["id"].isin(done)][["id", "root", "path", "sha256"]].reset_index(drop=True)
    result.already_done = result.selected - len(todo)
    print(
        f"embed {tag}: {len(rows)} selected, {result.already_done} already embedded, "
        f"{len(todo)} to do"
    )
    if len(todo) == 0:
        return result
    init_ray(config.ray)  # started above when there was work (a no-op then)

    stages = _embed_stages(config, roots, directory, tag, whash)
    block_rows = max(config.decode_batch_size * 4, 1)
    result.embedded, error_rows = run_stages(todo, block_rows, stages, f"embed {tag}")
    result.errors = record_errors(directory, error_rows)
    print(
        f"embed {tag}: {result.embedded} embedded, {len(error_rows)} failed {result.errors}, "
        f"written to {directory}"
    )
    return result


def _check_weights(directory: str, whash: str, runtime: str) -> set[str]:
    """Refuse a model folder that holds embeddings of other weights; the runtimes that wrote
    parts there, this one included."""
    info_path = storage.join(directory, MODEL_FILE)
    runtimes = {runtime}
    if storage.exists(info_path):
        info = json.loads(storage.read_text(info_path))
        if info["weights_hash"] != whash:
            raise ValueError(
                f"{directory} holds embeddings of weights {info['weights_hash']}, but this model "
                f"has weights {whash}; use another output root or remove that folder"
            )
        runtimes.update(info.get("runtimes", [info.get("runtime", "torch")]))
    return runtimes


def _write_model_info(
    config: EmbedConfig, directory: str, model: tuple[str, str, str], dim: int, runtimes: set[str]
) -> None:
    """Write the model folder's `model.json` (its provenance: tag, weights hash and the runtime
    of this run in `model`) and the job's config."""
    tag, whash, runtime = model
    storage.makedirs(directory)
    model_info = {
        "model_tag": tag,
        "weights_hash": whash,
        "dim": dim,
        "model": asdict(config.model),
        "runtime": runtime,
        "runtimes": sorted(runtimes),  # every runtime that wrote parts here (same embeddings)
    }
    write_model_info(directory, model_info)
    save_config(config, storage.join(directory, "embed_config.yaml"))


def _embed_stages(
    config: EmbedConfig, roots: dict[str, str], directory: str, tag: str, whash: str
) -> list[Stage]:
    """Decode, embed, write parts: the stages of the embed job."""
    return [
        # A CPU reservation unlike the actors' keeps Ray Data from fusing decoding into the
        # embedding actors: decode tasks and embedding actors then scale separately.
        Stage(
            decode_batch,
            batch_size=config.decode_batch_size,
            num_cpus=config.decode_cpus,
            kwargs={
                "roots": roots,
                "image_size": config.model.image_size,
                "max_pixels": config.max_image_pixels,
                "nice": config.nice,
            },
            tasks=config.decode_concurrency,
        ),
        model_actor_stage(
            Embedder,
            config,
            config.batch_size,
            {"model": asdict(config.model), "nice": config.nice},
        ),
        Stage(
            write_part,
            batch_size=config.rows_per_file,
            num_cpus=0.1,
            kwargs={"out_dir": directory, "tag": tag, "weights_hash": whash},
        ),
    ]
