"""Batch verified search as a Ray job: drawings per second with 1 and 2 search actors,
interleaved and repeated.

    python benchmarks/bench_batch_search.py [--copies 4] [--rounds 3] [--mode verified]
        [--verify-top 500] [--rows-per-file 4] [--ray-cpus N]

The gallery: the bundled demo data (337 real artworks, their SIFT features from the regions job
at its defaults: 800 px, at most 2,000 keypoints); the queries: the 30 bundled drawings copied
under `--copies` names each (distinct ids, same content: every copy is decoded and verified).
The embeddings come from the tiny random backbone: in verified mode with `verify_top` at least the
gallery every artwork is verified whatever the embeddings, so the cost per drawing is the real
one (query SIFT at 400 px, RANSAC against every artwork's features).

Arms (`benchlib.run_interleaved`, the order rotated every round): `1 actor` and `2 actors`, the
whole `drawmatch search batch=true` job each time from scratch (parts removed). The rate is the
steady state of the run: drawings written after the first part over the time from that part's
write to the last part's (file times), so Ray start-up and the actors' loading of the index and
local features are left out; that loading is printed apart, from the first part's time.

A local Ray instance of `--ray-cpus` logical CPUs (default: the machine's cores + 1, so that two
one-CPU actors and the light decode and write tasks fit on a 2-core machine; the actors' work is
what the cores share). Prints median, min-max and IQR per arm, the ratio of medians and per round,
the load average before and after, and the cores this benchmark and other processes used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from benchlib import loadavg, print_report, run_interleaved

from drawmatch.core.config import load_config
from drawmatch.jobs import embed, index, regions, search
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.jobs.search import SearchConfig
from drawmatch.runtime.ray_setup import RayConfig
from drawmatch.workflows.demo import ingest_data

DEMO = Path(__file__).resolve().parents[1] / "drawmatch" / "demo_data"


def build_root(work: Path, copies: int) -> tuple[Path, int]:
    """The demo artworks and `copies` copies of each demo drawing, through ingest, embed (tiny
    random backbone), index and regions; the output root and the number of drawings."""
    data = work / "data"
    (data / "drawings").mkdir(parents=True)
    (data / "artworks").symlink_to(DEMO / "artworks")
    (data / "artworks.csv").symlink_to(DEMO / "artworks.csv")
    drawings = sorted((DEMO / "drawings").glob("*.jpg"))
    for k in range(copies):
        for f in drawings:
            shutil.copyfile(f, data / "drawings" / f"c{k}_{f.name}")  # ingest refuses links out
    out = work / "out"
    ingest_data(data, str(out), RayConfig())
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=64"]
    embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny]))
    index.run(IndexConfig(out=str(out)))
    regions.run(RegionsConfig(out=str(out), region_size=64))
    return out, copies * len(drawings)


def part_times(directory: Path) -> list[tuple[int, int]]:
    """(write time in ns, drawings) of every part of a batch search, oldest first."""
    parts = []
    for p in directory.glob("part-*.parquet"):
        ids = pq.read_table(p, columns=["drawing_id"]).column("drawing_id").to_pylist()
        parts.append((p.stat().st_mtime_ns, len(set(ids))))
    return sorted(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="names per demo drawing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", default="verified", choices=("region", "fused", "verified"))
    parser.add_argument("--verify-top", type=int, default=500)
    parser.add_argument("--rows-per-file", type=int, default=4, help="drawings per part")
    parser.add_argument("--ray-cpus", type=int, default=(os.cpu_count() or 1) + 1)
    args = parser.parse_args(argv)

    import ray

    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="drawmatch-bench-batch-search-"))
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    loading: dict[str, list[float]] = {}
    try:
        out, n = build_root(work, args.copies)
        target = work / "topk.parquet"
        parts = Path(f"{target}.parts")
        print(f"{n} drawings against 337 artworks, mode {args.mode}, verify_top {args.verify_top}")

        def arm(actors: int):  # type: ignore[no-untyped-def]
            config = load_config(
                SearchConfig,
                None,
                [f"out={out}", "batch=true", f"mode={args.mode}", f"batch_output={target}"]
                + [f"region.verify_top={args.verify_top}", f"num_actors={actors}"]
                + [f"rows_per_file={args.rows_per_file}", "batch_size=1", "decode_batch_size=1"]
                + ["decode_cpus=0.25"],
            )

            def run() -> float:
                shutil.rmtree(parts, ignore_errors=True)
                start = time.time_ns()
                search.run(config)
                times = part_times(parts)
                if sum(k for _, k in times) != n or len(times) < 3:
                    raise RuntimeError(f"{len(times)} parts of {sum(k for _, k in times)} drawings")
                loading.setdefault(f"{actors}", []).append((times[0][0] - start) / 1e9)
                drawings = sum(k for _, k in times[1:])
                return drawings / ((times[-1][0] - times[0][0]) / 1e9)

            return run

        arms = {"1 actor": arm(1), "2 actors": arm(2)}
        print("warm-up: one run with 1 actor (worker start-up)", flush=True)
        arms["1 actor"]()
        loading.clear()
        samples = run_interleaved(arms, args.rounds)
        load_after = loadavg()
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print_report(
        f"batch search ({args.mode}, verify_top {args.verify_top}): {n} drawings x 337 "
        f"artworks, one CPU (one thread) per actor, parts of {args.rows_per_file} drawings, "
        f"Ray with {args.ray_cpus} logical CPUs, {args.rounds} rounds",
        samples,
        [("2 actors / 1 actor", "2 actors", "1 actor")],
        load_before,
        load_after,
        unit="drawings/s",
    )
    for actors, secs in loading.items():
        print(f"  start to first part, {actors} actor(s): {', '.join(f'{s:.1f}' for s in secs)} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
