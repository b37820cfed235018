"""The Ray Data pipeline the embedding jobs share: rows of work -> stages -> counted results.

`embed` (whole images), `regions` (region vectors, local features) and batch search in the region
modes (`drawmatch.retrieval.batch_search`) each describe their work as a list of `Stage`s: decode
tasks, a pool of model (or search) actors, Parquet writers. `run_stages` chains
them with `map_batches`, and collects what the last stage returns: one row per input id with `ok`
and `error`, so that every id that went in is either counted as done or recorded with its reason.
"""

from __future__ import annotations

import logging
import warnings
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


class WorkerLostError(OSError):
    """A worker process died mid-job (out of memory, a crash in native code): the job stops and
    says what it kept. An OSError, so that the CLI reports it in one line."""


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


def map_batches(ds: Any, fn: Any, **options: Any) -> Any:
    """`ds.map_batches(fn, **options)` whose work Ray never redoes in silence: a task whose worker
    dies is not retried, an actor (`fn` a class) not restarted, so the job stops and says so.

    Ray Data's defaults (`max_retries=-1` for tasks, `max_restarts=-1` for actors, with every
    batch retried) would retry forever an image that kills its worker and never report a lost
    worker; and for actors Ray logs an error-level line (`core_worker.cc ... has constructor
    arguments in the object store and max_restarts > 0`), as Ray Data passes its own
    object-store references to each actor. These options have no named parameter in Ray 2.60
    (the pinned version): they go through `ray_remote_args`, whose deprecation notice (removal
    in Ray 2.64) is silenced here alone."""
    no_retry = {"max_restarts": 0} if isinstance(fn, type) else {"max_retries": 0}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning
        )
        return ds.map_batches(fn, **no_retry, **options)


def run_stages(
    todo: pd.DataFrame, block_rows: int, stages: list[Stage], label: str
) -> tuple[int, list[tuple[str, str]]]:
    """Run `todo` through `stages`; return (ids done, [(id, error), ...]).

    The rows are cut into blocks of at most `block_rows` (one block is the unit a decode task and
    then an actor takes). The last stage must return batches with `id`, `ok` and `error`.
    The blocks are built here, in the driver (`from_items`): `from_pandas` would start a task per
    block to read its schema, in workers that Ray ends soon after as idle, and a Ray 2.60 worker
    that loaded pyarrow can abort on that exit ("Mutex corrupt", SIGABRT and a stack dump)."""
    import ray

    n_blocks = max(1, -(-len(todo) // max(block_rows, 1)))
    ds: Any = ray.data.from_items(todo.to_dict("records"), override_num_blocks=n_blocks)
    for stage in stages:
        options: dict[str, Any] = {
            "batch_size": stage.batch_size,
            "batch_format": "numpy",
            "num_cpus": stage.num_cpus,
            "num_gpus": stage.num_gpus,
        }
        if isinstance(stage.fn, type):
            options["compute"] = ray.data.ActorPoolStrategy(size=stage.actors or 1)
            options["fn_constructor_kwargs"] = stage.kwargs
        else:
            options["compute"] = (
                ray.data.TaskPoolStrategy(size=stage.tasks) if stage.tasks else None
            )
            options["fn_kwargs"] = stage.kwargs
        ds = map_batches(ds, stage.fn, **options)
    done = 0
    errors: list[tuple[str, str]] = []
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ok = np.asarray(batch["ok"], dtype=bool)
            done += int(ok.sum())
            errors.extend(zip(batch["id"][~ok].tolist(), batch["error"][~ok].tolist()))
            log.info("%s: %d/%d done (%d errors)", label, done, len(todo), len(errors))
    except lost_worker_errors() as exc:
        raise WorkerLostError(
            f"{label} stopped ({type(exc).__name__}: {first_line(exc)}); {len(todo)} in, {done} "
            f"done and kept, {len(errors)} errors, {len(todo) - done - len(errors)} not done (a "
            "rerun does only what is missing)"
        ) from exc
    if done + len(errors) != len(todo):
        raise RuntimeError(f"{label} lost rows: {len(todo)} in, {done} done, {len(errors)} errors")
    return done, errors


def lost_worker_errors() -> tuple[type[Exception], ...]:
    """Ray's errors for a worker, actor or node that died (not for an exception in our code)."""
    from ray import exceptions as e

    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.OutOfMemoryError)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (Ray's errors carry whole tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


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
