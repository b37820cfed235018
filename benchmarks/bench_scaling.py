"""Throughput of the embed and augment jobs with 1 and 2 CPU workers, side by side in one run.

    python benchmarks/bench_scaling.py [--count 96] [--copies 6] [--augment-count 32]
                                       [--cpus-per-actor 0.75] [--decode-batch-size 2]
                                       [--rounds 3] [--no-reference]

Both jobs run for real (`drawmatch.jobs.embed.run`, `drawmatch.jobs.augment.run`) on a local Ray instance
with 2 CPUs, on scan-sized JPEGs made with `make_scans.py` (3750x2500, JPEG q90):

- embed: EfficientNet-Lite0 (ImageNet weights) at 280 px, batch 4, `collections=[drawing]`,
  one torch thread per embedding actor; 1 worker = `num_actors=1`, 2 workers = `num_actors=2`,
  both with `cpus_per_actor` from `--cpus-per-actor`. Images: the rectos of `--count` scans
  (versos are never embedded), each linked under `--copies` names (distinct ids, same content:
  the job decodes and embeds every copy). An embed run's start-up takes ~10 s here and varies by
  seconds, so the runs need several hundred images for the marginal rate to settle.
  Decode tasks reserve `decode_cpus` 0.5 each: with 2 actors of 1 CPU on 2 CPUs no decode task
  can ever be scheduled and the job waits forever, so the default is 0.75 (2 x 0.75 + one 0.5
  decode task = 2). The job cuts its input into blocks of 4 x `decode_batch_size` rows and an
  embedding actor takes a whole block at a time; with the job's default 8 (32-row blocks) a run
  of 80 images is 3 blocks and the second actor idles for a third of it, a tail that vanishes on
  a real collection but dominates a short run. The default here is 2 (8-row blocks), and the
  small and large runs hold an even number of blocks, so both actors get the same share.
- augment: `select=drawings`, all five styles, `max_side` 1024, `batch_size` 2, on
  `--augment-count` distinct rectos (the job skips content duplicates, so no copies here; with 16
  the 2-worker marginal rests on ~7 s of work and swings by tens of percent); 1 worker =
  `concurrency=1`, 2 workers = `concurrency=2` (the job gives each actor one CPU).
- reference (skip with `--no-reference`): the same work in 1 and in 2 plain processes without
  Ray, one thread each: the bare forward on pre-decoded (280, 280, 3) batches of 4, and the
  `StyleAugmenter` stage (5 styles) called directly; what 2 workers could give on this machine.

Every configuration is an arm of `benchlib.run_interleaved`: each round runs every arm once, in
an order rotated every round, for `--rounds` rounds, so that the machine's busy moments (it is
shared) hit all arms alike. A job's rate is the steady state of one run on a fresh copy of the
ingested output root: the outputs written after the first one, over the time from the first
output file to the last (file times: embed's Parquet parts of 8 rows, augment's styled images),
so start-up (Ray Data planning, actor start, model load) is left out. Prints, per arm, the
median, min-max and IQR, the cores this benchmark and other processes used, the nice level of
every process involved, the load average before and after, the 2-worker / 1-worker ratio of
medians (with its per-round spread), and what the figures imply for 8- and 16-vCPU CPU nodes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import bare_rate, ingest_scans
from benchlib import (
    copies,
    loadavg,
    print_cpu_breakdown,
    print_report,
    run_interleaved,
    steady_rate_from_parts,
)
from make_scans import make_scans

from drawmatch.augment.styles import STYLES, StyleParams
from drawmatch.core.config import load_config
from drawmatch.jobs import augment, embed
from drawmatch.jobs.augment import AugmentConfig
from drawmatch.jobs.embed import EmbedConfig

WORKERS = (1, 2)
NODE_VCPUS = (8, 16)


def steady_rate_from_styled(out: Path, styles: int) -> float:
    """Originals per second of an augment run from its styled files' times (all styles of an
    original are written together): originals after the first, over first-to-last time."""
    times = sorted(p.stat().st_mtime_ns for p in (out / "styled").rglob("*.jpg"))
    if len(times) < 3 * styles:
        raise RuntimeError(f"only {len(times)} styled files: use more originals")
    originals = len(times) / styles
    return (originals - 1) / ((times[-1] - times[styles - 1]) / 1e9)


def _plain_worker(kind: str, arg: Any, out_dir: str, queue: Any) -> None:
    """One plain process, one thread: embed = bare forward on `arg` random pre-decoded images,
    augment = the StyleAugmenter stage over the files `arg`; puts its rate on `queue`."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    if kind == "embed":
        from drawmatch.models.embedder import Embedder, ModelConfig

        embedder = Embedder(asdict(ModelConfig()), num_threads=1)
        pre = np.random.default_rng(0).integers(0, 255, (arg, 280, 280, 3), dtype=np.uint8)
        queue.put(bare_rate(embedder, pre, 4))
        return
    from drawmatch.augment.styles import StyleAugmenter

    files: list[Path] = arg
    batch = {
        "id": np.array([p.stem for p in files], dtype=object),
        "root": np.array(["scans"] * len(files), dtype=object),
        "path": np.array([p.name for p in files], dtype=object),
        "collection": np.array(["drawing"] * len(files), dtype=object),
    }
    aug = StyleAugmenter(STYLES, StyleParams(), {"scans": str(files[0].parent)}, out_dir, 1024)
    aug({k: v[:1] for k, v in batch.items()})  # warm-up
    t = time.perf_counter()
    aug(batch)
    queue.put(len(files) / (time.perf_counter() - t))


def plain_rate(kind: str, arg: Any, work: Path, n: int) -> float:
    """Total rate of `n` plain processes doing the same work side by side."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_plain_worker, args=(kind, arg, str(work / f"plain-{n}-{i}"), queue))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    shutil.rmtree(work, ignore_errors=True)
    return float(sum(rates))


def print_nodes(summary: dict[str, dict[str, float]]) -> None:
    print("\nPer core and per node (CPU only), from the medians, assuming the 2-core figure holds:")
    print("  node rate = vCPUs x (2-worker rate) / 2")
    rows = (
        ("embed, decode + EfficientNet-Lite0 280 px", "images/s", "embed"),
        ("augment, 5 styles at max_side 1024", "originals/s", "augment"),
    )
    head = "".join(f"{f'{c} vCPU':>10}" for c in NODE_VCPUS)
    print(f"  {'job':<44}{'unit':<13}{'1 worker':>10}{'per core@2':>12}{head}")
    for label, unit, kind in rows:
        one, two = summary[f"{kind} job, 1 worker"], summary[f"{kind} job, 2 workers"]
        per_core = two["median"] / 2
        nodes = "".join(f"{c * per_core:>10.1f}" for c in NODE_VCPUS)
        print(f"  {label:<44}{unit:<13}{one['median']:>10.2f}{per_core:>12.2f}{nodes}")


def round_down(n: int, step: int) -> int:
    return max(step, n // step * step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=96, help="scans for the embed runs")
    parser.add_argument("--copies", type=int, default=6, help="embed each recto this often")
    parser.add_argument("--augment-count", type=int, default=32, help="originals for augment")
    parser.add_argument("--cpus-per-actor", type=float, default=0.75, help="embedding actors")
    parser.add_argument("--batch-size", type=int, default=4, help="embedding batch size")
    parser.add_argument("--decode-batch-size", type=int, default=2, help="embed blocks: 4x this")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true", help="skip the plain processes")
    args = parser.parse_args(argv)

    import ray

    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        # enough scans for the augment originals too (one scan in six is a verso)
        n_scans = max(args.count, -(-args.augment_count * 6 // 5) + 1)
        t0 = time.perf_counter()
        files = make_scans(work / "scans", n_scans, seed=args.seed)
        print(f"generated {len(files)} scans in {time.perf_counter() - t0:.1f} s")
        all_rectos = [p for p in files if p.stem.split("_")[4] == "R"]
        # whole blocks, an even number of them, so that two actors get the same share
        pair = 2 * 4 * args.decode_batch_size
        embed_rectos = [p for p in files[: args.count] if p in all_rectos]
        embed_all = copies(embed_rectos, work / "copies", args.copies)
        embed_files = embed_all[: round_down(len(embed_all), pair)]
        rectos = all_rectos[: round_down(args.augment_count, 4)]
        bases = {
            "embed": ingest_scans(embed_files, work / "embed-base"),
            "augment": ingest_scans(rectos, work / "augment-base"),
        }
        runs = iter(range(10**6))

        def fresh(kind: str) -> Path:
            out = work / f"{kind}-run-{next(runs)}"
            shutil.copytree(bases[kind], out)
            return out

        def embed_arm(w: int) -> Any:
            overrides = [
                "model.backbone=efficientnet_lite0",
                "model.image_size=280",
                f"batch_size={args.batch_size}",
                f"decode_batch_size={args.decode_batch_size}",
                "rows_per_file=8",
                f"num_actors={w}",
                f"cpus_per_actor={args.cpus_per_actor}",
                "collections=[drawing]",
            ]

            def arm() -> float:
                out = fresh("embed")
                config = load_config(EmbedConfig, None, [f"out={out}", *overrides])
                result = embed.run(config)
                if result.embedded != len(embed_files):
                    raise RuntimeError(f"embed: {result.embedded} of {len(embed_files)}")
                rate = steady_rate_from_parts(out / "embeddings")
                shutil.rmtree(out, ignore_errors=True)
                return rate

            return arm

        def augment_arm(w: int) -> Any:
            overrides = ["select=drawings", "max_side=1024", "batch_size=2", f"concurrency={w}"]

            def arm() -> float:
                out = fresh("augment")
                config = load_config(AugmentConfig, None, [f"out={out}", *overrides])
                result = augment.run(config)
                if result.errors or result.written != result.inputs * len(config.styles):
                    raise RuntimeError(f"augment wrote {result.written} of {result.inputs} x 5")
                rate = steady_rate_from_styled(out, len(config.styles))
                shutil.rmtree(out, ignore_errors=True)
                return rate

            return arm

        arms: dict[str, Any] = {}
        for w in WORKERS:
            s = "" if w == 1 else "s"
            arms[f"embed job, {w} worker{s}"] = embed_arm(w)
            arms[f"augment job, {w} worker{s}"] = augment_arm(w)
            if not args.no_reference:
                arms[f"embed plain, {w} process{'es' if w > 1 else ''}"] = lambda w=w: plain_rate(
                    "embed", 96, work / "plain", w
                )
                arms[f"augment plain, {w} process{'es' if w > 1 else ''}"] = lambda w=w: plain_rate(
                    "augment", rectos[:6], work / "plain", w
                )
        print("warm-up: one run of each job configuration", flush=True)
        for name, arm in arms.items():
            if " job, " in name:
                arm()
        samples = run_interleaved(arms, args.rounds)
        load_after = loadavg()
        ray.shutdown()

    ratios = [
        (f"{k} job: 2 workers / 1 worker", f"{k} job, 2 workers", f"{k} job, 1 worker")
        for k in ("embed", "augment")
    ]
    if not args.no_reference:
        for k in ("embed", "augment"):
            ratios += [
                (f"{k} plain: 2 / 1 processes", f"{k} plain, 2 processes", f"{k} plain, 1 process"),
                (f"{k} job / plain, 1 worker", f"{k} job, 1 worker", f"{k} plain, 1 process"),
                (f"{k} job / plain, 2 workers", f"{k} job, 2 workers", f"{k} plain, 2 processes"),
            ]
    summary = print_report(
        f"scaling: embed (EfficientNet-Lite0 280 px, batch {args.batch_size}, 1 torch thread and "
        f"{args.cpus_per_actor} CPU per actor, decode tasks 0.5 CPU of {args.decode_batch_size} "
        f"images, {len(embed_files)} images) and augment (5 styles, max_side 1024, batch 2, "
        f"{len(rectos)} originals; rates in originals/s), {args.rounds} rounds",
        samples,
        ratios,
        load_before,
        load_after,
        unit="rate",
    )
    for name in arms:
        if " job, " in name:
            print_cpu_breakdown(samples, name)
    print_nodes(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
