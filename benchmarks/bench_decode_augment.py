"""Decode and augment throughput on scan-sized JPEGs, measured side by side in one run.

    python benchmarks/bench_decode_augment.py [--scans DIR] [--count 24] [--augment-count 8]
                                              [--no-ray] [--no-full-size]

(a) decode + resize to 330 px (shorter side): full decode (`images.open_image(path)`) against
    reduced-size decode (`images.open_image(path, draft_size=330)`, JPEG DCT scaling), images/s in
    one process on one core, and their ratio (target >= 3x).
(b) augment: `StyleAugmenter` (reduced decode, shrink to `max_side`, effect, JPEG encode, atomic
    write) per style at max_side 1024 and 512, images/s per core, with the effect alone on
    pre-decoded images for comparison; all five styles of one original together; the slow effects
    on one full-size scan (why images are shrunk first); and the whole `augment` job through Ray
    Data on this machine's cores.

Scans are generated with `make_scans.py` into a temporary folder unless `--scans` is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import PIL
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_scans import make_scans

from drawmatch.augment.styles import STYLES, StyleAugmenter, StyleParams, apply_style, shrink
from drawmatch.core.images import open_image
from drawmatch.data import catalogue
from drawmatch.jobs import augment
from drawmatch.jobs.augment import AugmentConfig
from drawmatch.runtime.ray_setup import RayConfig

RESIZE = 330


def resize_shorter(img: Image.Image, size: int = RESIZE) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)


def rate(fn, items: list, reps: int) -> float:  # type: ignore[no-untyped-def]
    """Items per second of `fn` over `items`, `reps` passes after one warm-up call."""
    fn(items[0])
    start = time.perf_counter()
    for _ in range(reps):
        for item in items:
            fn(item)
    return reps * len(items) / (time.perf_counter() - start)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"Pillow {PIL.__version__}, OpenCV {cv2.__version__}"
    )


def bench_decode(paths: list[Path], reps: int) -> tuple[float, float]:
    full = rate(lambda p: resize_shorter(open_image(p)), paths, reps)
    reduced = rate(lambda p: resize_shorter(open_image(p, draft_size=RESIZE)), paths, reps)
    return full, reduced


def bench_augment(paths: list[Path], max_side: int, work: Path) -> dict[str, tuple[float, float]]:
    """Per style: (StyleAugmenter images/s, effect alone images/s) at `max_side`."""
    batch = {
        "id": np.array([p.stem for p in paths], dtype=object),
        "root": np.array(["scans"] * len(paths), dtype=object),
        "path": np.array([p.name for p in paths], dtype=object),
        "collection": np.array(["drawing"] * len(paths), dtype=object),
    }
    roots = {"scans": str(paths[0].parent)}
    decoded = [shrink(np.asarray(open_image(p, draft_size=max_side)), max_side) for p in paths]
    effect_secs = {s: _effect_time(decoded, s) for s in STYLES}
    effect_secs["all5"] = sum(effect_secs.values())
    out: dict[str, tuple[float, float]] = {}
    for style in (*STYLES, "all5"):
        styles = STYLES if style == "all5" else (style,)
        aug = StyleAugmenter(styles, StyleParams(), roots, str(work / f"s{max_side}"), max_side)
        aug({k: v[:1] for k, v in batch.items()})
        start = time.perf_counter()
        res = aug(batch)
        elapsed = time.perf_counter() - start
        assert (res["status"] == "ok").all(), set(res["error"])
        out[style] = (len(paths) / elapsed, len(paths) / effect_secs[style])
    return out


def _effect_time(images: list[np.ndarray], style: str) -> float:
    start = time.perf_counter()
    for img in images:
        apply_style(img, style)
    return time.perf_counter() - start


def bench_full_size(path: Path) -> dict[str, float]:
    img = np.asarray(open_image(path))
    return {s: _effect_time([img], s) for s in STYLES}


def bench_ray_job(paths: list[Path], work: Path, cpus: int) -> tuple[int, int, float]:
    """The augment job on the given scans through Ray Data: (originals, styled images, seconds)."""
    out = work / "job"
    out.mkdir()
    rows = []
    for p in paths:
        rows.append(
            {
                "id": p.stem,
                "collection": "drawing",
                "root": "drawings",
                "path": p.name,
                "sha256": None,
                "width": None,
                "height": None,
                "status": "ok",
                "error": None,
                "parent_id": None,
                "style": "original",
                "duplicate_of": None,
                "verso": p.stem.split("_")[4] == "V",
            }
        )
    catalogue.write_catalogue(pd.DataFrame(rows), out)
    catalogue.write_roots(out, {"drawings": str(paths[0].parent)})
    config = AugmentConfig(
        out=str(out),
        select="drawings",
        batch_size=2,
        concurrency=cpus,
        ray=RayConfig(num_cpus=cpus),
    )
    import ray

    from drawmatch.runtime.ray_setup import init_ray

    init_ray(config.ray)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter()
    result = augment.run(config)
    elapsed = time.perf_counter() - start
    ray.shutdown()
    return result.inputs, result.written, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", help="folder of scan JPEGs (default: generate into a temp dir)")
    parser.add_argument("--count", type=int, default=24, help="scans to generate / use for decode")
    parser.add_argument("--reps", type=int, default=2, help="decode passes over the scans")
    parser.add_argument("--augment-count", type=int, default=8, help="scans used for augment")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data job run")
    parser.add_argument("--no-full-size", action="store_true", help="skip full-size effects")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="bench-decode-augment-") as tmp:
        work = Path(tmp)
        if args.scans:
            paths = sorted(Path(args.scans).glob("*.jpg"))[: args.count]
        else:
            t0 = time.perf_counter()
            paths = make_scans(work / "scans", args.count, seed=args.seed)
            print(f"generated {len(paths)} scans in {time.perf_counter() - t0:.1f} s")
        if not paths:
            print("no scans found", file=sys.stderr)
            return 1
        sizes = sorted({Image.open(p).size for p in paths})
        print(f"machine: {machine()}")
        print(f"scans: {len(paths)} JPEGs (q90), sizes {sizes}")
        print(f"command: python {' '.join(sys.argv)}\n")

        full, reduced = bench_decode(paths, args.reps)
        print(f"(a) decode + resize to {RESIZE} px shorter side, one process, images/s per core")
        print(f"    {'full decode':<28}{full:8.1f}")
        print(f"    {'reduced-size (draft) decode':<28}{reduced:8.1f}")
        print(f"    {'ratio':<28}{reduced / full:8.2f}x  (target >= 3x)\n")

        rectos = [p for p in paths if p.stem.split("_")[4] == "R"][: args.augment_count]
        print(
            "(b) augment per core (one process; StyleAugmenter = reduced decode + shrink + "
            "effect + JPEG q92 + atomic write), images/s"
        )
        print(f"    {'style':<16}{'max_side':>9}{'augmenter':>11}{'effect only':>13}")
        for max_side in (1024, 512):
            res = bench_augment(rectos, max_side, work)
            for style, (whole, effect) in res.items():
                label = "all 5 (orig/s)" if style == "all5" else style
                print(f"    {label:<16}{max_side:>9}{whole:>11.2f}{effect:>13.2f}")
        print("    (all 5: originals/s with all five styles written, decode shared)\n")

        if not args.no_full_size:
            secs = bench_full_size(rectos[0])
            w, h = Image.open(rectos[0]).size
            print(f"    effect alone on one full-size {w}x{h} scan, seconds per image:")
            print("    " + ", ".join(f"{s} {t:.2f}" for s, t in secs.items()) + "\n")

        if not args.no_ray:
            cpus = os.cpu_count() or 2
            n, written, secs = bench_ray_job(paths, work, cpus)
            print(
                f"(c) augment job through Ray Data, {cpus} CPUs, 5 styles, max_side 1024: "
                f"{n} originals -> {written} styled images in {secs:.1f} s "
                f"(incl. actor start-up) = {n / secs:.2f} originals/s, {written / secs:.2f} "
                "styled images/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
