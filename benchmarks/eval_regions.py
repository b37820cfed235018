"""Partial copies: retrieval quality of every search mode on the partial-copy dev set, through the
real jobs (ingest, embed, index, regions, evaluate) on a local Ray instance.

The set comes from `benchmarks/make_partial_copies.py` (details cut from the bundled real artworks,
recoloured, drawn on paper and styled, plus the 30 whole drawings of the dev set unchanged); the gallery is the 337 real
artworks. Each mode is evaluated on the details and on the whole drawings separately, so a mode that
helps details but hurts whole drawings shows it. Resumable: finished stages are skipped.

    python benchmarks/eval_regions.py --work runs/regions [--preset hard] [--region-size 448] \
        [--modes global region fused verified] [region.weight=1.0 region.margin=0.05 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from drawmatch.core.config import load_config
from drawmatch.jobs import embed, evaluate, index, ingest, regions
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.evaluate import EvaluateConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.ingest import IngestConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.runtime.ray_setup import RayConfig
from drawmatch.workflows.demo import demo_data_dir

KEYS = ("MAP", "R@1", "R@5", "R@20", "R@50", "MP", "MMP")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--preset", choices=("hard", "easy"), default="hard")
    parser.add_argument("--count", type=int, default=None, help="200 (hard) or 120 (easy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--region-size", type=int, default=448)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--modes", nargs="+", default=["global", "region", "fused", "verified"])
    parser.add_argument("overrides", nargs="*", help="evaluate overrides, e.g. region.weight=2")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_partial_copies

    work = args.work.resolve()
    dev = work / "set"
    if not (dev / "pairs.csv").exists():
        make_partial_copies.main(
            [str(dev), "--preset", args.preset, "--seed", str(args.seed)]
            + (["--count", str(args.count)] if args.count else [])
        )
    out = str(work / "run")
    ray = RayConfig(num_cpus=2)
    timings: dict[str, float] = {}
    if not (work / "run" / "catalogue.parquet").exists():
        t = time.perf_counter()
        ingest.run(
            IngestConfig(
                out=out,
                drawings_root=str(dev / "drawings"),
                artworks_root=str(demo_data_dir() / "artworks"),
                ray=ray,
            )
        )
        timings["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    emb = embed.run(load_config(EmbedConfig, None, [f"out={out}", "ray.num_cpus=2"]))
    timings["embed"] = time.perf_counter() - t
    index.run(IndexConfig(out=out))
    t = time.perf_counter()
    reg = regions.run(
        RegionsConfig(out=out, region_size=args.region_size, levels=tuple(args.levels), ray=ray)
    )
    timings["regions"] = time.perf_counter() - t
    table: dict[str, dict[str, dict[str, float]]] = {}
    for mode in args.modes:
        parts = ["details", "whole"]
        if (dev / "pairs_details_test.csv").exists():  # the held-out half (hard preset)
            parts.insert(1, "details_test")
        for subset in parts:
            t = time.perf_counter()
            result = evaluate.run(
                load_config(
                    EvaluateConfig,
                    None,
                    [
                        f"out={out}",
                        f"pairs_csv={dev / f'pairs_{subset}.csv'}",
                        f"mode={mode}",
                        f"output={work / 'eval' / f'{mode}_{subset}.json'}",
                        *args.overrides,
                    ],
                )
            )
            assert not isinstance(result, dict)
            table.setdefault(mode, {})[subset] = {k: result.metrics[k] for k in KEYS}
            timings[f"evaluate {mode} {subset}"] = time.perf_counter() - t
    lines = [
        f"model {emb.model_tag}; regions: {reg.regions_per_artwork} per artwork at "
        f"{args.region_size} px; overrides {args.overrides}",
        f"{'mode':<10}{'set':<14}" + "".join(f"{k:>8}" for k in KEYS),
    ]
    for mode, subsets in table.items():
        for subset, m in subsets.items():
            lines.append(f"{mode:<10}{subset:<14}" + "".join(f"{m[k]:>8.1f}" for k in KEYS))
    print("\n".join(lines))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    (work / "eval").mkdir(exist_ok=True)
    (work / "eval" / "table.json").write_text(
        json.dumps({"table": table, "timings": timings, "overrides": args.overrides}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
