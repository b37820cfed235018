"""Embed throughput on scan-sized JPEGs: the job against the bare forward, interleaved and repeated.

    python benchmarks/bench_embed.py [--count 40] [--copies 6] [--rounds 5] [--batch-size 4]
        [--runtimes torch,onnx] [--nice 0] [--candidates] [--backbone efficientnet_lite0]

Arms, each run once per round, the order rotated every round (`benchlib.run_interleaved`):

- `job <runtime>`: the whole embed job (`drawmatch.jobs.embed.run`: Ray Data decode tasks -> one
  embedding actor -> Parquet parts) over the rectos of `--count` generated 3750x2500 scans, each
  linked under `--copies` names (distinct ids, same content; every copy is decoded). Its rate is
  the steady state of that one run: the images written after the first Parquet part, over the
  time from that part's write to the last part's (file times) (start-up - Ray Data planning, actor start, model load - is left out);
- `bare <runtime>`: the same model's forward (`Embedder.embed_images`) in this process on
  pre-decoded (S, S, 3) images, same batch size and thread count;
- `naive loop`: PIL open, full decode, resize, torch forward one image at a time.

`--candidates` adds the arms that isolate the causes of a job/bare gap (see BENCHMARKS.md):
the bare forward inside a Ray actor with Ray's defaults (nice 15, torch's default inter-op
pool), at nice 0 with that pool, and with the job's settings (nice 0, 1 inter-op thread); the
job at Ray's nice 15, with 8-row Parquet parts and with 8-row blocks. The defaults here are
32-row blocks (the job's own default) and 32-row parts, so that a run of ~200 images gives the
steady state enough points (the job's default of 256 rows per part writes less often still).

Prints median, min-max and IQR per arm, the ratios of medians (and per round), the load average
before and after, the cores used by this benchmark and by other processes, and the nice level of
every process involved. Target (docs/design.md): job >= 0.80 of the bare forward.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    copies,
    loadavg,
    print_cpu_breakdown,
    print_report,
    run_interleaved,
    steady_rate_from_parts,
)
from make_scans import make_scans

from drawmatch.core.config import load_config
from drawmatch.jobs import embed, ingest
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.ingest import IngestConfig
from drawmatch.models.embedder import Embedder, ModelConfig
from drawmatch.models.preprocess import load_eval_array


def ingest_scans(scans: list[Path], work: Path) -> Path:
    """Link `scans` into their own folder under `work` and ingest them; returns the output root."""
    folder = work / "scans"
    folder.mkdir(parents=True)
    for f in scans:
        (folder / f.name).symlink_to(f.resolve())
    out = work / "out"
    ingest.run(IngestConfig(out=str(out), drawings_root=str(folder)))
    return out


def bare_rate(embedder: Embedder, pre: np.ndarray, batch_size: int) -> float:
    embedder.embed_images(pre[:batch_size])  # warm-up
    t = time.perf_counter()
    for i in range(0, len(pre), batch_size):
        embedder.embed_images(pre[i : i + batch_size])
    return len(pre) / (time.perf_counter() - t)


def _bare_actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class BareActor:
        """The bare forward inside a Ray worker process (Ray's environment: OMP_NUM_THREADS=1,
        its nice level); `interop` None leaves torch's inter-op pool as Ray gives it."""

        def __init__(self, model: dict[str, Any], threads: int, interop: int | None) -> None:
            import torch

            torch.set_num_threads(threads)
            if interop:
                torch.set_num_interop_threads(interop)
            self.embedder = Embedder(model)

        def rate(self, pre: np.ndarray, batch_size: int, nice: int) -> float:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            return bare_rate(self.embedder, pre, batch_size)

    return BareActor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="scans to generate")
    parser.add_argument("--copies", type=int, default=6, help="names per recto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="CPUs (threads) per actor")
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--nice", default="0", help="the job's nice level, or 'none' for Ray's")
    parser.add_argument("--rows-per-file", type=int, default=32)
    parser.add_argument("--decode-batch-size", type=int, default=8, help="blocks of 4x this")
    parser.add_argument("--bare-images", type=int, default=96)
    parser.add_argument("--naive-images", type=int, default=12)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=280)
    parser.add_argument("--candidates", action="store_true", help="add the diagnostic arms")
    parser.add_argument("--scans", help="folder of scans (generated if not given)")
    args = parser.parse_args(argv)

    import ray
    import torch
    from PIL import Image

    runtimes = args.runtimes.split(",")
    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="drawmatch-bench-embed-"))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        if args.scans:
            files = sorted(Path(args.scans).glob("*.jpg"))
        else:
            t0 = time.perf_counter()
            files = make_scans(work / "generated", args.count, seed=0)
            print(f"generated {len(files)} scans in {time.perf_counter() - t0:.1f} s")
        rectos = [p for p in files if p.stem.split("_")[4] == "R"]
        linked = copies(rectos, work / "copies", args.copies)
        out = ingest_scans(linked, work)
        n_job = len(linked)
        w, h = Image.open(rectos[0]).size
        print(f"{len(rectos)} rectos of {w}x{h} x {args.copies} names = {n_job} images per job run")

        nice = None if args.nice.lower() == "none" else int(args.nice)
        base = [
            f"out={out}",
            f"model.backbone={args.backbone}",
            f"model.image_size={args.image_size}",
            f"batch_size={args.batch_size}",
            f"cpus_per_actor={args.threads}",
            f"decode_batch_size={args.decode_batch_size}",
            f"rows_per_file={args.rows_per_file}",
            f"nice={'null' if nice is None else nice}",
            "collections=[drawing]",
        ]
        whole: dict[str, list[float]] = {}

        def job_arm(name: str, overrides: list[str]) -> Any:
            config = load_config(EmbedConfig, None, [*base, *overrides])

            def arm() -> float:
                shutil.rmtree(out / "embeddings", ignore_errors=True)
                t = time.perf_counter()
                result = embed.run(config)
                secs = time.perf_counter() - t
                if result.embedded != n_job:
                    raise RuntimeError(f"{name}: {result.embedded} of {n_job} embedded")
                whole.setdefault(name, []).append(n_job / secs)
                return steady_rate_from_parts(out / "embeddings")

            return arm

        pre = np.stack([load_eval_array(f, args.image_size) for f in linked[: args.bare_images]])
        torch.set_num_threads(args.threads)
        model = ModelConfig(backbone=args.backbone, image_size=args.image_size)
        bare_models = {
            rt: Embedder(asdict(ModelConfig(**{**asdict(model), "runtime": rt})), args.threads)
            for rt in runtimes
        }

        arms: dict[str, Any] = {}
        for rt in runtimes:
            arms[f"job {rt}"] = job_arm(f"job {rt}", [f"model.runtime={rt}"])
            arms[f"bare {rt}"] = lambda rt=rt: bare_rate(bare_models[rt], pre, args.batch_size)

        def naive() -> float:
            t = time.perf_counter()
            for f in rectos[: args.naive_images]:
                with Image.open(f) as img:
                    rgb = img.convert("RGB")
                arr = np.asarray(rgb.resize((args.image_size, args.image_size), Image.BILINEAR))
                bare_models[runtimes[0]].embed_images(arr[None])
            return args.naive_images / (time.perf_counter() - t)

        arms[f"naive loop ({runtimes[0]})"] = naive

        if args.candidates:
            BareActor = _bare_actor_class()
            pre_ref = ray.put(pre)
            torch_model = asdict(ModelConfig(**{**asdict(model), "runtime": "torch"}))
            ray_default = BareActor.remote(torch_model, args.threads, None)
            ray_fixed = BareActor.remote(torch_model, args.threads, 1)
            arms["bare torch in Ray actor, nice 15"] = lambda: ray.get(
                ray_default.rate.remote(pre_ref, args.batch_size, 15)
            )
            arms["bare torch in Ray actor, nice 0, interop 2"] = lambda: ray.get(
                ray_default.rate.remote(pre_ref, args.batch_size, 0)
            )
            arms["bare torch in Ray actor, nice 0"] = lambda: ray.get(
                ray_fixed.rate.remote(pre_ref, args.batch_size, 0)
            )
            arms["job torch, nice 15 (Ray's)"] = job_arm(
                "nice15", ["model.runtime=torch", "nice=15"]
            )
            arms["job torch, 8-row parts"] = job_arm(
                "parts8", ["model.runtime=torch", "rows_per_file=8"]
            )
            arms["job torch, 8-row blocks"] = job_arm(
                "blocks8", ["model.runtime=torch", "decode_batch_size=2"]
            )

        print("warm-up: one job run per runtime (worker start-up, ONNX export)", flush=True)
        for rt in runtimes:
            arms[f"job {rt}"]()
        whole.clear()
        samples = run_interleaved(arms, args.rounds)
        load_after = loadavg()
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = print_report(
        f"embed: {args.backbone} at {args.image_size} px, batch {args.batch_size}, "
        f"{args.threads} thread(s) per actor and in the bare forward, job nice {args.nice}, "
        f"decode tasks 0.5 CPU of {args.decode_batch_size} images, {n_job} images per job run, "
        f"{args.rounds} rounds",
        samples,
        [(f"job {rt} / bare {rt}", f"job {rt}", f"bare {rt}") for rt in runtimes]
        + [
            (f"bare {rt} / bare {runtimes[0]}", f"bare {rt}", f"bare {runtimes[0]}")
            for rt in runtimes[1:]
        ]
        + [
            (f"job {rt} / job {runtimes[0]}", f"job {rt}", f"job {runtimes[0]}")
            for rt in runtimes[1:]
        ]
        + [
            (f"job {rt} / naive loop", f"job {rt}", f"naive loop ({runtimes[0]})")
            for rt in runtimes
        ]
        + [
            (
                "bare in Ray actor nice 15 / nice 0",
                "bare torch in Ray actor, nice 15",
                "bare torch in Ray actor, nice 0",
            ),
            (
                "bare in Ray actor interop 1 / interop 2, nice 0",
                "bare torch in Ray actor, nice 0",
                "bare torch in Ray actor, nice 0, interop 2",
            ),
            (
                "bare in Ray actor nice 0 / bare in driver",
                "bare torch in Ray actor, nice 0",
                "bare torch",
            ),
            ("job nice 15 / job nice 0", "job torch, nice 15 (Ray's)", "job torch"),
            ("job 8-row parts / 32-row parts", "job torch, 8-row parts", "job torch"),
            ("job 8-row blocks / 32-row blocks", "job torch, 8-row blocks", "job torch"),
        ],
        load_before,
        load_after,
    )
    for name, rates in whole.items():
        print(f"  {name}: whole run incl. start-up, median {np.median(rates):.2f} images/s")
    for rt in runtimes:
        print_cpu_breakdown(samples, f"job {rt}")
        per_core = summary[f"bare {rt}"]["median"] / args.threads
        print(f"  bare {rt}: {per_core:.2f} images/s per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
