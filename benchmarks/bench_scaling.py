"""Throughput of the embed and augment jobs with 1 and 2 CPU workers, side by side in one run.

    python benchmarks/bench_scaling.py [--count 96] [--copies 6] [--augment-count 32]
                                       [--cpus-per-actor 0.75] [--decode-batch-size 2]
                                       [--no-reference]

Both jobs run for real (`drawmatch.embed.run`, `drawmatch.augment.run`) on a local Ray instance
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

Each rate is a steady-state marginal rate, as in `bench_embed.py`: every configuration runs on a
quarter of the images and on all of them, and (N_large - N_small) / (T_large - T_small) cancels
start-up (Ray Data planning, actor start, model load). A warm-up run of each configuration first
starts Ray's worker processes. Prints images/s (embed) and originals/s (augment) per
configuration, the 2-worker / 1-worker ratio, the scaling efficiency (ratio / 2) and what the
figures imply for 8- and 16-vCPU CPU nodes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode_augment import machine
from bench_embed import bare_rate, ingest_scans, timed_embed
from make_scans import make_scans

from drawmatch import augment
from drawmatch.settings import STYLES, AugmentConfig, StyleParams, load_config

WORKERS = (1, 2)
NODE_VCPUS = (8, 16)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine from /proc/stat, in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def timed_augment(scans: list[Path], work: Path, overrides: list[str]) -> tuple[float, int]:
    """Ingest `scans` (linked into their own folder) and time the augment job alone:
    (seconds, originals augmented)."""
    out = ingest_scans(scans, work)
    config = load_config(AugmentConfig, None, [f"out={out}", *overrides])
    t = time.perf_counter()
    result = augment.run(config)
    elapsed = time.perf_counter() - t
    if result.errors or result.written != result.inputs * len(config.styles):
        raise RuntimeError(f"augment wrote {result.written} of {result.inputs} x 5: {result}")
    return elapsed, result.inputs


Timer = Callable[[list[Path], Path, list[str]], tuple[float, int]]


def marginal_rates(
    name: str,
    timer: Timer,
    files: list[Path],
    n_small: int,
    work: Path,
    configs: dict[int, list[str]],
) -> dict[int, dict[str, float]]:
    """Per number of workers: the steady-state marginal rate, the whole-run rate of the large run
    and the machine's busy cores during the large run. Small and large runs of the
    configurations are interleaved so that a change in the machine's load hits all of them."""
    for w, overrides in configs.items():  # warm-up: Ray Data, worker processes
        timer(files[: max(2, len(files) // 8)], work / f"{name}-warm-{w}", overrides)
    if n_small >= len(files):
        raise SystemExit(f"{name}: {len(files)} images are too few for a small and a large run")
    small = files[:n_small]
    runs: dict[tuple[int, str], tuple[float, int, float]] = {}
    for label, subset in (("small", small), ("large", files)):
        for w, overrides in configs.items():
            busy0, total0 = cpu_jiffies()
            secs, n = timer(subset, work / f"{name}-{label}-{w}", overrides)
            busy1, total1 = cpu_jiffies()
            cores = (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)
            runs[(w, label)] = (secs, n, cores)
            print(f"[{name}] {w} worker(s), {label}: {n} in {secs:.2f} s", flush=True)
    out: dict[int, dict[str, float]] = {}
    for w in configs:
        t_small, n_small, _ = runs[(w, "small")]
        t_large, n_large, cores = runs[(w, "large")]
        out[w] = {
            "rate": (n_large - n_small) / (t_large - t_small),
            "whole": n_large / t_large,
            "n_small": n_small,
            "n_large": n_large,
            "t_small": t_small,
            "t_large": t_large,
            "cores": cores,
        }
    return out


def _plain_worker(kind: str, arg: Any, out_dir: str, queue: Any) -> None:
    """One plain process, one thread: embed = bare forward on `arg` random pre-decoded images,
    augment = the StyleAugmenter stage over the files `arg`; puts its rate on `queue`."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    if kind == "embed":
        from drawmatch.embedder import Embedder
        from drawmatch.settings import ModelConfig

        embedder = Embedder(asdict(ModelConfig()), num_threads=1)
        pre = np.random.default_rng(0).integers(0, 255, (arg, 280, 280, 3), dtype=np.uint8)
        queue.put(bare_rate(embedder, pre, 4))
        return
    from drawmatch.styles import StyleAugmenter

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


def plain_rates(kind: str, arg: Any, work: Path) -> dict[int, float]:
    """Total rate of 1 and of 2 plain processes doing the same work side by side."""
    ctx = multiprocessing.get_context("spawn")
    out: dict[int, float] = {}
    for n in WORKERS:
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
        out[n] = sum(rates)
    return out


def print_table(title: str, unit: str, res: dict[int, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(
        f"  {'workers':<8}{unit + ' (steady)':>20}{'whole run':>11}"
        f"{'small run':>16}{'large run':>16}{'cores busy':>12}"
    )
    for w, r in res.items():
        print(
            f"  {w:<8}{r['rate']:>20.2f}{r['whole']:>11.2f}"
            f"{int(r['n_small']):>6} in {r['t_small']:>5.1f}s{int(r['n_large']):>6} in "
            f"{r['t_large']:>5.1f}s{r['cores']:>12.2f}"
        )
    ratio = res[2]["rate"] / res[1]["rate"]
    print(f"  2 workers / 1 worker: {ratio:.2f}x, scaling efficiency {ratio / 2:.0%}")


def print_reference(
    plain: dict[str, dict[int, float]], jobs: dict[str, dict[int, dict[str, float]]]
) -> None:
    print("\nReference: the same work in plain processes (no Ray, no decode for embed), total rate")
    print(f"  {'work':<44}{'1 process':>10}{'2 processes':>13}{'ratio':>7}{'job/plain 1, 2':>17}")
    labels = {
        "embed": "bare forward, pre-decoded batches of 4",
        "augment": "StyleAugmenter stage, 5 styles",
    }
    for kind, rates in plain.items():
        job = jobs[kind]
        print(
            f"  {labels[kind]:<44}{rates[1]:>10.2f}{rates[2]:>13.2f}{rates[2] / rates[1]:>7.2f}"
            f"{job[1]['rate'] / rates[1]:>11.2f}, {job[2]['rate'] / rates[2]:.2f}"
        )


def print_nodes(
    embed_res: dict[int, dict[str, float]], aug_res: dict[int, dict[str, float]]
) -> None:
    print("\nPer core and per node (CPU only), assuming the measured scaling efficiency holds:")
    print("  node rate = vCPUs x (1-worker rate) x efficiency = vCPUs x (2-worker rate) / 2")
    rows = (
        ("embed, decode + EfficientNet-Lite0 280 px", "images/s", embed_res),
        ("augment, 5 styles at max_side 1024", "originals/s", aug_res),
    )
    head = "".join(f"{f'{c} vCPU':>10}" for c in NODE_VCPUS)
    print(f"  {'job':<44}{'unit':<13}{'1 worker':>10}{'per core@2':>12}{head}")
    for label, unit, res in rows:
        per_core = res[2]["rate"] / 2
        nodes = "".join(f"{c * per_core:>10.1f}" for c in NODE_VCPUS)
        print(f"  {label:<44}{unit:<13}{res[1]['rate']:>10.2f}{per_core:>12.2f}{nodes}")


def copies(files: list[Path], folder: Path, n: int) -> list[Path]:
    """`n` links to each IMAJ-named file under distinct names (a digit appended to the uid), in
    `n` rounds over `files`."""
    if not 1 <= n <= 10:
        raise ValueError("copies: 1 to 10")
    folder.mkdir(parents=True)
    out = []
    for k in range(n):
        for f in files:
            parts = f.name.split("_")
            parts[2] += str(k)
            link = folder / "_".join(parts)
            link.symlink_to(f)
            out.append(link)
    return out


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true", help="skip the plain processes")
    args = parser.parse_args(argv)

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        # enough scans for the augment originals too (one scan in six is a verso)
        n_scans = max(args.count, -(-args.augment_count * 6 // 5) + 1)
        t0 = time.perf_counter()
        files = make_scans(work / "scans", n_scans, seed=args.seed)
        print(f"generated {len(files)} scans in {time.perf_counter() - t0:.1f} s")
        all_rectos = [p for p in files if p.stem.split("_")[4] == "R"]
        # whole blocks, an even number of them in the small (about a quarter) and the large run;
        # the embed job makes blocks of 4 x decode_batch_size rows, augment of batch_size (2)
        pair = 2 * 4 * args.decode_batch_size
        embed_rectos = [p for p in files[: args.count] if p in all_rectos]
        embed_all = copies(embed_rectos, work / "copies", args.copies)
        embed_files = embed_all[: round_down(len(embed_all), pair)]
        rectos = all_rectos[: round_down(args.augment_count, 4)]

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        load = os.getloadavg()

        embed_configs = {
            w: [
                "model.backbone=efficientnet_lite0",
                "model.image_size=280",
                f"batch_size={args.batch_size}",
                f"decode_batch_size={args.decode_batch_size}",
                f"num_actors={w}",
                f"cpus_per_actor={args.cpus_per_actor}",
                "collections=[drawing]",
            ]
            for w in WORKERS
        }
        aug_configs = {
            w: ["select=drawings", "max_side=1024", "batch_size=2", f"concurrency={w}"]
            for w in WORKERS
        }
        embed_small = round_down(len(embed_files) // 4, pair)
        embed_res = marginal_rates(
            "embed", timed_embed, embed_files, embed_small, work, embed_configs
        )
        aug_small = round_down(len(rectos) // 4, 4)
        aug_res = marginal_rates("augment", timed_augment, rectos, aug_small, work, aug_configs)
        ray.shutdown()
        plain: dict[str, dict[int, float]] = {}
        if not args.no_reference:
            plain["embed"] = plain_rates("embed", 96, work)
            plain["augment"] = plain_rates("augment", rectos[:6], work)
        load_end = os.getloadavg()

    print(f"\nmachine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(
        "load average (1/5/15 min) at start "
        + "/".join(f"{x:.2f}" for x in load)
        + ", at end "
        + "/".join(f"{x:.2f}" for x in load_end)
        + "; 'cores busy': the whole machine's busy cores during the large run, all processes"
    )
    print_table(
        f"embed job: EfficientNet-Lite0 280 px, batch {args.batch_size}, 1 torch thread and "
        f"{args.cpus_per_actor} CPU per actor, decode tasks 0.5 CPU of "
        f"{args.decode_batch_size} images, {len(embed_rectos)} rectos x {args.copies}",
        "images/s",
        embed_res,
    )
    print_table(
        f"augment job: 5 styles, max_side 1024, batch 2, 1 CPU per actor, {len(rectos)} originals",
        "originals/s",
        aug_res,
    )
    if plain:
        print_reference(plain, {"embed": embed_res, "augment": aug_res})
    print_nodes(embed_res, aug_res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
