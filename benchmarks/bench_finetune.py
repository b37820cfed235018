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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="working folder (reused to resume)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--margin", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", help="run one configuration under this name (see above)")
    parser.add_argument("--set", action="append", default=[], help="train key=value (variant)")
    parser.add_argument("--pseudo-epochs", type=int, default=0)
    parser.add_argument("--pseudo-set", action="append", default=[], help="pseudo stage key=value")
    parser.add_argument(
        "--pseudo-weights", help="best_model.pt of a pseudo stage run before (instead of one)"
    )
    parser.add_argument("--neural", action="store_true", help="add neural renditions (see above)")
    parser.add_argument("--neural-steps", type=int, default=150)
    parser.add_argument("--neural-size", type=int, default=256)
    args = parser.parse_args()

    data = demo_data_dir()
    out = Path(args.work).resolve() / "out"
    out.mkdir(parents=True, exist_ok=True)
    if not Path(cat.catalogue_path(out)).exists():
        ingest_data(data, str(out), RayConfig())
    all_styles = (*STYLES, NEURAL) if args.neural else STYLES
    augment.run(
        AugmentConfig(
            out=str(out),
            select="paired",
            pairs_csv=str(data / "pairs.csv"),
            styles=all_styles,
            neural=NeuralStyleParams(steps=args.neural_steps, size=args.neural_size),
        )
    )
    catalogue = cat.read_catalogue(out)
    pairs = read_pairs(data / "pairs.csv")
    resize = round(args.image_size * 330 / 280)

    def protocol(fold_csv: Path, run_name: str, epochs: int, styles: bool) -> list[str]:
        return [
            f"out={out}",
            f"fold_csv={fold_csv}",
            f"run_name={run_name}",
            "model.backbone=efficientnet_lite0",
            f"model.image_size={args.image_size}",
            f"train_resize={resize}",
            f"train_crop={args.image_size}",
            f"epochs={epochs}",
            f"lr={args.lr}",
            f"margin={args.margin}",
            f"use_styles={str(styles).lower()}",
            "num_workers=2",
            "cpus_per_worker=1",
            "patience=2",
            "lr_step_epochs=10",
            f"seed={args.seed}",
        ]

    def run_once(overrides: list[str]) -> dict:
        config = load_config(TrainConfig, None, overrides)
        metrics_file = out / "runs" / str(config.run_name) / train.METRICS_FILE
        if not metrics_file.exists():
            train.run(config)
        return json.loads(metrics_file.read_text())

    folds = grouped_folds(pairs, args.folds, args.seed)

    def write_folds(styles: tuple[str, ...], suffix: str) -> list[Path]:
        """The fold CSVs with the style copies of `styles` only."""
        copies = catalogue[catalogue["parent_id"].isna() | catalogue["style"].isin(styles)]
        paths = []
        for i, fold in enumerate(folds):
            fold_csv = out / "folds" / f"group_fold_{i:02d}{suffix}.csv"
            fold_csv.parent.mkdir(parents=True, exist_ok=True)
            add_styled_copies(fold, copies).to_csv(fold_csv, index=False)
            paths.append(fold_csv)
        return paths

    fold_csvs = write_folds(STYLES, "")
    neural_csvs = write_folds(all_styles, "_neural") if args.neural else fold_csvs

    results: dict[str, list[dict[str, float]]]
    val: dict[str, list[dict[str, float]]] = {}
    drifts: list[float] = []
    if args.variant is None:
        # arm -> (use style copies, its fold CSVs)
        arms = {"no-aug": (False, fold_csvs), "aug": (True, fold_csvs)}
        if args.neural:
            arms = {"aug": (True, fold_csvs), "aug+neural": (True, neural_csvs)}
        results = {"pretrained": [], **{name: [] for name in arms}}
        for i in range(len(folds)):
            for name, (styles, csvs) in arms.items():
                run_name = f"bench-{name.replace('+', '-')}-fold{i:02d}"
                summary = run_once(protocol(csvs[i], run_name, args.epochs, styles))
                results[name].append(summary["best"]["test"])
                if name == next(iter(arms)):
                    results["pretrained"].append(summary["baseline"]["test"])
    else:
        results = {"pretrained": imagenet_test_metrics(out, fold_csvs, args.image_size)}
        start: list[str] = []
        if args.pseudo_weights:
            start = [f"model.weights={Path(args.pseudo_weights).resolve()}"]
            results["pseudo only"] = []
        elif args.pseudo_epochs:
            name = f"bench-{args.variant}-pseudo"
            run_once(
                [
                    *protocol(fold_csvs[0], name, 0, False),
                    f"pseudo_epochs={args.pseudo_epochs}",
                    "selection=last",
                    *args.pseudo_set,
                ]
            )
            start = [f"model.weights={out / 'runs' / name / train.BEST_MODEL_FILE}"]
            results["pseudo only"] = []
        results[args.variant] = []
        val = {"pretrained": [], args.variant: []}
        for i, fold_csv in enumerate(neural_csvs):
            summary = run_once(
                [
                    *protocol(fold_csv, f"bench-{args.variant}-fold{i:02d}", args.epochs, True),
                    *start,
                    *args.set,
                ]
            )
            results[args.variant].append(summary["best"]["test"])
            if "pseudo only" in results:
                results["pseudo only"].append(summary["baseline"]["test"])
            best_val = summary["best"]["val"]
            val[args.variant].append({k[4:]: v for k, v in best_val.items() if k[:4] == "val_"})
            if summary["best_epoch"] >= 0:
                drifts.append(summary["history"][summary["best_epoch"]]["drift"])
            else:
                drifts.append(0.0)

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
    for name, per_fold in val.items():
        if per_fold:
            print(f"{name}: validation MAP pooled over the folds {pooled(per_fold)['MAP']:.2f}")
    if drifts:
        print(f"drift ||w - w0|| / ||w0|| of the chosen weights per fold: {drifts}")
    table["validation"] = {n: pooled(v) for n, v in val.items() if v}
    table["drift"] = drifts
    suffix = f"-{args.variant}" if args.variant else ""
    (out / f"bench_finetune{suffix}.json").write_text(json.dumps(table, indent=2))
    return 0


def imagenet_test_metrics(out: Path, fold_csvs: list[Path], image_size: int) -> list[dict]:
    """Test metrics of the ImageNet weights on every fold, the gallery and the drawings embedded
    once, as the train job embeds them."""
    import torch

    from drawmatch.models.backbones import create_backbone
    from drawmatch.retrieval.metrics import retrieval_metrics_from_embeddings

    config = load_config(
        TrainConfig,
        None,
        [f"out={out}", f"fold_csv={fold_csvs[0]}", f"model.image_size={image_size}"],
    )
    net = create_backbone("efficientnet_lite0", True)
    data = train.load_fold(config)
    loader = train.ImageLoader(data.paths, config, net.mean, net.std)
    drawings = sorted(set(q for qs in data.queries.values() for q in qs))
    device = torch.device("cpu")
    gallery = train.embed_ids(net, loader, data.gallery, 32, device).numpy()
    queries = dict(zip(drawings, train.embed_ids(net, loader, drawings, 32, device).numpy()))
    per_fold = []
    for fold_csv in fold_csvs:
        fold = train.load_fold(replace(config, fold_csv=str(fold_csv)))
        emb = np.stack([queries[q] for q in fold.queries["test"]])
        per_fold.append(retrieval_metrics_from_embeddings(emb, gallery, fold.relevant("test")))
    return per_fold


if __name__ == "__main__":
    sys.exit(main())
