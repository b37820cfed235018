"""Copy detection: micro-AP, recall at 90 % precision and the share of drawings that copy nothing
flagged as likely copies, in the global and verified modes, through the real jobs (ingest, embed,
index, regions) on a local Ray instance.

The set is built under `--work`/set from a gallery, its drawings and their pairs (default: the
bundled demo data), plus `--details` hard partial copies of the bundled artworks (the generator of
`make_partial_copies.py`: small, recoloured, rotated, styled details drawn on paper):
- a seeded share of the paired drawings (`--held-out-share`) loses its artworks from the gallery:
  those real drawings then copy nothing in it (their subjects' other photos stay, so they are hard
  non-copies); the other drawings keep their pairs;
- `--generated N` drawings that copy nothing are drawn (random pencil and felt-pen strokes,
  shapes and hatching on paper, seeded), and every image of `--non-copies DIR` is added as one
  (e.g. real distractor drawings); the flagged share is given for all of them, for the held-out
  real drawings and for the generated and added ones.

Each mode's results (the top 20 of every drawing over the whole gallery) are computed once with
the library's `evaluate_detection`, as `drawmatch evaluate` does; then, for each of `--splits`
seeded halvings of the drawings (copies and non-copies halved separately), the calibration is
fitted on one half (`fit_calibration`, as `evaluate calibrate=true`) and the figures are measured
on the other (`detection_metrics`). Printed: mean ± std over the splits. The results are kept as
`--work`/results_<mode>.parquet: delete them after changing the set or the search settings.

    python benchmarks/eval_calibration.py --work runs/calib [--artworks DIR --drawings DIR
        --pairs CSV] [--non-copies DIR] [--generated 200] [--modes global verified] [--splits 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag
from drawmatch.jobs import embed, index, ingest, regions
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.index import IndexConfig
from drawmatch.jobs.ingest import IngestConfig
from drawmatch.jobs.regions import RegionsConfig
from drawmatch.retrieval.calibration import add_confidence, detection_metrics, fit_calibration
from drawmatch.retrieval.ranker import evaluate_detection
from drawmatch.runtime.ray_setup import RayConfig
from drawmatch.workflows.demo import demo_data_dir

KEYS = (
    "micro_AP_score",
    "micro_AP_normalised",
    "micro_AP",
    "R@P90_score",
    "R@P90",
    "flagged_non_copies",
    "flagged_held_out",
    "flagged_generated",
    "flagged_copies_found",
    "flagged_precision",
    "threshold",
)


def scribble(path: Path, rng: np.random.Generator) -> None:
    """A drawing of nothing in particular: strokes, shapes and hatching on paper, 320 px."""
    h, w = (320, 240) if rng.random() < 0.5 else (240, 320)
    paper = np.array([235, 240, 245]) - rng.integers(0, 25, 3)
    img = np.ones((h, w, 3), np.uint8) * paper.astype(np.uint8)
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(int(c) for c in rng.integers(0, 220, 3))
        kind = rng.integers(0, 4)
        thick = int(rng.integers(1, 6))
        if kind == 0:  # a stroke
            pts = np.cumsum(rng.normal(0, 25, (int(rng.integers(3, 12)), 2)), axis=0)
            pts += rng.uniform([0, 0], [w, h])
            cv2.polylines(img, [pts.astype(np.int32)], False, colour, thick, cv2.LINE_AA)
        elif kind == 1:  # an ellipse, filled or not
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(8, w // 3)), int(rng.integers(8, h // 3)))
            fill = -1 if rng.random() < 0.4 else thick
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, fill)
        elif kind == 2:  # a polygon
            pts = rng.uniform([0, 0], [w, h], (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour) if rng.random() < 0.5 else cv2.polylines(
                img, [pts], True, colour, thick
            )
        else:  # hatching
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            for k in range(int(rng.integers(4, 15))):
                cv2.line(img, (x0 + 6 * k, y0), (x0 + 6 * k + 30, y0 + 40), colour, 1)
    cv2.imwrite(str(path), cv2.GaussianBlur(img, (3, 3), 0), [cv2.IMWRITE_JPEG_QUALITY, 90])


def details(args: argparse.Namespace, target: Path) -> pd.DataFrame:
    """`--details` hard partial copies (`make_partial_copies.py`, from the bundled artworks) in
    `target`/partial; their pairs."""
    import make_partial_copies

    if args.details == 0:
        return pd.DataFrame(columns=["drawing_id", "artwork_id"])
    made = target / "partial"
    make_partial_copies.main([str(made), "--count", str(args.details), "--seed", str(args.seed)])
    return pd.read_csv(made / "pairs_details.csv", dtype=str)


def build_set(args: argparse.Namespace, target: Path) -> None:
    """The gallery, drawings, pairs and non-copies of the benchmark (see the module)."""
    rng = np.random.default_rng(args.seed)
    pairs = pd.read_csv(args.pairs, dtype=str)[["drawing_id", "artwork_id"]]
    paired = sorted(pairs["drawing_id"].unique())
    detail_pairs = details(args, target)
    n_out = int(round(args.held_out_share * len(paired)))
    held_out = set(rng.choice(paired, n_out, replace=False).tolist()) if n_out else set()
    removed = set(pairs.loc[pairs["drawing_id"].isin(held_out), "artwork_id"])
    pairs = pd.concat([pairs, detail_pairs], ignore_index=True)
    kept = pairs[~pairs["drawing_id"].isin(held_out) & ~pairs["artwork_id"].isin(removed)]
    queries = set(pairs["drawing_id"])
    non_copies = sorted(queries - set(kept["drawing_id"]))  # held out, or all pairs removed
    (target / "artworks").mkdir(parents=True)
    (target / "drawings").mkdir()
    for f in sorted(args.artworks.iterdir()):
        if f.is_file() and f.stem not in removed:
            shutil.copyfile(f, target / "artworks" / f.name)
    for f in sorted(args.drawings.iterdir()):
        if f.is_file() and f.stem in set(paired):
            shutil.copyfile(f, target / "drawings" / f.name)
    for f in sorted((target / "partial" / "drawings").glob("*")) if args.details else []:
        if f.stem in set(detail_pairs["drawing_id"]):
            shutil.copyfile(f, target / "drawings" / f.name)
    for i in range(args.generated):
        scribble(target / "drawings" / f"scribble_{i:05d}.jpg", rng)
        non_copies.append(f"scribble_{i:05d}")
    if args.non_copies:
        for f in sorted(args.non_copies.iterdir()):
            if f.is_file():
                shutil.copyfile(f, target / "drawings" / f"extra_{f.name}")
                non_copies.append(f"extra_{f.stem}")
    kept.to_csv(target / "pairs.csv", index=False)
    pd.DataFrame({"drawing_id": non_copies}).to_csv(target / "non_copies.csv", index=False)
    (target / "summary.json").write_text(
        json.dumps(
            {
                "gallery": len(list((target / "artworks").iterdir())),
                "copy_drawings": int(kept["drawing_id"].nunique()),
                "details": int(kept["drawing_id"].isin(set(detail_pairs["drawing_id"])).sum()),
                "pairs_whole": int(
                    (~kept["drawing_id"].isin(set(detail_pairs["drawing_id"]))).sum()
                ),
                "pairs": len(kept),
                "held_out_drawings": len(set(paired) - set(kept["drawing_id"])),
                "generated": args.generated,
                "non_copies": len(non_copies),
            },
            indent=2,
        )
    )


def prepare(args: argparse.Namespace) -> tuple[str, dict[str, float]]:
    """Set, ingest, embed, index and (verified) regions; resumable: finished stages are skipped."""
    work = args.work.resolve()
    if not (work / "set" / "summary.json").exists():
        shutil.rmtree(work / "set", ignore_errors=True)
        build_set(args, work / "set")
    out, ray, timings = str(work / "run"), RayConfig(num_cpus=args.cpus), {}
    if not (work / "run" / "catalogue.parquet").exists():
        t = time.perf_counter()
        ingest.run(
            IngestConfig(
                out=out,
                drawings_root=str(work / "set" / "drawings"),
                artworks_root=str(work / "set" / "artworks"),
                ray=ray,
            )
        )
        timings["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    embed.run(load_config(EmbedConfig, None, [f"out={out}", f"ray.num_cpus={args.cpus}"]))
    timings["embed"] = time.perf_counter() - t
    index.run(IndexConfig(out=out))
    if set(args.modes) - {"global"}:
        t = time.perf_counter()
        regions.run(RegionsConfig(out=out, ray=ray))
        timings["regions"] = time.perf_counter() - t
    return out, timings


def halves(ids: list[str], rng: np.random.Generator) -> tuple[set[str], set[str]]:
    shuffled = rng.permutation(sorted(ids)).tolist()
    return set(shuffled[: len(shuffled) // 2]), set(shuffled[len(shuffled) // 2 :])


def replay(
    results: pd.DataFrame, pairs: pd.DataFrame, tag: str, mode: str, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Fit on one half of the drawings, measure on the other, for each split."""
    copies = sorted(pairs["drawing_id"].unique())
    non_copies = sorted(results.loc[results["non_copy_query"], "drawing_id"].unique())
    runs = []
    for split in range(args.splits):
        rng = np.random.default_rng(1000 + split)
        (c_fit, c_test), (n_fit, n_test) = halves(copies, rng), halves(non_copies, rng)
        fit_rows = results[results["drawing_id"].isin(c_fit | n_fit)]
        test_rows = results[results["drawing_id"].isin(c_test | n_test)]
        calibration = fit_calibration(fit_rows, tag, mode, args.max_flagged, by="drawing_id")
        n_pairs = int(pairs["drawing_id"].isin(c_test).sum())
        figures = detection_metrics(test_rows, n_pairs, calibration, args.k)
        flagged = add_confidence(test_rows, calibration, by="drawing_id")
        per_drawing = flagged["likely_copy"].fillna(False).groupby(flagged["drawing_id"]).any()
        tested = per_drawing[sorted(n_test)]
        generated = tested.index.str.startswith("scribble_") | tested.index.str.startswith("extra_")
        figures["flagged_held_out"] = 100.0 * float(tested[~generated].mean())
        figures["flagged_generated"] = 100.0 * float(tested[generated].mean())
        runs.append({k: figures.get(k, float("nan")) for k in KEYS})
    return runs


def summarise(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample std over the splits, leaving out a split where a figure is undefined (no
    result flagged: no precision)."""
    out = {}
    for key in KEYS:
        values = np.array([run[key] for run in runs], dtype=np.float64)
        values = values[~np.isnan(values)]
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[key] = (float(values.mean()) if values.size else float("nan"), std)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = demo_data_dir()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--artworks", type=Path, default=data / "artworks")
    parser.add_argument("--drawings", type=Path, default=data / "drawings")
    parser.add_argument("--pairs", type=Path, default=data / "pairs.csv")
    parser.add_argument("--non-copies", type=Path, default=None, help="drawings that copy nothing")
    parser.add_argument("--generated", type=int, default=200)
    parser.add_argument("--details", type=int, default=200, help="hard partial copies; 0: none")
    parser.add_argument("--held-out-share", type=float, default=0.3)
    parser.add_argument("--modes", nargs="+", default=["global", "verified"])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--k", type=int, default=10, help="results per drawing pooled")
    parser.add_argument("--max-flagged", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_partial_copies
    out, timings = prepare(args)
    tag = pick_model_tag(out, None)
    catalogue = cat.read_catalogue(out)
    pairs = pd.read_csv(args.work.resolve() / "set" / "pairs.csv", dtype=str)
    non_copies = pd.read_csv(args.work.resolve() / "set" / "non_copies.csv", dtype=str)
    table = {}
    for mode in args.modes:
        cached = args.work.resolve() / f"results_{mode}.parquet"  # the expensive part, kept
        if cached.exists():
            results = pd.read_parquet(cached)
        else:
            t = time.perf_counter()
            ids = non_copies["drawing_id"].tolist()
            _m, _skipped, results = evaluate_detection(
                out, tag, pairs, catalogue, (1,), mode, None, ids, 20
            )
            timings[f"results {mode}"] = time.perf_counter() - t
            results.to_parquet(cached)
        table[mode] = summarise(replay(results, pairs, tag, mode, args))
    summary = json.loads((args.work.resolve() / "set" / "summary.json").read_text())
    print(f"model {tag}; set {summary}; {args.splits} splits, top-{args.k} per drawing pooled")
    print(f"{'figure':<22}" + "".join(f"{mode:>20}" for mode in table))
    for key in KEYS:
        cells = "".join(f"{f'{t[key][0]:.1f} ± {t[key][1]:.1f}':>20}" for t in table.values())
        print(f"{key:<22}{cells}")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    (args.work / "table.json").write_text(
        json.dumps({"table": table, "timings": timings, "set": summary}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
