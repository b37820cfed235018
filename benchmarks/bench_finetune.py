"""Retrieval quality of fine-tuning on the bundled real cross-domain set (30 drawn stamps, 337 photos).

Protocol (fits 2 CPU cores): grouped k-fold over the connected components of the pair graph, so that
every drawing is a test query exactly once: components are shuffled (seed) and dealt into k groups;
fold i tests on group i, validates on group i+1 (early stopping) and trains on the rest. For each
fold: the pretrained model, fine-tuning without style copies and with them (the train job, 2 Ray
Train workers). Out-of-fold metrics are pooled over the 30 test queries (MAP, MMP, R@k weighted by
queries, MP by pairs) and the spread across folds is given as std. Resumable: finished runs are
skipped, interrupted ones resume from their checkpoints.

    python benchmarks/bench_finetune.py --work runs/ft [--folds 5] [--epochs 5] [--image-size 224]

A variant (`--variant NAME`) runs one fine-tuning configuration instead of the two above: the
`--set key=value` train overrides on top of the protocol's, optionally after a pseudo-pair stage
(`--pseudo-epochs N`, with `--pseudo-set key=value`) run once on all artworks (label-free, so one
stage serves every fold) whose weights every fold starts from. Its table compares the ImageNet
weights (embedded once), the pseudo-pair stage alone and the fine-tuned weights, pooled over the
folds' test queries, with the validation MAP pooled over the folds' validation queries.

    python benchmarks/bench_finetune.py --work runs/ft --variant ms-l2sp --pseudo-epochs 2 \
        --set loss=multi_similarity --set l2sp=0.01 --set selection=last

`--seeds S1 S2 ...` repeats everything once per training seed (the folds stay those of `--seed`)
and ends with each row's pooled metrics as mean +- std over the seeds. With `--variant`, a pseudo
stage and `--epochs 0`, only the pseudo stage is trained; its weights are evaluated on every
fold's test queries like the ImageNet weights:

    python benchmarks/bench_finetune.py --work runs/ft-seeds --folds 5 --epochs 0 \
        --image-size 224 --variant p3-224 --pseudo-epochs 3 --pseudo-set loss=multi_similarity \
        --pseudo-set l2sp=0.01 --pseudo-set lr=5e-5 --set use_styles=false --seeds 0 1 2

`--negatives TOP` (with `--variant`) measures expert non-matches: a simulated review round gives
each training drawing's TOP candidates under the starting model (ImageNet, or the pseudo stage's
weights) to an "expert" who knows the pairs; every candidate that is not a pair is a non-match
(`negatives_XX.csv`, set=train). The variant is then fine-tuned on every fold twice, without and
with those non-matches (`negatives_csv=`, mined first); the row `<variant>+neg` is the second.

    python benchmarks/bench_finetune.py --work runs/ft-neg --folds 5 --epochs 2 --image-size 160 \
        --variant ms --negatives 5 --set loss=multi_similarity --set use_styles=false \
        --set selection=last --seeds 0 1 2

`--neural` also writes `neural` renditions of the paired drawings (neural style transfer, each
drawing in the style of one of its paired photos, `--neural-steps` Adam steps at `--neural-size`
px). Without `--variant` it then compares the five OpenCV copies ("aug") with the five plus the
neural one ("aug+neural"), each arm reading only its own styles' copies; with `--variant` the
variant trains on both.

    python benchmarks/bench_finetune.py --work runs/ft-neural --neural --lr 1e-5 [--neural-steps 60]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drawmatch.augment.styles import NEURAL, STYLES, NeuralStyleParams
from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.data.pairs import read_pairs
from drawmatch.jobs import augment, train
from drawmatch.jobs.augment import AugmentConfig
from drawmatch.jobs.split import FOLD_COLUMNS, add_styled_copies, pair_components
from drawmatch.jobs.train import TrainConfig
from drawmatch.retrieval.metrics import aggregate
from drawmatch.runtime.ray_setup import RayConfig
from drawmatch.training.checkpoints import BEST_MODEL_FILE
from drawmatch.workflows.demo import demo_data_dir, ingest_data

KEYS = ("MAP", "R@1", "R@5", "R@10", "R@20", "R@50", "R@100", "MP", "MMP")


def grouped_folds(pairs: pd.DataFrame, k: int, seed: int) -> list[pd.DataFrame]:
    """k folds in the thesis format: test = component group i, val = group i+1, train = rest."""
    components = pair_components(pairs)
    order = np.random.default_rng(seed).permutation(len(components))
    group = {c: n % k for n, c in enumerate(order)}
    drawing_group = {d: group[c] for c, (ds, _as) in enumerate(components) for d in ds}
    folds = []
    for i in range(k):
        sets = {i: "test", (i + 1) % k: "val"}
        fold = pairs.assign(
            pair_id=range(len(pairs)),
            set=[sets.get(drawing_group[d], "train") for d in pairs["drawing_id"]],
            parent_id="",
        )
        folds.append(fold[FOLD_COLUMNS])
    return folds


def pooled(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Metrics over the union of the folds' test queries, from the per-fold figures."""
    queries = np.array([m["n_queries"] for m in per_fold])
    pairs = np.array([m["n_pairs"] for m in per_fold])
    out = {}
    for key in KEYS:
        weights = pairs if key == "MP" else queries
        out[key] = float(np.sum(weights * np.array([m[key] for m in per_fold])) / weights.sum())
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="working folder (reused to resume)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--margin", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (and of training)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="training seeds, one run of everything per seed, figures as mean +- std over them "
        "(the folds stay those of --seed)",
    )
    parser.add_argument("--variant", help="run one configuration under this name (see above)")
    parser.add_argument("--set", action="append", default=[], help="train key=value (variant)")
    parser.add_argument("--pseudo-epochs", type=int, default=0)
    parser.add_argument("--pseudo-set", action="append", default=[], help="pseudo stage key=value")
    parser.add_argument(
        "--pseudo-weights", help="best_model.pt of a pseudo stage run before (instead of one)"
    )
    parser.add_argument(
        "--negatives",
        type=int,
        default=0,
        metavar="TOP",
        help="variant: also fine-tune with the non-matches of a simulated review of each "
        "training drawing's TOP candidates (see above)",
    )
    parser.add_argument("--neural", action="store_true", help="add neural renditions (see above)")
    parser.add_argument("--neural-steps", type=int, default=150)
    parser.add_argument("--neural-size", type=int, default=256)
    return parser.parse_args()


class Bench:
    """The bundled set ingested and augmented under `--work`, its grouped folds, and the runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        data = demo_data_dir()
        self.out = out = Path(args.work).resolve() / "out"
        out.mkdir(parents=True, exist_ok=True)
        if not Path(cat.catalogue_path(out)).exists():
            ingest_data(data, str(out), RayConfig())
        self.all_styles = (*STYLES, NEURAL) if args.neural else STYLES
        augment.run(
            AugmentConfig(
                out=str(out),
                select="paired",
                pairs_csv=str(data / "pairs.csv"),
                styles=self.all_styles,
                neural=NeuralStyleParams(steps=args.neural_steps, size=args.neural_size),
            )
        )
        self.catalogue = cat.read_catalogue(out)
        self.pairs = read_pairs(data / "pairs.csv")
        self.folds = grouped_folds(self.pairs, args.folds, args.seed)
        self.fold_csvs = self.write_folds(STYLES, "")
        self.neural_csvs = self.write_folds(self.all_styles, "_neural") if args.neural else []

    def write_folds(self, styles: tuple[str, ...], suffix: str) -> list[Path]:
        """The fold CSVs with the style copies of `styles` only."""
        catalogue = self.catalogue
        copies = catalogue[catalogue["parent_id"].isna() | catalogue["style"].isin(styles)]
        paths = []
        for i, fold in enumerate(self.folds):
            fold_csv = self.out / "folds" / f"group_fold_{i:02d}{suffix}.csv"
            fold_csv.parent.mkdir(parents=True, exist_ok=True)
            add_styled_copies(fold, copies).to_csv(fold_csv, index=False)
            paths.append(fold_csv)
        return paths

    def protocol(
        self, fold_csv: Path, run_name: str, epochs: int, styles: bool, seed: int
    ) -> list[str]:
        args = self.args
        return [
            f"out={self.out}",
            f"fold_csv={fold_csv}",
            f"run_name={run_name}",
            "model.backbone=efficientnet_lite0",
            f"model.image_size={args.image_size}",
            f"train_resize={round(args.image_size * 330 / 280)}",
            f"train_crop={args.image_size}",
            f"epochs={epochs}",
            f"lr={args.lr}",
            f"margin={args.margin}",
            f"use_styles={str(styles).lower()}",
            "num_workers=2",
            "cpus_per_worker=1",
            "patience=2",
            "lr_step_epochs=10",
            f"seed={seed}",
        ]

    def run_once(self, overrides: list[str]) -> dict:
        config = load_config(TrainConfig, None, overrides)
        metrics_file = self.out / "runs" / str(config.run_name) / train.METRICS_FILE
        if not metrics_file.exists():
            train.run(config)
        return json.loads(metrics_file.read_text())


Results = dict[str, list[dict[str, float]]]


def default_arms(bench: Bench, seed: int, tag: str) -> Results:
    """Pretrained vs fine-tuning without and with style copies (or aug vs aug+neural)."""
    args = bench.args
    # arm -> (use style copies, its fold CSVs)
    arms = {"no-aug": (False, bench.fold_csvs), "aug": (True, bench.fold_csvs)}
    if args.neural:
        arms = {"aug": (True, bench.fold_csvs), "aug+neural": (True, bench.neural_csvs)}
    results: Results = {"pretrained": [], **{name: [] for name in arms}}
    for i in range(len(bench.folds)):
        for name, (styles, csvs) in arms.items():
            run_name = f"bench-{name.replace('+', '-')}-fold{i:02d}{tag}"
            summary = bench.run_once(bench.protocol(csvs[i], run_name, args.epochs, styles, seed))
            results[name].append(summary["best"]["test"])
            if name == next(iter(arms)):
                results["pretrained"].append(summary["baseline"]["test"])
    return results


def variant_arms(bench: Bench, seed: int, tag: str) -> tuple[Results, Results, list[float]]:
    """The ImageNet weights, the pseudo stage (if any) and the variant; with `--epochs 0` the
    pseudo stage alone, its weights evaluated on every fold's test queries. Returns the test
    results, the validation results and the chosen weights' drift per fold."""
    args, out = bench.args, bench.out
    results: Results = {"pretrained": fold_test_metrics(out, bench.fold_csvs, args.image_size)}
    val: Results = {}
    drifts: list[float] = []
    start: list[str] = []
    weights = str(Path(args.pseudo_weights).resolve()) if args.pseudo_weights else ""
    if not weights and args.pseudo_epochs:
        name = f"bench-{args.variant}-pseudo{tag}"
        bench.run_once(
            [
                *bench.protocol(bench.fold_csvs[0], name, 0, False, seed),
                f"pseudo_epochs={args.pseudo_epochs}",
                "selection=last",
                *args.pseudo_set,
            ]
        )
        weights = str(out / "runs" / name / BEST_MODEL_FILE)
    if weights:
        start = [f"model.weights={weights}"]
        results["pseudo only"] = []
        if args.epochs == 0:
            results["pseudo only"] = fold_test_metrics(
                out, bench.fold_csvs, args.image_size, weights
            )
            return results, val, drifts
    arms: dict[str, tuple[str, list[str]]] = {args.variant: ("", [])}
    if args.negatives:
        csvs = review_round(out, bench.fold_csvs, args.image_size, args.negatives, weights or None)
        arms[f"{args.variant}+neg"] = ("-neg", [f"negatives_csv={c}" for c in csvs])
    val = {"pretrained": []}
    for name, (suffix, negatives) in arms.items():
        results[name], val[name] = [], []
        for i, fold_csv in enumerate(bench.neural_csvs or bench.fold_csvs):
            run_name = f"bench-{args.variant}{suffix}-fold{i:02d}{tag}"
            keys = bench.protocol(fold_csv, run_name, args.epochs, True, seed)
            summary = bench.run_once([*keys, *start, *args.set, *negatives[i : i + 1]])
            results[name].append(summary["best"]["test"])
            if "pseudo only" in results and not suffix:
                results["pseudo only"].append(summary["baseline"]["test"])
            best_val = summary["best"]["val"]
            val[name].append({k[4:]: v for k, v in best_val.items() if k[:4] == "val_"})
            best = summary["best_epoch"]
            drifts.append(summary["history"][best]["drift"] if best >= 0 else 0.0)
    return results, val, drifts


def print_table(results: Results) -> dict[str, Any]:
    """Pooled metrics and the fold std of each arm, printed; returns them as a table."""
    print(f"{'':<12}" + "".join(f"{k:>16}" for k in KEYS))
    table = {}
    for name, per_fold in results.items():
        pool = pooled(per_fold)
        spread = aggregate([{k: m[k] for k in KEYS} for m in per_fold])
        table[name] = {"pooled": pool, "folds": {k: list(v) for k, v in spread.items()}}
        print(f"{name + ' pooled':<12}" + "".join(f"{pool[k]:>16.2f}" for k in KEYS))
        print(f"{'  fold std':<12}" + "".join(f"{spread[k][1]:>16.2f}" for k in KEYS))
    return table


def print_over_seeds(tables: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Each arm's pooled metrics as mean +- std (ddof 1) over the seeds, printed."""
    seeds = sorted(tables)
    print(f"\nover seeds {seeds}: pooled test metrics, mean +- std")
    print(f"{'':<16}" + "".join(f"{k:>16}" for k in KEYS))
    summary = {}
    for name in tables[seeds[0]]:
        if name in ("validation", "drift"):
            continue
        spread = aggregate([tables[s][name]["pooled"] for s in seeds])
        summary[name] = {k: list(v) for k, v in spread.items()}
        cells = "".join(f"{f'{m:.2f} +- {sd:.2f}':>16}" for m, sd in (spread[k] for k in KEYS))
        print(f"{name:<16}" + cells)
    return summary


def main() -> int:
    args = parse_args()
    bench = Bench(args)
    seeds = args.seeds or [args.seed]
    tables: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        tag = f"-s{seed}" if args.seeds else ""
        val: Results = {}
        drifts: list[float] = []
        if args.variant is None:
            results = default_arms(bench, seed, tag)
        else:
            results, val, drifts = variant_arms(bench, seed, tag)
        print(
            f"\n{args.folds}-fold grouped CV over components, EfficientNet-Lite0 at "
            f"{args.image_size}px, {args.epochs} epochs max, lr {args.lr:g}, margin {args.margin}, "
            f"training seed {seed}"
        )
        table = print_table(results)
        for name, per_fold in val.items():
            if per_fold:
                print(f"{name}: validation MAP pooled over the folds {pooled(per_fold)['MAP']:.2f}")
        if drifts:
            print(f"drift ||w - w0|| / ||w0|| of the chosen weights per fold: {drifts}")
        table["validation"] = {n: pooled(v) for n, v in val.items() if v}
        table["drift"] = drifts
        tables[seed] = table
    suffix = f"-{args.variant}" if args.variant else ""
    if args.seeds:
        tables[-1] = print_over_seeds(tables)
        suffix += "-seeds"
    (bench.out / f"bench_finetune{suffix}.json").write_text(
        json.dumps(tables if args.seeds else tables[seeds[0]], indent=2)
    )
    return 0


def embed_drawings_and_gallery(
    out: Path, fold_csv: Path, image_size: int, weights: str | None = None
) -> tuple[TrainConfig, np.ndarray, dict[str, np.ndarray]]:
    """The ImageNet weights (or `weights`, a best_model.pt) embed the gallery and every original
    drawing of the folds once, as the train job embeds them: (a config for reading folds, the
    gallery (G, D), drawing id -> (D,))."""
    import torch

    from drawmatch.models.backbones import create_backbone, load_weights

    config = load_config(
        TrainConfig,
        None,
        [f"out={out}", f"fold_csv={fold_csv}", f"model.image_size={image_size}"],
    )
    net = create_backbone("efficientnet_lite0", True)
    if weights:
        load_weights(net, weights)
    data = train.load_fold(config)
    loader = train.ImageLoader(data.paths, config, net.mean, net.std)
    drawings = sorted(set(q for qs in data.queries.values() for q in qs))
    device = torch.device("cpu")
    gallery = train.embed_ids(net, loader, data.gallery, 32, device).numpy()
    queries = dict(zip(drawings, train.embed_ids(net, loader, drawings, 32, device).numpy()))
    return config, gallery, queries


def fold_test_metrics(
    out: Path, fold_csvs: list[Path], image_size: int, weights: str | None = None
) -> list[dict]:
    """Test metrics of the ImageNet weights (or of `weights`) on every fold."""
    from drawmatch.retrieval.metrics import retrieval_metrics_from_embeddings

    config, gallery, queries = embed_drawings_and_gallery(out, fold_csvs[0], image_size, weights)
    per_fold = []
    for fold_csv in fold_csvs:
        fold = train.load_fold(replace(config, fold_csv=str(fold_csv)))
        emb = np.stack([queries[q] for q in fold.queries["test"]])
        per_fold.append(retrieval_metrics_from_embeddings(emb, gallery, fold.relevant("test")))
    return per_fold


def review_round(
    out: Path, fold_csvs: list[Path], image_size: int, top: int, weights: str | None = None
) -> list[Path]:
    """A simulated review round per fold: the model's `top` candidates for each training drawing
    (the ImageNet weights, or `weights`: the model the fine-tune starts from), judged against the
    known pairs as an expert would; each candidate that is not a pair of the drawing is a
    non-match. Writes `negatives_XX.csv` (drawing_id, artwork_id, set=train) beside each fold
    file and returns their paths."""
    config, gallery, queries = embed_drawings_and_gallery(out, fold_csvs[0], image_size, weights)
    paths = []
    for i, fold_csv in enumerate(fold_csvs):
        fold = train.load_fold(replace(config, fold_csv=str(fold_csv)))
        rows = []
        for drawing in fold.queries["train"]:
            ranked = np.argsort(-(gallery @ queries[drawing]), kind="stable")[:top]
            rows += [
                (drawing, fold.gallery[g], "train")
                for g in ranked
                if int(g) not in fold.positives[drawing]
            ]
        path = Path(fold_csv).with_name(f"negatives_{i:02d}.csv")
        pd.DataFrame(rows, columns=["drawing_id", "artwork_id", "set"]).to_csv(path, index=False)
        paths.append(path)
    return paths


if __name__ == "__main__":
    sys.exit(main())
