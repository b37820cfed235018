"""The Ray Data pipeline the embedding jobs share: rows of work -> stages -> counted results.

`embed` (whole images) and `regions` (region vectors, local features) each describe their work as
a list of `Stage`s: decode tasks, a pool of model actors, Parquet writers. `run_stages` chains
them with `map_batches`, and collects what the last stage returns: one row per input id with `ok`
and `error`, so that every id that went in is either counted as done or recorded with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import Config, setting
from drawmatch.data.embeddings import ERRORS_FILE
from drawmatch.runtime.ray_setup import RayConfig, check_resources, init_ray


@dataclass(frozen=True)
class PipelineConfig(Config):
    """The keys of a job that runs this pipeline (embed, regions): `num_actors` model actors of
    `cpus_per_actor` CPUs and `gpus_per_actor` GPUs, fed by decode tasks of `decode_cpus` CPUs,
    and Parquet parts of `rows_per_file` rows."""

    batch_size: int = setting(4, ge=1, help="images per model batch")
    num_actors: int = setting(1, ge=1, help="model actors")
    # a task or actor without CPUs is never limited by Ray: it would oversubscribe the node
    cpus_per_actor: float = setting(1.0, gt=0, le=1024, help="CPUs per model actor")
    gpus_per_actor: float = setting(0.0, ge=0, le=64, help="GPUs per model actor")
    decode_batch_size: int = setting(8, ge=1, help="images per decode task batch")
    decode_cpus: float = setting(0.5, gt=0, le=1024, help="CPUs per decode task")
    rows_per_file: int = setting(256, ge=1, help="rows per Parquet part")
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One `map_batches` step. `fn` is a function (run as Ray tasks) or a class (a pool of
    `actors` Ray actors, each built once with `kwargs`); `tasks` caps how many tasks run at once
    (None: as many as the CPUs allow)."""

    fn: Any
    batch_size: int
    num_cpus: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_gpus: float = 0.0
    actors: int | None = None
    tasks: int | None = None


class ActorPoolConfig(Protocol):
    """The settings of a job that runs a pool of model actors with decode tasks beside them."""

    @property
    def ray(self) -> RayConfig: ...
    @property
    def num_actors(self) -> int: ...
    @property
    def cpus_per_actor(self) -> float: ...
    @property
    def gpus_per_actor(self) -> float: ...
    @property
    def decode_cpus(self) -> float: ...


def reserve_actor_pool(config: ActorPoolConfig, what: str) -> None:
    """Start Ray and refuse, before anything is written, an actor pool the cluster can never hold:
    the actors hold their CPUs for the whole job, so a decode task must fit beside them."""
    init_ray(config.ray)
    check_resources(
        config.ray,
        {
            "CPU": config.num_actors * config.cpus_per_actor + config.decode_cpus,
            "GPU": config.num_actors * config.gpus_per_actor,
        },
        what,
        "lower cpus_per_actor or decode_cpus (fractions are fine), or num_actors",
    )


def model_actor_stage(
    model: type, config: ActorPoolConfig, batch_size: int, kwargs: dict[str, Any]
) -> Stage:
    """A pool of `num_actors` model actors, each with `cpus_per_actor` CPUs (as many threads) and
    `gpus_per_actor` GPUs, built with `kwargs`."""
    return Stage(
        model,
        batch_size=batch_size,
        num_cpus=config.cpus_per_actor,
        num_gpus=config.gpus_per_actor,
        kwargs={**kwargs, "num_threads": max(1, int(config.cpus_per_actor))},
        actors=config.num_actors,
    )


def run_stages(
    todo: pd.DataFrame, block_rows: int, stages: list[Stage], label: str
) -> tuple[int, list[tuple[str, str]]]:
    """Run `todo` through `stages`; return (ids done, [(id, error), ...]).

    The rows are cut into blocks of `block_rows` by hand (one block is the unit a decode task and
    then an actor takes). The last stage must return batches with `id`, `ok` and `error`."""
    import ray

    blocks = [todo.iloc[i : i + block_rows] for i in range(0, len(todo), max(block_rows, 1))]
    ds: Any = ray.data.from_pandas(blocks)
    for stage in stages:
        is_actor = isinstance(stage.fn, type)
        if is_actor:
            compute: Any = ray.data.ActorPoolStrategy(size=stage.actors or 1)
            kwargs: dict[str, Any] = {"fn_constructor_kwargs": stage.kwargs}
        else:
            compute = ray.data.TaskPoolStrategy(size=stage.tasks) if stage.tasks else None
            kwargs = {"fn_kwargs": stage.kwargs}
        if compute is not None:
            kwargs["compute"] = compute
        ds = ds.map_batches(
            stage.fn,
            batch_size=stage.batch_size,
            batch_format="numpy",
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus,
            **kwargs,
        )
    done = 0
    errors: list[tuple[str, str]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray(batch["ok"], dtype=bool)
        done += int(ok.sum())
        errors.extend(zip(batch["id"][~ok].tolist(), batch["error"][~ok].tolist()))
        log.info("%s: %d/%d done (%d errors)", label, done, len(todo), len(errors))
    if done + len(errors) != len(todo):
        raise RuntimeError(f"{label} lost rows: {len(todo)} in, {done} done, {len(errors)} errors")
    return done, errors


def record_errors(directory: str, errors: list[tuple[str, str]]) -> dict[str, int]:
    """Write `errors` as `errors.csv` in `directory` (when there are any); count them by reason."""
    counts: dict[str, int] = {}
    for _id, reason in errors:
        counts[reason] = counts.get(reason, 0) + 1
    if errors:
        storage.write_bytes(
            storage.join(directory, ERRORS_FILE),
            pd.DataFrame(errors, columns=["id", "error"]).to_csv(index=False).encode(),
        )
    return counts
