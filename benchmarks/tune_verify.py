"""Partial copies: which verification settings help, chosen on one half of the detail set and
reported on the other half (held out by source artwork), as `tune_regions.py` does for the fusion.

Works on a run of `benchmarks/eval_regions.py` (its `run/` and `set/`). For every feature setting
`ART_SIDE,ART_N,QUERY_SIDE,QUERY_N,DESCRIPTOR` (artworks' and queries' longer side in pixels and
SIFT keypoint limit; DESCRIPTOR `sift` or `rootsift`) it extracts SIFT features of the gallery
artworks and of the queries (the library's `extract`, images opened as the jobs open them) and
verifies EVERY query against EVERY artwork with the library's `verify` (cached in
`WORK/verify_cache/`). It then replays verified search for each `verify_top` (how many of the
best fused artworks are verified; `all`: the whole gallery) over a grid of fusion weights,
margins and inlier gates, picks the best MAP on the `tune` details among the settings whose
whole-drawing MAP is at most `--max-whole-loss` points below global search, and reports that
choice on the held-out `test` details. Cost per query (feature extraction, verifications) and
storage per artwork are measured on the way (one thread; the machine may be shared).

    python benchmarks/tune_verify.py --work runs/pc3 [--run run] \
        [--setting 400,500,400,500,sift 800,2000,400,500,rootsift ...] [--top 50 100 200 all]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from drawmatch.core.images import open_image
from drawmatch.data import catalogue as cat
from drawmatch.models.local_features import Features, extract, verify
from drawmatch.retrieval.metrics import retrieval_metrics
from drawmatch.retrieval.region_index import fuse

KS = (1, 5, 20, 50)
WEIGHTS = (0.0, 1.0, 2.0)
MARGINS = (0.0, 0.02, 0.05)
GATES = (4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30)
DEFAULT_SETTINGS = (
    "400,500,400,500,sift",  # the defaults before this benchmark
    "400,500,400,500,rootsift",
    "800,2000,400,500,sift",
    "800,2000,400,500,rootsift",
    "800,2000,800,2000,rootsift",
)


def parse_setting(text: str) -> tuple[int, int, int, int, str]:
    a_side, a_n, q_side, q_n, desc = text.split(",")
    if desc not in ("sift", "rootsift"):
        raise SystemExit(f"descriptor {desc!r}: sift or rootsift")
    return int(a_side), int(a_n), int(q_side), int(q_n), desc


def artwork_features(
    work: Path, out: str, gallery: list[str], side: int, n: int
) -> tuple[list[Features], float]:
    """Features of the gallery artworks (cached), and the mean extraction seconds per artwork."""
    cache = work / "verify_cache" / f"art_{side}_{n}.npz"
    catalogue = cat.read_catalogue(out)
    rows = catalogue.set_index("id").loc[gallery].reset_index()
    paths = cat.resolve_paths(rows, cat.read_roots(out))
    return _features(cache, paths, side, n, side)


def _features(
    cache: Path, paths: list[str], side: int, n: int, draft: int
) -> tuple[list[Features], float]:
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        counts, sizes = data["counts"], data["sizes"]
        ends = np.cumsum(counts)
        feats = [
            Features(kp, d, int(w), int(h))
            for kp, d, (w, h) in zip(
                np.split(data["keypoints"], ends[:-1]),
                np.split(data["descriptors"], ends[:-1]),
                sizes,
            )
        ]
        return feats, float(data["seconds"])
    start = time.perf_counter()
    feats = [extract(open_image(p, draft_size=draft), "sift", side, n) for p in paths]
    seconds = (time.perf_counter() - start) / max(1, len(paths))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        counts=np.array([len(f.keypoints) for f in feats]),
        sizes=np.array([(f.width, f.height) for f in feats]),
        keypoints=np.concatenate([f.keypoints for f in feats]).reshape(-1, 2),
        descriptors=np.concatenate([f.descriptors for f in feats]).reshape(-1, 128),
        seconds=seconds,
    )
    return feats, seconds


def all_inliers(
    work: Path,
    out: str,
    setting: str,
    gallery: list[str],
    paths: list[str],
) -> dict[str, float | np.ndarray]:
    """Inliers (Q, G) of every query against every artwork under one feature setting, and costs."""
    a_side, a_n, q_side, q_n, desc = parse_setting(setting)
    cache = work / "verify_cache" / f"inliers_{setting.replace(',', '_')}.npz"
    if cache.exists():
        return dict(np.load(cache, allow_pickle=False))
    arts, art_s = artwork_features(work, out, gallery, a_side, a_n)
    qcache = work / "verify_cache" / f"query_{q_side}_{q_n}.npz"
    queries, query_s = _features(qcache, paths, q_side, q_n, 1024)  # search opens queries so
    inliers = np.zeros((len(queries), len(arts)), np.int32)
    start = time.perf_counter()
    for qi, qf in enumerate(queries):
        for j, af in enumerate(arts):
            inliers[qi, j] = verify(qf, af, "sift", 0.8, rootsift=desc == "rootsift")[0]
        if qi % 40 == 0:
            print(f"{setting}: verified {qi + 1}/{len(queries)} queries", flush=True)
    verify_ms = (time.perf_counter() - start) / inliers.size * 1000
    stored = [len(a.keypoints) * (8 + 128) for a in arts]  # x, y float32 + 128 uint8
    data: dict[str, float | np.ndarray] = {
        "inliers": inliers,
        "art_extract_ms": art_s * 1000,
        "query_extract_ms": query_s * 1000,
        "verify_ms": verify_ms,
        "art_keypoints": float(np.mean([len(a.keypoints) for a in arts])),
        "query_keypoints": float(np.mean([len(q.keypoints) for q in queries])),
        "stored_kb_per_artwork": float(np.mean(stored) / 1000),
    }
    np.savez(cache, **data)  # type: ignore[arg-type]
    return data


def verified_scores(fused: np.ndarray, inl: np.ndarray, top: int, gate: int) -> np.ndarray:
    """The library's verified ranking: among the `top` best fused artworks, those with `gate`
    inliers or more first, by inlier count."""
    order = np.argsort(-fused, axis=1, kind="stable")[:, :top]
    rows = np.arange(len(fused))[:, None]
    n = inl[rows, order]
    final = fused.copy()
    final[rows, order] = np.where(n >= gate, fused[rows, order] + 100.0 + n, fused[rows, order])
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--run", default="run")
    parser.add_argument("--setting", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument("--top", nargs="+", default=["50", "100", "200", "all"])
    parser.add_argument("--max-whole-loss", type=float, default=1.0)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tune_regions import global_and_region_scores

    out = str(args.work / args.run)
    catalogue = cat.read_catalogue(out)
    gallery, queries = cat.gallery_ids(catalogue), sorted(cat.query_ids(catalogue))
    paths = cat.resolve_paths(
        catalogue.set_index("id").loc[queries].reset_index(), cat.read_roots(out)
    )
    inliers = {s: all_inliers(args.work, out, s, gallery, paths) for s in args.setting}
    g, r, q_order, g_order, _paths = global_and_region_scores(out)
    assert q_order == queries and g_order == gallery
    position = {a: j for j, a in enumerate(gallery)}
    where = {q: i for i, q in enumerate(queries)}
    sets = {}
    for name in ("details_tune", "details_test", "whole"):
        pairs = pd.read_csv(args.work / "set" / f"pairs_{name}.csv", dtype=str)
        grouped = pairs.groupby("drawing_id")["artwork_id"].apply(list)
        qs = sorted(grouped.index)
        sets[name] = (
            np.array([where[q] for q in qs]),
            [np.array([position[a] for a in grouped[q]]) for q in qs],
        )

    def evaluate(scores: np.ndarray, name: str) -> dict[str, float]:
        rows, rel = sets[name]
        return retrieval_metrics(scores[rows], rel, KS)

    base_whole = evaluate(g, "whole")["MAP"]
    fused = {(w, m): fuse(g, r, w, m) for w, m in itertools.product(WEIGHTS, MARGINS) if w or not m}
    rows_out = []
    costs = {}
    for setting in args.setting:
        data = inliers[setting]
        inl = np.asarray(data["inliers"])
        costs[setting] = {k: float(v) for k, v in data.items() if k != "inliers"}
        for top_text in args.top:
            top = len(gallery) if top_text == "all" else int(top_text)
            grid = []
            for (w, m), f in fused.items():
                for gate in GATES:
                    s = verified_scores(f, inl, top, gate)
                    grid.append((w, m, gate, evaluate(s, "details_tune")["MAP"], s))
            allowed = [
                x
                for x in grid
                if evaluate(x[4], "whole")["MAP"] >= base_whole - args.max_whole_loss
            ]
            w, m, gate, tune_map, s = max(
                allowed, key=lambda x: (x[3], evaluate(x[4], "whole")["MAP"])
            )
            test, whole = evaluate(s, "details_test"), evaluate(s, "whole")
            rows_out.append(
                {
                    "setting": setting,
                    "top": top_text,
                    "weight": w,
                    "margin": m,
                    "min_inliers": gate,
                    "tune MAP": tune_map,
                    "test MAP": test["MAP"],
                    "test R@1": test["R@1"],
                    "test R@5": test["R@5"],
                    "test R@20": test["R@20"],
                    "test R@50": test["R@50"],
                    "whole MAP": whole["MAP"],
                    "whole R@1": whole["R@1"],
                    "whole R@20": whole["R@20"],
                    "verify s/query": costs[setting]["verify_ms"] * top / 1000,
                }
            )
            print(pd.DataFrame(rows_out[-1:]).round(1).to_string(index=False), flush=True)
    table = pd.DataFrame(rows_out)
    best = table.sort_values(["tune MAP", "whole MAP"], ascending=False).iloc[0]
    print(f"\nglobal whole MAP {base_whole:.1f}; the max whole loss {args.max_whole_loss}")
    print("global held-out:", {k: round(v, 1) for k, v in evaluate(g, "details_test").items()})
    print(table.round(1).to_string(index=False))
    print("\ncosts:", json.dumps(costs, indent=1))
    print(f"\nchosen on the tune half: {best.to_dict()}")
    (args.work / f"tune_verify_{args.run}.json").write_text(
        json.dumps(
            {"rows": rows_out, "costs": costs, "chosen": best.to_dict()}, indent=1, default=str
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
