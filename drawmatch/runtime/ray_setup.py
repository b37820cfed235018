"""Starting or joining Ray, the same way for every job."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drawmatch.core.config import Config, setting


@dataclass(frozen=True)
class RayConfig(Config):
    """How a job reaches Ray. `address=None` joins a running cluster (RAY_ADDRESS, `ray start`) or
    starts a local instance; `num_cpus` only applies to a local instance this job starts.
    `autoscaling`: the cluster adds nodes on demand (Ray autoscaler, KubeRay), so a job that asks
    for more CPUs or GPUs than are up now waits for them; otherwise it is refused up front, since
    it would wait forever."""

    address: str | None = setting(
        None, help="Ray address (null: RAY_ADDRESS, `ray start` or local)"
    )
    num_cpus: int | None = setting(None, ge=1, help="CPUs of a local instance (null: all)")
    autoscaling: bool = setting(False, help="the cluster adds nodes on demand: wait for them")


_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_auth_enabled_notice(record: logging.LogRecord) -> bool:
    """False for Ray's notice that a local instance uses token authentication (its default);
    every other record, the warning that authentication is off included, passes."""
    return not record.getMessage().startswith("Token authentication is enabled for this")


# Lines Ray's own actors print that ask nothing of a user; they are kept out of the console (the
# worker's log file keeps them). Ray Train's PreemptionWatcher is built with the training
# workers' actor handles and restarts without limit, so Ray logs at error level that a restart
# could fail if those references were lost: its own design, on every train run.
RAY_NOISE = (
    re.compile(
        r"core_worker\.cc:\d+: Actor with class name: 'PreemptionWatcher' .* has constructor "
        r"arguments in the object store and max_restarts > 0"
    ),
)


def drop_ray_noise(print_logs: Callable[[dict[str, Any]], None]) -> Callable[..., None]:
    """`print_logs` (Ray's printer of worker output on the driver) without the `RAY_NOISE`
    lines; a batch left empty is not printed."""

    def filtered(data: dict[str, Any]) -> None:
        lines = [line for line in data["lines"] if not any(p.search(line) for p in RAY_NOISE)]
        if lines:
            print_logs({**data, "lines": lines})

    filtered.drops_ray_noise = True  # type: ignore[attr-defined]
    return filtered


def filter_worker_output() -> None:
    """Put `drop_ray_noise` in front of Ray's printer of worker output (Ray 2.60's dispatcher,
    `ray._private.ray_logging`); once per process."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    for name, handler in list(dispatcher.handlers):
        if name == "ray_print_logs" and not getattr(handler, "drops_ray_noise", False):
            dispatcher.remove_handler(name)
            dispatcher.add_handler(name, drop_ray_noise(handler))


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster named by `cfg.address` / RAY_ADDRESS / a running `ray start`, or start a
    local instance with `cfg.num_cpus` CPUs. Does nothing if Ray is already initialised.

    Ray's console output is cut to what a user needs: warnings and errors of the `ray` logger
    (not its start-up banner), workers' output (`log_to_driver`: a failing worker shows why)
    but the `RAY_NOISE` lines of Ray's own actors, Ray Data's progress bars on a terminal; its execution plans and, when stdout is not a
    terminal, its periodic progress dumps go only to its log file (`ray-data.log` in the session's
    log folder)."""
    import ray

    if ray.is_initialized():
        return
    # The dashboard stays on: Ray Train's placement-group cleaner asks its state API, and without
    # it a stopped sweep trial's workers keep their CPUs and the next trial waits forever.
    kwargs: dict[str, object] = {"log_to_driver": True, "logging_level": logging.WARNING}
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)  # type: ignore[arg-type]
    else:
        # A new local instance gets token authentication when RAY_AUTH_MODE is unset, and Ray
        # says so with a warning on every start: not something a user must act on.
        logging.getLogger(_AUTH_LOGGER).addFilter(_drop_auth_enabled_notice)
        if cfg.num_cpus is not None:
            kwargs["num_cpus"] = cfg.num_cpus
        ray.init(**kwargs)  # type: ignore[arg-type]
    filter_worker_output()
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data prints to the console only its warnings and errors, and its progress bars on a
    terminal; its INFO records (execution plans, "execution finished", the progress dumps it
    logs instead of bars when stdout is not a terminal) still reach its log file."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console, not the session log file
            handler.setLevel(max(handler.level, logging.WARNING))


def check_resources(cfg: RayConfig, need: dict[str, float], what: str, hint: str) -> None:
    """Refuse a job whose resources (`{"CPU": 2.5, "GPU": 1}`) the cluster cannot hold at once:
    Ray would wait forever for them. On an autoscaling cluster, say so and let Ray wait."""
    import ray

    have = ray.cluster_resources()
    short = {k: v for k, v in need.items() if v > float(have.get(k, 0.0)) + 1e-9}
    if not short:
        return
    text = ", ".join(
        f"{v:g} {k} (the cluster has {float(have.get(k, 0.0)):g})" for k, v in short.items()
    )
    if cfg.autoscaling:
        print(f"{what} needs {text}: waiting for the autoscaler to add nodes")
        return
    raise ValueError(
        f"{what} needs {text}: {hint}; on a cluster that adds nodes on demand set "
        "ray.autoscaling=true"
    )
