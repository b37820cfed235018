"""GPU embedding: CPU decode tasks + GPU embedding actors against the bare GPU forward.

    python benchmarks/bench_gpu.py [--count 48] [--images 4000] [--backbone resnext101_32x8d]
        [--batch-size 64] [--decode-cpus 1] [--rounds 3] [--budget-s 480]

For a GPU node of a cluster (one or more CUDA GPUs); refuses to run without one. In under ten
minutes it generates scan-sized JPEGs (`make_scans.py`, 3750x2500, JPEG q90; the rectos linked
under many names, distinct ids), then runs, interleaved and repeated (`benchlib`):

- `job`: the embed job (`drawmatch.jobs.embed.run`) with one embedding actor per GPU
  (`gpus_per_actor=1`) and CPU decode tasks (`decode_cpus` each) on the node's other CPUs;
  steady-state rate from the Parquet parts' times (start-up left out);
- `bare fp32`: the Embedder's own forward on pre-decoded (S, S, 3) uint8 batches already on the
  host, copy to the GPU included, at the same batch size, per GPU (what the job's actors run);
- `bare bf16 channels_last`: the same forward under bfloat16 autocast with channels_last
  weights and inputs (what a bf16 GPU path could reach);
- `decode, one core`: reduced-size decode + resize (`decode_batch`) in one process, one thread.

Prints per arm the median, min-max and IQR, the job / bare ratio (target >= 0.80; on a GPU
node the job should also beat a naive per-image loop many times over), the GPUs' busy share
during the job (nvidia-smi, else torch.cuda.utilization), the CPU cores the decode tasks used,
and the cores of decode one GPU needs at the bare forward's rate (bare rate / decode rate per
core). Random weights (nothing is downloaded); the rates do not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import ingest_scans
from benchlib import copies, loadavg, print_cpu_breakdown, print_report, run_interleaved
from benchlib import steady_rate_from_parts as parts_rate
from make_scans import make_scans


class GpuBusy:
    """Samples the GPUs' utilisation (percent of time a kernel ran) every 0.2 s while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.smi = shutil.which("nvidia-smi")
        self.enabled = True

    def _read(self) -> float | None:
        if self.smi:
            try:
                out = subprocess.run(
                    [self.smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                values = [float(x) for x in out.split()]
                return float(np.mean(values)) if values else None
            except (OSError, ValueError, subprocess.SubprocessError):
                return None
        try:
            import torch

            return float(torch.cuda.utilization())
        except Exception:  # noqa: BLE001  (pynvml missing or no permission)
            return None

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            value = self._read() if self.enabled else None
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> GpuBusy:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def share(self) -> float | None:
        return float(np.mean(self.samples)) / 100.0 if self.samples else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48, help="scans to generate")
    parser.add_argument("--images", type=int, default=4000, help="images per job run")
    parser.add_argument("--backbone", default="resnext101_32x8d")
    parser.add_argument("--image-size", type=int, default=280)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-cpus", type=float, default=1.0)
    parser.add_argument("--decode-batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=480, help="stop adding rounds after")
    parser.add_argument(
        "--plumbing-check-on-cpu",
        action="store_true",
        help="run every step on CPU (tiny settings advised) to check the script; no GPU figures",
    )
    args = parser.parse_args(argv)

    import torch

    on_cpu = args.plumbing_check_on_cpu
    if not torch.cuda.is_available() and not on_cpu:
        print(
            "bench_gpu.py needs a CUDA GPU and found none (torch.cuda.is_available() is False): "
            "run it on a GPU node of the cluster; for CPUs use bench_embed.py",
            file=sys.stderr,
        )
        return 2
    import ray

    from drawmatch.core.config import load_config
    from drawmatch.jobs import embed
    from drawmatch.jobs.embed import EmbedConfig, decode_batch
    from drawmatch.models.embedder import Embedder, ModelConfig
    from drawmatch.models.preprocess import normalise

    t_start = time.perf_counter()
    n_gpus = 0 if on_cpu else torch.cuda.device_count()
    device = "cpu" if on_cpu else "cuda"
    sync = (lambda: None) if on_cpu else torch.cuda.synchronize
    n_cpus = os.cpu_count() or 1
    load_before = loadavg()
    work = Path(tempfile.mkdtemp(prefix="drawmatch-bench-gpu-"))
    ray.init(
        address="local",  # its own instance, even on a node of a running cluster
        num_cpus=n_cpus,
        num_gpus=n_gpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        files = make_scans(work / "generated", args.count, seed=0)
        rectos = [p for p in files if p.stem.split("_")[4] == "R"]
        n_copies = max(1, -(-args.images // len(rectos)))
        linked = copies(rectos, work / "copies", n_copies)[: args.images]
        out = ingest_scans(linked, work)
        print(
            f"{len(rectos)} generated rectos (3750x2500) x {n_copies} names: {len(linked)} images "
            f"per job run; {n_gpus} GPU(s) {'' if on_cpu else torch.cuda.get_device_name(0)}, "
            f"{n_cpus} CPUs; "
            f"set-up {time.perf_counter() - t_start:.0f} s",
            flush=True,
        )
        model = ModelConfig(backbone=args.backbone, pretrained=False, image_size=args.image_size)
        overrides = [
            f"out={out}",
            f"model.backbone={args.backbone}",
            "model.pretrained=false",
            f"model.image_size={args.image_size}",
            f"batch_size={args.batch_size}",
            f"num_actors={max(1, n_gpus)}",
            f"gpus_per_actor={0 if on_cpu else 1}",
            "cpus_per_actor=1",
            f"decode_cpus={args.decode_cpus}",
            f"decode_batch_size={args.decode_batch_size}",
            f"rows_per_file={args.batch_size * 2}",
            "collections=[drawing]",
        ]
        config = load_config(EmbedConfig, None, overrides)
        busy: list[float] = []

        def job() -> float:
            shutil.rmtree(out / "embeddings", ignore_errors=True)
            with GpuBusy() as gpu:
                gpu.enabled = not on_cpu
                result = embed.run(config)
            if result.embedded != len(linked):
                raise RuntimeError(f"job embedded {result.embedded} of {len(linked)}")
            if gpu.share is not None:
                busy.append(gpu.share)
            return parts_rate(out / "embeddings")

        n_pre = min(256, len(linked))
        pre = np.stack(
            decode_batch(
                {
                    "id": np.array([p.stem for p in linked[:n_pre]], dtype=object),
                    "root": np.array(["drawings"] * n_pre, dtype=object),
                    "path": np.array([p.name for p in linked[:n_pre]], dtype=object),
                    "sha256": np.array([""] * n_pre, dtype=object),
                },
                {"drawings": str(work / "scans")},
                args.image_size,
                200_000_000,
            )["image"]
        )
        embedder = Embedder(asdict(model))
        net_cl = embedder.net.to(memory_format=torch.channels_last)

        def bare(bf16: bool) -> float:
            steps = max(8, 1024 // args.batch_size)
            batches = [
                pre[(i * args.batch_size) % n_pre :][: args.batch_size] for i in range(steps)
            ]
            batches = [b for b in batches if len(b) == args.batch_size] or [pre[: args.batch_size]]

            def one(b: np.ndarray) -> None:
                if not bf16:
                    embedder.embed_images(b)
                    return
                with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
                    x = normalise(b, embedder.mean, embedder.std, device)
                    x = x.contiguous(memory_format=torch.channels_last)
                    torch.nn.functional.normalize(net_cl(x).float(), dim=1).cpu()

            one(batches[0])
            sync()
            t = time.perf_counter()
            for b in batches:
                one(b)
            sync()
            return len(batches) * args.batch_size / (time.perf_counter() - t)

        roots = {"drawings": str(work / "scans")}

        def decode_one_core() -> float:
            names = linked[:64]
            batch = {
                "id": np.array([p.stem for p in names], dtype=object),
                "root": np.array(["drawings"] * len(names), dtype=object),
                "path": np.array([p.name for p in names], dtype=object),
                "sha256": np.array([""] * len(names), dtype=object),
            }
            t = time.perf_counter()
            decode_batch(batch, roots, args.image_size, 200_000_000)
            return len(names) / (time.perf_counter() - t)

        arms: dict[str, Any] = {
            "job (decode tasks + GPU actors)": job,
            "bare fp32 (per GPU)": lambda: bare(False),
            "bare bf16 channels_last (per GPU)": lambda: bare(True),
            "decode, one core": decode_one_core,
        }
        job()  # warm-up: worker start-up, CUDA context, cuDNN autotuning
        samples = run_interleaved(arms, args.rounds, deadline=t_start + args.budget_s)
        rounds = len({s.round for s in samples})
        load_after = loadavg()
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = print_report(
        f"GPU embed: {args.backbone} at {args.image_size} px, batch {args.batch_size}, "
        f"{n_gpus} GPU(s), {n_cpus} CPUs, decode tasks {args.decode_cpus} CPU of "
        f"{args.decode_batch_size} images, {len(linked)} images per job run, {rounds} round(s)",
        samples,
        [
            ("job / bare fp32 x GPUs", "job (decode tasks + GPU actors)", "bare fp32 (per GPU)"),
            (
                "bare bf16 channels_last / bare fp32",
                "bare bf16 channels_last (per GPU)",
                "bare fp32 (per GPU)",
            ),
        ],
        load_before,
        load_after,
    )
    job_rate = summary["job (decode tasks + GPU actors)"]["median"]
    bare32 = summary["bare fp32 (per GPU)"]["median"]
    bare16 = summary["bare bf16 channels_last (per GPU)"]["median"]
    decode = summary["decode, one core"]["median"]
    print(
        f"  job / (bare fp32 x {max(1, n_gpus)} GPUs): {job_rate / (bare32 * max(1, n_gpus)):.2f} (target >= 0.80)"
    )
    if busy:
        print(f"  GPU busy share during the job: {np.median(busy):.0%} (median of runs)")
    print_cpu_breakdown(samples, "job (decode tasks + GPU actors)")
    print(
        f"  decode: {decode:.1f} images/s per core -> cores of decode per GPU at the bare rate: "
        f"fp32 {bare32 / decode:.1f}, bf16 channels_last {bare16 / decode:.1f}"
    )
    print(f"  wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
