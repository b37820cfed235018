"""The thumbnails job: JPEG renditions (thumbnails and view-size copies) of every showable
catalogue image, written once by Ray Data tasks for the workbench (`drawmatch serve`).

Versos are never rendered. A rendition is named by its image's content hash
(`drawmatch.data.renditions`), so a rerun makes only what is missing or changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.core import storage
from drawmatch.core.config import Config, save_config, section, setting
from drawmatch.core.images import ImageError
from drawmatch.data import catalogue as cat
from drawmatch.data.renditions import make_rendition, rendition_path
from drawmatch.runtime.ray_setup import RayConfig, init_ray


@dataclass(frozen=True)
class ThumbnailsConfig(Config):
    """Thumbnails and view-size renditions of every showable image (never versos), written once
    under `out/thumbnails/` by Ray Data tasks; `drawmatch serve` reads them (and makes missing
    ones on demand). A rerun makes only what is missing."""

    out: str = setting("drawmatch-out", help="output root")
    sizes: tuple[int, ...] = setting((256, 1024), ge=32, le=4096, help="rendition sides in px")
    quality: int = setting(85, ge=1, le=100, help="JPEG quality")
    collections: tuple[str, ...] = setting(
        ("drawing", "artwork"),
        choices=("drawing", "artwork"),
        help="collections rendered",
    )
    batch_size: int = setting(16, ge=1, help="images per Ray Data batch")
    concurrency: int | None = setting(None, ge=1, help="parallel tasks (null: as the CPUs allow)")
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")
    ray: RayConfig = section(RayConfig)


class ThumbnailMaker:
    """Callable Ray Data stage: rows `id`, `source` (file path or URI), `sha256` -> the same rows
    with `made` (renditions written) and `error` ('' or a reason); one decode per image, every
    size made from it."""

    def __init__(self, out: str, sizes: tuple[int, ...], quality: int, max_pixels: int) -> None:
        self.out = out
        self.sizes = tuple(sorted(sizes, reverse=True))
        self.quality = quality
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        made = np.zeros(len(batch["id"]), dtype=np.int32)
        errors = []
        for i, (source, sha) in enumerate(zip(batch["source"], batch["sha256"])):
            error = ""
            try:
                todo = [
                    s for s in self.sizes if not storage.exists(rendition_path(self.out, sha, s))
                ]
                data = storage.read_bytes(str(source)) if todo else None
                for size in todo:
                    storage.write_bytes(
                        rendition_path(self.out, sha, size),
                        make_rendition(source, size, self.quality, self.max_pixels, data=data),
                    )
                    made[i] += 1
            except (ImageError, OSError, ValueError) as exc:
                error = str(exc)[:300]
            errors.append(error)
        return {
            "id": batch["id"],
            "made": made,
            "error": np.asarray(errors, dtype=object),
        }


@dataclass
class ThumbnailsResult:
    images: int
    made: int
    errors: dict[str, str] = field(default_factory=dict)


def select(catalogue: pd.DataFrame, collections: tuple[str, ...]) -> pd.DataFrame:
    """The rows to render: usable (never a verso) rows of the chosen collections."""
    return catalogue[cat.usable(catalogue) & catalogue["collection"].isin(collections)]


def run(config: ThumbnailsConfig) -> ThumbnailsResult:
    import ray

    catalogue = cat.read_catalogue(config.out)
    rows = select(catalogue, config.collections)
    if rows.empty:
        print("thumbnails: nothing to render")
        return ThumbnailsResult(0, 0)
    frame = pd.DataFrame(
        {
            "id": rows["id"].to_numpy(),
            "source": cat.resolve_paths(rows, cat.read_roots(config.out)),
            "sha256": rows["sha256"].to_numpy(),
        }
    )
    init_ray(config.ray)
    out = storage.absolute(config.out)
    step = max(config.batch_size, -(-len(frame) // 200))
    parts = [frame.iloc[i : i + step] for i in range(0, len(frame), step)]
    kwargs: dict[str, Any] = {
        "out": out,
        "sizes": tuple(config.sizes),
        "quality": config.quality,
        "max_pixels": config.max_image_pixels,
    }
    ds = ray.data.from_pandas(parts).map_batches(
        ThumbnailMaker,
        fn_constructor_kwargs=kwargs,
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=config.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ),
        num_cpus=1,
    )
    made = 0
    errors: dict[str, str] = {}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        made += int(np.sum(batch["made"]))
        errors.update({str(i): str(e) for i, e in zip(batch["id"], batch["error"]) if e})
    save_config(config, storage.join(out, "thumbnails", "thumbnails_config.yaml"))
    print(
        f"thumbnails: {made} renditions made for {len(frame)} images"
        + (f", {len(errors)} images in error" if errors else "")
    )
    return ThumbnailsResult(len(frame), made, errors)
