"""Retrieval quality of fine-tuning on the bundled real cross-domain set (30 drawn stamps, 337 photos).

Protocol (fits 2 CPU cores): grouped k-fold over the connected components of the pair graph, so that
every drawing is a test query exactly once: components are shuffled (seed) and dealt into k groups;
fold i tests on group i, validates on group i+1 (early stopping) and trains on the rest. For each
fold: the pretrained model, fine-tuning without style copies and with them (the train job, 2 Ray
Train workers). Out-of-fold metrics are pooled over the 30 test queries (MAP, MMP, R@k weighted by
queries, MP by pairs) and the spread across folds is given as std. Resumable: finished runs are
skipped, interrupted ones resume from their checkpoints.

`--neural` also writes `neural` renditions of the paired drawings (neural style transfer, each drawing
in the style of one of its paired photos, `--neural-steps` Adam steps at `--neural-size` px) and compares the
five OpenCV copies ("aug") with the five plus the neural one ("aug+neural"), each arm reading only
its own styles' copies.

    python benchmarks/bench_finetune.py --work /tmp/ft [--folds 5] [--epochs 5] [--image-size 224]
    python benchmarks/bench_finetune.py --work ft-neural --neural --lr 1e-5 [--neural-steps 60]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from drawmatch import augment, train
from drawmatch import catalogue as cat
from drawmatch.demo import demo_data_dir, ingest_data
from drawmatch.metrics import aggregate
from drawmatch.pairs import read_pairs
from drawmatch.settings import (
    NEURAL,
    STYLES,
    AugmentConfig,
    NeuralStyleParams,
    RayConfig,
    TrainConfig,
    load_config,
)
from drawmatch.splits import FOLD_COLUMNS, add_styled_copies, pair_components

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="working folder (reused to resume)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--margin", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neural", action="store_true", help="compare aug with aug+neural")
    parser.add_argument("--neural-steps", type=int, default=150)
    parser.add_argument("--neural-size", type=int, default=256)
    args = parser.parse_args()

    data = demo_data_dir()
    out = Path(args.work).resolve() / "out"
    out.mkdir(parents=True, exist_ok=True)
    if not Path(cat.catalogue_path(out)).exists():
        ingest_data(data, str(out), RayConfig())
    styles = (*STYLES, NEURAL) if args.neural else STYLES
    augment.run(
        AugmentConfig(
            out=str(out),
            select="paired",
            pairs_csv=str(data / "pairs.csv"),
            styles=styles,
            neural=NeuralStyleParams(steps=args.neural_steps, size=args.neural_size),
        )
    )
    catalogue = cat.read_catalogue(out)
    pairs = read_pairs(data / "pairs.csv")
    resize = round(args.image_size * 330 / 280)

    # arm -> (use style copies, the styles whose copies the arm trains on)
    arms = {"no-aug": (False, STYLES), "aug": (True, STYLES)}
    if args.neural:
        arms = {"aug": (True, STYLES), "aug+neural": (True, (*STYLES, NEURAL))}
    results: dict[str, list[dict[str, float]]] = {"pretrained": [], **{a: [] for a in arms}}
    for i, fold in enumerate(grouped_folds(pairs, args.folds, args.seed)):
        for name, (use_styles, arm_styles) in arms.items():
            suffix = "" if name in ("no-aug", "aug") else f"_{name.replace('+', '_')}"
            fold_csv = out / "folds" / f"group_fold_{i:02d}{suffix}.csv"
            fold_csv.parent.mkdir(parents=True, exist_ok=True)
            copies = catalogue[catalogue["parent_id"].isna() | catalogue["style"].isin(arm_styles)]
            add_styled_copies(fold, copies).to_csv(fold_csv, index=False)
            run_name = f"bench-{name.replace('+', '-')}-fold{i:02d}"
            metrics_file = out / "runs" / run_name / train.METRICS_FILE
            if not metrics_file.exists():
                train.run(
                    load_config(
                        TrainConfig,
                        None,
                        [
                            f"out={out}",
                            f"fold_csv={fold_csv}",
                            f"run_name={run_name}",
                            "model.backbone=efficientnet_lite0",
                            f"model.image_size={args.image_size}",
                            f"train_resize={resize}",
                            f"train_crop={args.image_size}",
                            f"epochs={args.epochs}",
                            f"lr={args.lr}",
                            f"margin={args.margin}",
                            f"use_styles={str(use_styles).lower()}",
                            "num_workers=2",
                            "cpus_per_worker=1",
                            "patience=2",
                            "lr_step_epochs=10",
                            f"seed={args.seed}",
                        ],
                    )
                )
            summary = json.loads(metrics_file.read_text())
            results[name].append(summary["best"]["test"])
            if name == next(iter(arms)):
                results["pretrained"].append(summary["baseline"]["test"])

    print(
        f"\n{args.folds}-fold grouped CV over components, EfficientNet-Lite0 at "
        f"{args.image_size}px, {args.epochs} epochs max, lr {args.lr:g}, margin {args.margin}"
    )
    print(f"{'':<12}" + "".join(f"{k:>16}" for k in KEYS))
    table = {}
    for name, per_fold in results.items():
        pool = pooled(per_fold)
        spread = aggregate([{k: m[k] for k in KEYS} for m in per_fold])
        table[name] = {"pooled": pool, "folds": {k: list(v) for k, v in spread.items()}}
        print(f"{name + ' pooled':<12}" + "".join(f"{pool[k]:>16.2f}" for k in KEYS))
        print(f"{'  fold std':<12}" + "".join(f"{spread[k][1]:>16.2f}" for k in KEYS))
    (out / "bench_finetune.json").write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
