"""The thumbnails job: JPEG renditions (thumbnails and view-size copies) of every showable
catalogue image, written once by Ray tasks for the workbench (`drawmatch serve`).

Versos are never rendered. A rendition is named by its image's content hash
(`drawmatch.data.renditions`), so a rerun makes only what is missing or changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, section, setting
from drawmatch.core.images import ImageError
from drawmatch.data import catalogue as cat
from drawmatch.data.renditions import make_rendition, rendition_path
from drawmatch.runtime.pipeline import first_line, lost_worker_errors
from drawmatch.runtime.ray_setup import RayConfig, init_ray


@dataclass(frozen=True)
class ThumbnailsConfig(Config):
    """Thumbnails and view-size renditions of every showable image (never versos), written once
    under `out/thumbnails/` by Ray tasks; `drawmatch serve` reads them (and makes missing
    ones on demand). A rerun makes only what is missing."""

    out: str = setting("drawmatch-out", help="output root")
    sizes: tuple[int, ...] = setting((256, 1024), ge=32, le=4096, help="rendition sides in px")
    quality: int = setting(85, ge=1, le=100, help="JPEG quality")
    collections: tuple[str, ...] = setting(
        ("drawing", "artwork"),
        choices=("drawing", "artwork"),
        help="collections rendered",
    )
    batch_size: int = setting(16, ge=1, help="images per Ray task (at least)")
    concurrency: int | None = setting(None, ge=1, help="parallel tasks (null: as the CPUs allow)")
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")
    ray: RayConfig = section(RayConfig)


def render_part(
    rows: list[tuple[str, str, str]],
    out: str,
    sizes: tuple[int, ...],
    quality: int,
    max_pixels: int,
) -> list[tuple[str, int, str]]:
    """Make the missing renditions of `rows` (id, source path or URI, sha256): one decode per
    image, every size made from it; (id, renditions written, '' or the reason) per row."""
    results = []
    for image_id, source, sha in rows:
        made, error = 0, ""
        try:
            todo = missing_sizes(out, sha, sizes)
            data = storage.read_bytes(source) if todo else None
            for size in sorted(todo, reverse=True):
                storage.write_bytes(
                    rendition_path(out, sha, size),
                    make_rendition(source, size, quality, max_pixels, data=data),
                )
                made += 1
        except (ImageError, OSError, ValueError) as exc:
            error = str(exc)[:300]
        results.append((image_id, made, error))
    return results


def missing_sizes(out: str, sha: str, sizes: tuple[int, ...]) -> list[int]:
    """The sizes of the image with content hash `sha` that have no rendition yet."""
    return [s for s in sizes if not storage.exists(rendition_path(out, sha, s))]


def needs_work(out: str, sha: str, sizes: tuple[int, ...]) -> bool:
    """True when a rendition is missing, or when `sha` is no content hash (the task that gets
    the image then records why, as for any other image in error)."""
    try:
        return bool(missing_sizes(out, sha, sizes))
    except ValueError:
        return True


@dataclass
class ThumbnailsResult:
    images: int
    made: int
    errors: dict[str, str] = field(default_factory=dict)


def select(catalogue: pd.DataFrame, collections: tuple[str, ...]) -> pd.DataFrame:
    """The rows to render: usable (never a verso) rows of the chosen collections."""
    return catalogue[cat.usable(catalogue) & catalogue["collection"].isin(collections)]


def run(config: ThumbnailsConfig) -> ThumbnailsResult:
    """Make the missing renditions. What exists is checked first, here: Ray starts only when
    something is missing, so a rerun with nothing to do takes seconds."""
    catalogue = cat.read_catalogue(config.out)
    rows = select(catalogue, config.collections)
    if rows.empty:
        print("thumbnails: nothing to render")
        return ThumbnailsResult(0, 0)
    out = storage.absolute(config.out)
    frame = pd.DataFrame(
        {
            "id": rows["id"].to_numpy(),
            "source": cat.resolve_paths(rows, cat.read_roots(config.out)),
            "sha256": rows["sha256"].to_numpy(),
        }
    )
    sizes = tuple(config.sizes)
    todo = frame[[needs_work(out, str(sha), sizes) for sha in frame["sha256"]]]
    save_config(config, storage.join(out, "thumbnails", "thumbnails_config.yaml"))
    if todo.empty:
        print(f"thumbnails: 0 renditions made, all {len(frame)} images already have theirs")
        return ThumbnailsResult(len(frame), 0)
    made, errors = render(todo, config, out)
    print(
        f"thumbnails: {made} renditions made for {len(todo)} of {len(frame)} images"
        + (f", {len(errors)} images in error" if errors else "")
    )
    return ThumbnailsResult(len(frame), made, errors)


def render(todo: pd.DataFrame, config: ThumbnailsConfig, out: str) -> tuple[int, dict[str, str]]:
    """Render `todo` with plain Ray tasks (one CPU each, at most `concurrency` at once); return
    (renditions made, {id: reason}). Every id comes back, made or with its reason: a task whose
    worker died is not retried, its images are counted in error and a rerun makes them."""
    import ray

    init_ray(config.ray)
    limit = config.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
    step = max(config.batch_size, -(-len(todo) // 200))
    rows = list(zip(todo["id"].astype(str), todo["source"].astype(str), todo["sha256"].astype(str)))
    parts = [rows[i : i + step] for i in range(0, len(rows), step)]
    task = ray.remote(num_cpus=1, max_retries=0)(render_part)
    args = (out, tuple(config.sizes), config.quality, config.max_image_pixels)
    made, errors = 0, {}
    for part, result in run_tasks(task, parts, args, limit):
        if isinstance(result, BaseException):
            errors.update({image_id: f"worker lost: {first_line(result)}" for image_id, *_ in part})
            continue
        made += sum(n for _id, n, _e in result)
        errors.update({image_id: error for image_id, _n, error in result if error})
    return made, errors


def run_tasks(
    task: Any, parts: list[list[Any]], args: tuple[Any, ...], limit: int
) -> Iterator[tuple[list[Any], Any]]:
    """Run `task(part, *args)` for every part, at most `limit` at once; yield (part, its result or
    the Ray error that lost it), as they finish."""
    import ray

    waiting = list(parts)
    running: dict[Any, list[Any]] = {}
    while waiting or running:
        while waiting and len(running) < limit:
            part = waiting.pop(0)
            running[task.remote(part, *args)] = part
        ready, _ = ray.wait(list(running), num_returns=1)
        part = running.pop(ready[0])
        try:
            yield part, ray.get(ready[0])
        except lost_worker_errors() as exc:
            yield part, exc
