"""Starting or joining Ray, the same way for every job."""

from __future__ import annotations

import os

from drawmatch.settings import RayConfig


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster named by `cfg.address` / RAY_ADDRESS / a running `ray start`, or start a
    local instance with `cfg.num_cpus` CPUs. Does nothing if Ray is already initialised."""
    import ray

    if ray.is_initialized():
        return
    # The dashboard stays on: Ray Train's placement-group cleaner asks its state API, and without
    # it a stopped sweep trial's workers keep their CPUs and the next trial waits forever.
    kwargs: dict[str, object] = {"log_to_driver": True}
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    if cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    ray.init(**kwargs)  # type: ignore[arg-type]
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


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
