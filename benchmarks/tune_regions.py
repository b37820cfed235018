"""Partial copies: tune the fusion and the verification gate on one half of the detail set and
report on the other half, held out by source artwork.

Works on a run of `benchmarks/eval_regions.py` (its `run/` and `set/`): reads the stored global
embeddings, the region vectors (exact best-region scores) and the local features, verifies every
query against its `--pool` best artworks by global and by region score with SIFT + RANSAC (the
library's `verify` with the default query settings and the artworks' features the run's region
index names, cached in `WORK/tune_cache_RUN_SIDE.npz`), and then replays the search modes for every
setting of the grid without embedding anything again:

    fused    = global + weight * max(0, region - global - margin)
    verified = fused, and among the `verify_top` best fused artworks those with `min_inliers`
               inliers or more first, by inlier count (the gate)

The grid is searched on the `tune` details (`pairs_details_tune.csv`, the details of one half of
the source artworks) under the constraint that the whole drawings (all 30; there are too few to
split) lose at most `--max-whole-loss` MAP points against global search; the best setting is then
reported on the `test` details (the other half of the artworks), never seen while tuning.

    python benchmarks/tune_regions.py --work runs/pc2 [--run run] [--pool 100]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from drawmatch.core.images import open_image
from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag, read_embeddings
from drawmatch.models.local_features import extract, read_features, verify
from drawmatch.models.region_embedder import read_regions
from drawmatch.retrieval.metrics import retrieval_metrics
from drawmatch.retrieval.region_index import RegionIndex, exact_region_scores, fuse
from drawmatch.retrieval.region_search import RegionSearchParams

KS = (1, 5, 20, 50)
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
MARGINS = (-0.05, 0.0, 0.02, 0.05, 0.1, 0.15)
GATES = (4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 10**9)  # 10**9: verification off
VERIFY_TOP = 50


def global_scores(out: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str]]:
    """Global scores (Q, G) of every query of the run `out` against its gallery, the queries'
    embeddings, the (sorted) query ids, the gallery ids and the query image paths (no region
    vectors needed)."""
    tag = pick_model_tag(out, None)
    catalogue = cat.read_catalogue(out)
    gallery = cat.gallery_ids(catalogue)
    queries = sorted(cat.query_ids(catalogue))
    _q, q_emb = read_embeddings(out, tag, ids=queries)
    _g, g_emb = read_embeddings(out, tag, ids=gallery)
    paths = cat.resolve_paths(
        catalogue.set_index("id").loc[queries].reset_index(), cat.read_roots(out)
    )
    return q_emb @ g_emb.T, q_emb, queries, gallery, paths


def global_and_region_scores(
    out: str,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str]]:
    """Global and exact best-region scores (Q, G) of every query of the run `out` against its
    gallery, the (sorted) query ids, the gallery ids and the query image paths."""
    g, q_emb, queries, gallery, paths = global_scores(out)
    rids, _region, _box, remb = read_regions(out, pick_model_tag(out, None))
    r, _rows = exact_region_scores(q_emb, remb, rids, gallery)
    return g, r, queries, gallery, paths


def scores_and_inliers(work: Path, run: str, pool: int) -> dict[str, np.ndarray]:
    out = str(work / run)
    local = RegionIndex(out, pick_model_tag(out, None)).info["local_features"]
    side, params = int(local["max_side"]), RegionSearchParams()
    cache = work / f"tune_cache_{run}_{side}.npz"
    if cache.exists():
        return dict(np.load(cache, allow_pickle=False))
    g, r, queries, gallery, paths = global_and_region_scores(out)
    feats = read_features(out, "sift", side)
    inliers = np.full(g.shape, -1, np.int32)
    for qi, path in enumerate(paths):
        image = open_image(path, draft_size=1024)
        qf = extract(image, "sift", params.query_feature_side, params.query_n_features)
        candidates = set(np.argsort(-g[qi])[:pool]) | set(np.argsort(-r[qi])[:pool])
        for j in candidates:
            cand = feats.get(gallery[j])
            if cand is not None:
                inliers[qi, j] = verify(qf, cand, "sift", 0.8, rootsift=params.rootsift)[0]
        if qi % 20 == 0:
            print(f"verified {qi + 1}/{len(queries)} queries", flush=True)
    data = {
        "g": g,
        "r": r,
        "inliers": inliers,
        "queries": np.array(queries),
        "gallery": np.array(gallery),
    }
    np.savez(cache, **data)
    return data


def mode_scores(
    g: np.ndarray, r: np.ndarray, inl: np.ndarray, weight: float, margin: float, gate: int
) -> tuple[np.ndarray, int]:
    """Verified scores (the fused ones when the gate is off) and how many top candidates had no
    cached verification (outside the pool)."""
    fused = fuse(g, r, weight, margin)
    if gate >= 10**9:
        return fused, 0
    final = fused.copy()
    top = np.argsort(-fused, axis=1, kind="stable")[:, :VERIFY_TOP]
    rows = np.arange(len(g))[:, None]
    n = inl[rows, top]
    missing = int((n < 0).sum())
    passed = n >= gate
    final[rows, top] = np.where(passed, fused[rows, top] + 100.0 + n, fused[rows, top])
    return final, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--run", default="run", help="the run folder under WORK")
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--max-whole-loss", type=float, default=1.0)
    args = parser.parse_args(argv)
    data = scores_and_inliers(args.work, args.run, args.pool)
    g, r, inl = data["g"], data["r"], data["inliers"]
    queries = [str(q) for q in data["queries"]]
    position = {str(a): j for j, a in enumerate(data["gallery"])}
    where = {q: i for i, q in enumerate(queries)}
    sets = {}
    for name in ("details_tune", "details_test", "details", "whole"):
        pairs = pd.read_csv(args.work / "set" / f"pairs_{name}.csv", dtype=str)
        grouped = pairs.groupby("drawing_id")["artwork_id"].apply(list)
        qs = sorted(grouped.index)
        rel = [np.array([position[a] for a in grouped[q]]) for q in qs]
        sets[name] = (np.array([where[q] for q in qs]), rel)

    def evaluate(scores: np.ndarray, name: str) -> dict[str, float]:
        rows, rel = sets[name]
        return retrieval_metrics(scores[rows], rel, KS)

    base_whole = evaluate(g, "whole")["MAP"]
    grid = []
    for weight, margin, gate in itertools.product(WEIGHTS, MARGINS, GATES):
        if weight == 0.0 and margin != MARGINS[0]:
            continue
        scores, missing = mode_scores(g, r, inl, weight, margin, gate)
        grid.append(
            {
                "weight": weight,
                "margin": margin,
                "min_inliers": gate,
                "tune": evaluate(scores, "details_tune")["MAP"],
                "whole": evaluate(scores, "whole")["MAP"],
                "unverified": missing,
            }
        )
    table = pd.DataFrame(grid)
    allowed = table[table["whole"] >= base_whole - args.max_whole_loss]
    best = allowed.sort_values(["tune", "whole"], ascending=False).iloc[0]
    print(f"global whole MAP {base_whole:.1f}; {len(table)} settings, {len(allowed)} allowed")
    print(allowed.sort_values("tune", ascending=False).head(15).to_string(index=False))
    chosen = (float(best["weight"]), float(best["margin"]), int(best["min_inliers"]))
    report = {}
    for label, (weight, margin, gate) in {
        "global": (0.0, 0.0, 10**9),
        "region": (None, None, None),
        "fused (chosen)": (chosen[0], chosen[1], 10**9),
        "verified (chosen)": chosen,
        "verified (1, 0.05, 15)": (1.0, 0.05, 15),  # the defaults before this tuning
    }.items():
        if weight is None:
            scores = r
        else:
            scores, _m = mode_scores(g, r, inl, weight, margin, gate)
        report[label] = {name: evaluate(scores, name) for name in sets}
    keys = ("MAP", "R@1", "R@5", "R@20", "R@50")
    print(f"chosen on the tune half: weight={chosen[0]} margin={chosen[1]} min_inliers={chosen[2]}")
    print(f"{'mode':<24}{'set':<14}" + "".join(f"{k:>7}" for k in keys))
    for label, per_set in report.items():
        for name, m in per_set.items():
            print(f"{label:<24}{name:<14}" + "".join(f"{m[k]:>7.1f}" for k in keys))
    (args.work / f"tune_{args.run}.json").write_text(
        json.dumps({"chosen": chosen, "report": report, "grid": grid, "pool": args.pool}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
