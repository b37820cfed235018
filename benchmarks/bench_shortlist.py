"""Partial copies at gallery scale: which artworks to verify. Today's shortlist (the `top` best by
fused score) against the visual-word shortlist (`drawmatch.retrieval.local_shortlist`) and their
union, side by side in one run, on the bundled artworks plus real distractor artworks.

Stages (resumable; each real job on a local Ray instance):
1. `WORK/set`: the hard partial-copy set (`make_partial_copies.py`, seed 0); `WORK/artworks`: the
   337 bundled artworks plus the first `--count` images of `--distractors` (a folder written by
   `make_distractors.py --kind artworks`); `WORK/drawings`: the set's drawings plus the first
   `--drawing-count` of `--distractor-drawings` (`--kind drawings`: drawings that copy nothing).
2. `drawmatch ingest`, `embed`, `index` and `regions` on them; the artworks' SIFT features (800
   px, 2000 keypoints: the regions job's settings and the library's `extract`) are extracted by
   this script (`--features-only` does that alone, beside the jobs, once ingest is done).
3. Global and exact region scores of every query, the word index of the gallery (built once,
   timed), then per query: its SIFT features, each arm's shortlist, and RANSAC verification of
   each shortlisted artwork (once per artwork, timed alone; one thread).

Printed per arm: held-out detail MAP and R@1 (`pairs_details_test.csv`), shortlist recall of the
source (share of held-out details whose artwork is among the shortlist; and among the details that
verification can confirm at all, whose artwork gets `min_inliers` or more when verified, whether
shortlisted or not), whole-drawing MAP against
global search, the share of distractor drawings with a verified artwork (a false "copy"), the
median cost per query on one core (CPU seconds of the one thread, `time.thread_time`, so that
other processes on a shared machine do not count: query features + shortlist + verifications; the
embedding and region search that every arm needs are not included), memory per artwork, and copy
detection on the verified results: the calibration (`fit_calibration`, as `evaluate
calibrate=true`) fitted on one half of the queries and measured on the other, copies (details and
whole drawings) and distractor drawings halved apart, mean ± std over 5 halvings: micro-AP,
recall at 90 % precision, the share of distractor drawings flagged as likely copies, the share of
pairs found as likely copies and the precision of the flagged results.

`--skip-regions` leaves the regions job out (its region vectors are out of reach for a large
gallery on a small machine): the `fused` arm is then global search's ranking, printed as `global`.
The `words (top N/2)` arm is the first half of the words shortlist.

    python benchmarks/bench_shortlist.py --work runs/sl --distractors runs/dx_art \
        --distractor-drawings runs/dx_draw [--count 1000] [--drawing-count 300] [--top 100] \
        [--words 4096] [--train-size 100000] [--drawing-queries 100] [--skip-regions]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from drawmatch.core.config import load_config
from drawmatch.core.images import open_image
from drawmatch.data import catalogue as cat
from drawmatch.models.local_features import Features, extract, verify
from drawmatch.retrieval.calibration import detection_metrics, fit_calibration
from drawmatch.retrieval.local_shortlist import build_word_index
from drawmatch.retrieval.metrics import retrieval_metrics
from drawmatch.retrieval.region_index import fuse
from drawmatch.retrieval.region_search import VERIFIED_BONUS, RegionSearchParams

ARMS = ("fused", "words", "words_half", "both")
KS = (1, 5, 20, 50)
# copy-detection figures printed (percent, mean ± std over 5 halvings; `detection_metrics`)
DETECTION = ("micro_AP", "R@P90", "flagged_non_copies", "flagged_copies_found", "flagged_precision")


def copy_first(src: Path, dst: Path, count: int) -> int:
    """Copy the first `count` JPEGs of `src` (sorted names) into `dst`; returns how many."""
    files = sorted(src.glob("*.jpg"))[:count]
    for f in files:
        if not (dst / f.name).exists():
            shutil.copyfile(f, dst / f.name)
    return len(files)


def prepare(work: Path, args: argparse.Namespace) -> str:
    """The set, the folders and the real jobs (skipped where done); returns the run's root."""
    from drawmatch.jobs import embed, index, ingest, regions
    from drawmatch.jobs.embed import EmbedConfig
    from drawmatch.jobs.index import IndexConfig
    from drawmatch.jobs.ingest import IngestConfig
    from drawmatch.jobs.regions import RegionsConfig
    from drawmatch.runtime.ray_setup import RayConfig
    from drawmatch.workflows.demo import demo_data_dir

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_partial_copies

    if not (work / "set" / "pairs.csv").exists():
        make_partial_copies.main([str(work / "set"), "--seed", "0"])
    arts, draws = work / "artworks", work / "drawings"
    for folder in (arts, draws):
        folder.mkdir(parents=True, exist_ok=True)
    copy_first(demo_data_dir() / "artworks", arts, 10**9)
    n_art = copy_first(args.distractors, arts, args.count)
    copy_first(work / "set" / "drawings", draws, 10**9)
    n_draw = copy_first(args.distractor_drawings, draws, args.drawing_count)
    print(f"gallery: 337 bundled + {n_art} distractor artworks; {n_draw} distractor drawings")
    out, ray = str(work / "run"), RayConfig(num_cpus=2)
    if not (work / "run" / "catalogue.parquet").exists():
        cfg = IngestConfig(out=out, drawings_root=str(draws), artworks_root=str(arts), ray=ray)
        ingest.run(cfg)
    jobs = ("embed", "index") if args.skip_regions else ("embed", "index", "regions")
    for name in jobs:
        start = time.perf_counter()
        if name == "embed":
            embed.run(load_config(EmbedConfig, None, [f"out={out}", "ray.num_cpus=2"]))
        elif name == "index":
            index.run(IndexConfig(out=out))
        else:  # local features: extracted by `artwork_features` below, with the job's settings
            regions.run(RegionsConfig(out=out, ray=ray, local_features=None))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    return out


def _extract(path: str) -> Features:
    from drawmatch.jobs.regions import RegionsConfig

    side, n = RegionsConfig().feature_side, RegionsConfig().n_features
    cv2.setNumThreads(1)
    return extract(open_image(path, draft_size=side), "sift", side, n)


def save_features(path: Path, ids: list[str], feats: list[Features]) -> None:
    np.savez(
        path,
        ids=np.array(ids),
        counts=np.array([len(f.keypoints) for f in feats]),
        sizes=np.array([(f.width, f.height) for f in feats]).reshape(-1, 2),
        keypoints=np.concatenate([f.keypoints for f in feats]).reshape(-1, 2),
        descriptors=np.concatenate([f.descriptors for f in feats]).reshape(-1, 128),
    )


def load_features(path: Path) -> dict[str, Features]:
    data = np.load(path, allow_pickle=False)
    ends = np.cumsum(data["counts"])[:-1]
    return {
        str(a): Features(kp, d, int(w), int(h))
        for a, kp, d, (w, h) in zip(
            data["ids"],
            np.split(data["keypoints"], ends),
            np.split(data["descriptors"], ends),
            data["sizes"],
        )
    }


def gallery_order(out: str) -> list[str]:
    """The run's gallery, the bundled artworks (the queries' sources) first, then the
    distractors (`dxa_*`) in name order: a prefix of it is a smaller gallery of the same kind."""
    gallery = cat.gallery_ids(cat.read_catalogue(out))
    return [a for a in gallery if not a.startswith("dxa_")] + sorted(
        a for a in gallery if a.startswith("dxa_")
    )


def artwork_features(
    work: Path, out: str, ids: list[str], processes: int = 2, chunk: int = 64
) -> dict[str, Features]:
    """SIFT features of the artworks `ids` with the regions job's settings (800 px, 2000
    keypoints; the library's `extract`, images opened as the job opens them), in `processes`
    processes, cached by chunks of `chunk` under `WORK/features/` (a killed run keeps them)."""
    folder = work / "features"
    folder.mkdir(exist_ok=True)
    catalogue = cat.read_catalogue(out).set_index("id")
    found: dict[str, Features] = {}
    todo: list[list[str]] = []
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        path = folder / f"chunk-{start // chunk:05d}.npz"
        if path.exists() and list(np.load(path)["ids"]) == part:
            found.update(load_features(path))
        else:
            todo.append(part)
    roots = cat.read_roots(out)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for part in todo:
            paths = cat.resolve_paths(catalogue.loc[part].reset_index(), roots)
            feats = pool.map(_extract, paths, chunksize=max(1, len(part) // processes))
            path = folder / f"chunk-{ids.index(part[0]) // chunk:05d}.npz"
            save_features(path, part, feats)
            found.update(zip(part, feats))
            print(f"features: {len(found)}/{len(ids)} artworks", flush=True)
    return found


def query_sets(work: Path, queries: list[str], paths: list[str], gallery: list[str]) -> dict:
    """Rows and relevant gallery positions of the held-out details and the whole drawings, and
    the rows of the distractor drawings (file names `dxd_*`)."""
    where = {q: i for i, q in enumerate(queries)}
    position = {a: j for j, a in enumerate(gallery)}
    sets: dict = {}
    for name in ("details_test", "whole"):
        pairs = pd.read_csv(work / "set" / f"pairs_{name}.csv", dtype=str)
        grouped = pairs.groupby("drawing_id")["artwork_id"].apply(list)
        qs = sorted(grouped.index)
        rel = [np.array([position[a] for a in grouped[q]]) for q in qs]
        sets[name] = (np.array([where[q] for q in qs]), rel)
    sets["distractors"] = (np.array([i for i, p in enumerate(paths) if "/dxd_" in p]), None)
    return sets


def shortlists(
    fused: np.ndarray, qf: Features, words: object, top: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each arm's candidates for one query and the seconds each took."""
    start = time.thread_time()
    by_fused = np.argsort(-fused, kind="stable")[:top]
    t_fused = time.thread_time() - start
    start = time.thread_time()
    by_words = words.shortlist(qf, top)  # type: ignore[attr-defined]
    t_words = time.thread_time() - start
    both = np.concatenate([by_fused, by_words[~np.isin(by_words, by_fused)]])
    cands = {"fused": by_fused, "words": by_words, "words_half": by_words[: top // 2], "both": both}
    costs = {"fused": t_fused, "words": t_words, "words_half": t_words, "both": t_fused + t_words}
    return cands, costs


def run_queries(
    paths: list[str],
    rows: np.ndarray,
    fused: np.ndarray,
    feats: list[Features | None],
    words,
    top: int,
    sources: dict[int, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, list[float]], dict[str, list[np.ndarray]], dict]:
    """Verify each arm's shortlist for the given query rows: inliers (Q, G) per arm (-1 where
    not verified), seconds per query per arm, the shortlists, and for the queries of `sources`
    (row -> gallery positions of its artworks) the most inliers any of its artworks gets, whether
    an arm shortlists it or not (not counted in any arm's cost)."""
    params = RegionSearchParams()
    inl = {arm: np.full(fused.shape, -1, np.int32) for arm in ARMS}
    cost: dict[str, list[float]] = {arm: [] for arm in ARMS}
    lists: dict[str, list[np.ndarray]] = {arm: [] for arm in ARMS}
    source_inliers: dict[int, int] = {}
    for n, qi in enumerate(rows):
        start = time.thread_time()
        image = open_image(paths[qi], draft_size=1024)
        qf = extract(image, "sift", params.query_feature_side, params.query_n_features)
        t_query = time.thread_time() - start
        cands, t_list = shortlists(fused[qi], qf, words, top)
        spent: dict[int, float] = {}
        found: dict[int, int] = {}
        for j in cands["both"]:
            cand = feats[j]
            start = time.thread_time()
            found[int(j)] = (
                0 if cand is None else verify(qf, cand, "sift", params.ratio, rootsift=True)[0]
            )
            spent[int(j)] = time.thread_time() - start
        for arm in ARMS:
            c = cands[arm]
            inl[arm][qi, c] = [found[int(j)] for j in c]
            cost[arm].append(t_query + t_list[arm] + sum(spent[int(j)] for j in c))
            lists[arm].append(c)
        if int(qi) in sources:
            source_inliers[int(qi)] = max(
                (
                    found[int(j)]
                    if int(j) in found
                    else verify(qf, feats[j], "sift", params.ratio, rootsift=True)[0]
                    for j in sources[int(qi)]
                    if feats[j] is not None
                ),
                default=0,
            )
        if n % 50 == 0:
            print(f"query {n + 1}/{len(rows)}", flush=True)
    return inl, cost, lists, source_inliers


def verified(fused: np.ndarray, inliers: np.ndarray, gate: int) -> np.ndarray:
    """The library's verified scores: fused, plus bonus + inliers where inliers >= gate."""
    final = fused.astype(np.float64)
    passed = inliers >= gate
    final[passed] += VERIFIED_BONUS + inliers[passed]
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--distractors", type=Path, required=True)
    parser.add_argument("--distractor-drawings", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--drawing-count", type=int, default=300)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--words", type=int, default=4096)
    parser.add_argument("--train-size", type=int, default=100_000, help="k-means descriptors")
    parser.add_argument("--drawing-queries", type=int, default=100, help="distractor drawings")
    parser.add_argument("--features-only", action="store_true", help="extract, cache, stop")
    parser.add_argument("--score-only", action="store_true", help="the jobs are done: score")
    parser.add_argument(
        "--skip-regions",
        action="store_true",
        help="no regions job (out of reach for a large gallery on a small machine): the fused "
        "arm is then global search's ranking",
    )
    args = parser.parse_args(argv)
    work = args.work.resolve()
    if args.features_only:  # may run beside the jobs of `prepare`, once ingest is done
        ids = gallery_order(str(work / "run"))
        artwork_features(work, str(work / "run"), ids[: 337 + args.count])
        return 0
    out = str(work / "run") if args.score_only else prepare(work, args)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tune_regions import global_and_region_scores, global_scores

    if args.skip_regions:
        g, _q_emb, queries, run_gallery, paths = global_scores(out)
        r = np.full_like(g, -np.inf)
    else:
        g, r, queries, run_gallery, paths = global_and_region_scores(out)
    gallery = gallery_order(out)[: 337 + args.count]
    keep = [run_gallery.index(a) for a in gallery]
    g, r = g[:, keep], r[:, keep]
    no_regions = int(np.isinf(r[0]).sum())
    if no_regions:  # fused = global for them (`fuse` of -inf): said in the output
        print(f"{no_regions} artworks have no region vectors yet: their fused score is global")
    params = RegionSearchParams()
    fused = fuse(g, r, params.weight, params.margin)
    stored = artwork_features(work, out, gallery)
    feats = [stored.get(a) for a in gallery]
    start = time.perf_counter()
    words = build_word_index(gallery, stored, args.words, args.train_size)
    build_s = time.perf_counter() - start
    cv2.setNumThreads(1)  # the costs per query: one thread
    import faiss

    faiss.omp_set_num_threads(1)
    sets = query_sets(work, queries, paths, gallery)
    sets["distractors"] = (sets["distractors"][0][: args.drawing_queries], None)
    rows = np.concatenate([sets[s][0] for s in ("details_test", "whole", "distractors")])
    sources = dict(zip((int(q) for q in sets["details_test"][0]), sets["details_test"][1]))
    inl, cost, lists, source_inliers = run_queries(
        paths, rows, fused, feats, words, args.top, sources
    )
    verifiable = np.array([source_inliers[int(q)] >= params.min_inliers for q in sources])
    report(args, sets, g, fused, inl, cost, lists, rows, gallery, feats, words, build_s, verifiable)
    return 0


def detection_table(
    final: np.ndarray, fused: np.ndarray, inliers: np.ndarray, sets: dict, depth: int = 20
) -> pd.DataFrame:
    """The top `depth` verified results of every query, as `evaluate_detection` gives them
    (drawing_id, rank, artwork_id, similarity = the fused score, inliers, copy,
    non_copy_query): the held-out details and whole drawings copy their pairs' artworks, the
    distractor drawings copy nothing."""
    frames = []
    for name in ("details_test", "whole", "distractors"):
        rows, rel = sets[name]
        for n, q in enumerate(rows):
            top = np.argsort(-final[q], kind="stable")[:depth]
            frames.append(
                pd.DataFrame(
                    {
                        "drawing_id": f"q{int(q)}",
                        "rank": np.arange(1, len(top) + 1),
                        "artwork_id": top,
                        "similarity": fused[q, top].astype(np.float64),
                        "inliers": np.maximum(inliers[q, top], 0),
                        "copy": np.isin(top, rel[n]) if rel is not None else False,
                        "non_copy_query": rel is None,
                        "n_relevant": 0 if rel is None else len(rel[n]),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def copy_detection(table: pd.DataFrame, splits: int = 5, k: int = 10) -> dict[str, list[float]]:
    """The calibration fitted on one half of the drawings (copies and non-copies halved apart,
    seeded) and measured on the other, as `eval_calibration.py` does: each figure per split."""
    copies = sorted(table.loc[~table["non_copy_query"], "drawing_id"].unique())
    non_copies = sorted(table.loc[table["non_copy_query"], "drawing_id"].unique())
    figures: dict[str, list[float]] = {}
    for split in range(splits):
        rng = np.random.default_rng(1000 + split)
        c, n = rng.permutation(copies).tolist(), rng.permutation(non_copies).tolist()
        fit = set(c[: len(c) // 2] + n[: len(n) // 2])
        rows = table["drawing_id"].isin(fit)
        calibration = fit_calibration(table[rows], "bench", "verified", by="drawing_id")
        test = table[~rows]
        n_pairs = int(test.groupby("drawing_id")["n_relevant"].first().sum())
        for key, value in detection_metrics(test, n_pairs, calibration, k).items():
            figures.setdefault(key, []).append(value)
    return figures


def arm_label(arm: str, args: argparse.Namespace) -> str:
    """An arm's name as printed: `fused` is global search's ranking without region vectors."""
    if arm == "fused" and args.skip_regions:
        return "global"
    return f"words (top {args.top // 2})" if arm == "words_half" else arm


def report(
    args, sets, g, fused, inl, cost, lists, rows, gallery, feats, words, build_s, verifiable
) -> None:
    """Print the arms side by side and write `WORK/bench_shortlist.json`."""
    gate = RegionSearchParams().min_inliers
    det_rows, det_rel = sets["details_test"]
    whole_rows, whole_rel = sets["whole"]
    dis_rows = sets["distractors"][0]
    at = {int(q): i for i, q in enumerate(rows)}
    base = {
        "details MAP": retrieval_metrics(g[det_rows], det_rel, KS)["MAP"],
        "whole MAP": retrieval_metrics(g[whole_rows], whole_rel, KS)["MAP"],
    }
    feature_kb = np.mean([0 if f is None else len(f.keypoints) * (8 + 128) for f in feats]) / 1e3
    table = []
    for arm in ARMS:
        final = verified(fused, inl[arm], gate)
        det = retrieval_metrics(final[det_rows], det_rel, KS)
        whole = retrieval_metrics(final[whole_rows], whole_rel, KS)
        held = np.array(
            [bool(np.isin(rel, lists[arm][at[int(q)]]).any()) for q, rel in zip(det_rows, det_rel)]
        )
        flagged = [(inl[arm][q] >= gate).any() for q in dis_rows]
        extra = words.nbytes() / len(gallery) / 1e3 if arm != "fused" else 0.0
        detection = copy_detection(detection_table(final, fused, inl[arm], sets))
        spread = {
            key: f"{np.nanmean(v):.1f} ± {np.nanstd(v, ddof=1):.1f}"
            for key, v in detection.items()
            if key in DETECTION
        }
        table.append(
            {
                "shortlist": arm_label(arm, args),
                "verified per query": float(np.mean([len(lists[arm][at[int(q)]]) for q in rows])),
                "details MAP": det["MAP"],
                "details R@1": det["R@1"],
                "source in shortlist": float(np.mean(held)),
                "of verifiable details": float(np.mean(held[verifiable])),
                "whole MAP": whole["MAP"],
                "distractors flagged": float(np.mean(flagged)) if len(flagged) else float("nan"),
                "median ms/query": float(np.median(cost[arm]) * 1000),
                "p90 ms/query": float(np.percentile(cost[arm], 90) * 1000),
                "kB/artwork (features + words)": feature_kb + extra,
            }
            | spread
        )
    frame = pd.DataFrame(table)
    print(
        f"\ngallery {len(gallery)} artworks; top {args.top}; words {args.words} (built in "
        f"{build_s:.0f} s); gate {gate}; global search: {json.dumps(base)}"
    )
    print(
        f"queries: {len(det_rows)} held-out details ({int(verifiable.sum())} verifiable: their "
        f"artwork gets >= {gate} inliers), {len(whole_rows)} whole, "
        f"{len(dis_rows)} distractor drawings"
    )
    print(frame.set_index("shortlist").T.round(3).to_string())
    (args.work / "bench_shortlist.json").write_text(
        json.dumps(
            {
                "gallery": len(gallery),
                "top": args.top,
                "words": args.words,
                "build_s": build_s,
                "global": base,
                "rows": table,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
