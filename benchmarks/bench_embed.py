"""Embed throughput on scan-sized JPEGs, measured side by side in one run.

1. the whole embed job (Ray Data: decode tasks -> embedding actor -> Parquet parts), steady state:
   the job runs on a small and a large set of scans, and the marginal rate
   (N_large - N_small) / (T_large - T_small) cancels start-up (actor start, model load);
2. the bare model forward on pre-decoded (S, S, 3) batches, same batch size and thread count;
3. a naive loop: PIL open, full decode, resize, forward one image at a time.

    python benchmarks/bench_embed.py [--count 120] [--batch-size 4] [--backbone efficientnet_lite0]

Target (docs/design.md): job >= 80 % of the bare forward.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from drawmatch import embed, embedder, ingest
from drawmatch.settings import EmbedConfig, IngestConfig, ModelConfig, load_config

HERE = Path(__file__).resolve().parent


def ingest_scans(scans: list[Path], work: Path) -> Path:
    """Link `scans` into their own folder under `work` and ingest them; returns the output root."""
    folder = work / "scans"
    folder.mkdir(parents=True)
    for f in scans:
        (folder / f.name).symlink_to(f)
    out = work / "out"
    ingest.run(IngestConfig(out=str(out), drawings_root=str(folder)))
    return out


def timed_embed(scans: list[Path], work: Path, overrides: list[str]) -> tuple[float, int]:
    """Ingest `scans` (linked into their own folder) and time the embed job alone."""
    out = ingest_scans(scans, work)
    config = load_config(EmbedConfig, None, [f"out={out}", *overrides])
    t = time.perf_counter()
    result = embed.run(config)
    return time.perf_counter() - t, result.embedded


def _decode_forever(files: list[Path], size: int, stop: Any) -> None:
    """Keep one core busy decoding scans, as the job's decode tasks do."""
    from drawmatch.images import open_image

    while not stop.is_set():
        for f in files:
            open_image(f, draft_size=size)
            if stop.is_set():
                return


def bare_rate(embedder: embedder.Embedder, pre: np.ndarray, batch_size: int) -> float:
    embedder.embed_images(pre[:batch_size])  # warm-up
    t = time.perf_counter()
    for i in range(0, len(pre), batch_size):
        embedder.embed_images(pre[i : i + batch_size])
    return len(pre) / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=280)
    parser.add_argument("--scans", help="folder of scans (made with make_scans.py if not given)")
    args = parser.parse_args()

    import ray
    import torch
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="drawmatch-bench-"))
    scans = Path(args.scans) if args.scans else work / "scans"
    if not args.scans:
        subprocess.run(
            [sys.executable, str(HERE / "make_scans.py"), str(scans), "--count", str(args.count)],
            check=True,
        )
    files = sorted(p for p in scans.rglob("*.jpg"))
    print(
        f"{len(files)} scans in {scans}, e.g. {files[0].name} "
        f"{Image.open(files[0]).size[0]}x{Image.open(files[0]).size[1]}"
    )
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    threads = 1
    model = ModelConfig(backbone=args.backbone, image_size=args.image_size)
    overrides = [
        f"model.backbone={args.backbone}",
        f"model.image_size={args.image_size}",
        f"batch_size={args.batch_size}",
        f"cpus_per_actor={threads}",
        "collections=[drawing]",
    ]
    timed_embed(files[:8], work / "warm-up", overrides)  # Ray Data and worker start-up, once
    small = files[: len(files) // 4]
    t_small, n_small = timed_embed(small, work / "small", overrides)
    t_large, n_large = timed_embed(files, work / "large", overrides)
    job_rate = (n_large - n_small) / (t_large - t_small)
    n_job = n_large

    torch.set_num_threads(threads)
    model_embedder = embedder.Embedder(asdict(model), num_threads=threads)
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 255, size=(n_job, args.image_size, args.image_size, 3), dtype=np.uint8)
    bare = bare_rate(model_embedder, pre, args.batch_size)
    stop = multiprocessing.Event()
    decoder = multiprocessing.Process(
        target=_decode_forever, args=(files, args.image_size, stop), daemon=True
    )
    decoder.start()
    time.sleep(1.0)
    bare_loaded = bare_rate(model_embedder, pre, args.batch_size)
    stop.set()
    decoder.join(timeout=10)

    naive_files = files[: min(len(files), 24)]
    t = time.perf_counter()
    for f in naive_files:
        with Image.open(f) as img:
            rgb = img.convert("RGB")
        arr = np.asarray(rgb.resize((args.image_size, args.image_size), Image.BILINEAR))
        model_embedder.embed_images(arr[None])
    naive_rate = len(naive_files) / (time.perf_counter() - t)

    print(
        f"\nmachine: {os.cpu_count()} CPUs; backbone {args.backbone} at {args.image_size}px, "
        f"batch {args.batch_size}, {threads} torch thread(s) per embedding actor"
    )
    print(f"{'what':<44}{'images/s':>10}")
    print(f"{'embed job, steady state (marginal)':<44}{job_rate:>10.2f}")
    print(f"{'embed job, whole run incl. start-up':<44}{n_large / t_large:>10.2f}")
    print(f"{'bare forward on pre-decoded batches':<44}{bare:>10.2f}")
    print(f"{'  same, while another process decodes scans':<44}{bare_loaded:>10.2f}")
    print(f"{'naive loop (full decode, batch 1)':<44}{naive_rate:>10.2f}")
    print(f"job / bare forward: {job_rate / bare:.2f}  (target >= 0.80)")
    print(f"job / bare forward beside a decoding process: {job_rate / bare_loaded:.2f}")
    print(f"job / naive loop:   {job_rate / naive_rate:.2f}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
