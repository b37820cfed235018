"""Cost of region search on a generated gallery of 10,000 artworks: region vectors per artwork,
index size, build time, query latency and recall@50 of approximate region indexes against the exact
one, and the extra cost of geometric verification per query.

The gallery: the real region vectors of a run of `benchmarks/eval_regions.py` (the 337 real
artworks of the dev set, EfficientNet-Lite0, R regions each) and synthetic artworks made from them
until there are `--artworks`: each synthetic artwork is a real artwork's region set moved by one
random direction shared by its regions (noise `--spread`) plus a little per-region noise, then
L2-normalised, so neighbourhoods and the region structure look like real data (embedding 10,000
images at 448 px is out of reach of these 2 cores). Queries: the run's real query embeddings
(details and whole drawings). Recall@50: share of the exact index's 50 best artworks (best region
per artwork) that an approximate index also returns in its 50 best, averaged over queries.

    python benchmarks/bench_regions.py --run runs/regions/run [--artworks 10000] [--threads 2] \
        [--nprobe 64 128]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from drawmatch.data import catalogue as cat
from drawmatch.data.embeddings import pick_model_tag, read_embeddings
from drawmatch.models.region_embedder import read_regions
from drawmatch.retrieval.region_index import best_per_artwork, build_region_faiss

CONFIGS = (
    ("flat", {}),
    ("ivf", {"nlist": 256, "nprobe": 8}),
    ("ivf", {"nlist": 256, "nprobe": 16}),
    ("ivf", {"nlist": 256, "nprobe": 32}),
    ("ivf", {"nlist": 256, "nprobe": 64}),
    ("ivf", {"nlist": 256, "nprobe": 128}),
    ("ivfpq", {"nlist": 256, "nprobe": 32, "pq_m": 128}),
)


def generated_gallery(
    ids: list[str], emb: np.ndarray, n_artworks: int, spread: float, seed: int
) -> tuple[list[str], np.ndarray]:
    """Real region sets plus synthetic ones up to `n_artworks` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    real = list(dict.fromkeys(ids))
    rows = {a: np.flatnonzero(np.asarray(ids) == a) for a in real}
    out_ids, blocks = list(ids), [emb]
    dim = emb.shape[1]
    for n in range(n_artworks - len(real)):
        parent = real[int(rng.integers(len(real)))]
        block = emb[rows[parent]]
        shift = rng.normal(size=(1, dim)).astype(np.float32) * spread / np.sqrt(dim)
        noise = rng.normal(size=block.shape).astype(np.float32) * (spread / 3) / np.sqrt(dim)
        block = block + shift + noise
        blocks.append(block / np.linalg.norm(block, axis=1, keepdims=True))
        out_ids += [f"gen{n:05d}"] * len(block)
    return out_ids, np.concatenate(blocks).astype(np.float32)


def top_artworks(
    index: object,
    queries: np.ndarray,
    ids: list[str],
    n_hits: int,
    k: int,
    latency_queries: int = 30,
) -> tuple[list[list[str]], float]:
    """Best `k` artworks per query from `n_hits` region hits (all queries in one batch), and the
    mean latency per query (s) of the first `latency_queries` searched one at a time."""
    out = []
    scores, positions = index.search(queries, n_hits)  # type: ignore[attr-defined]
    for s, p in zip(scores, positions):
        ok = p >= 0
        best, _b = best_per_artwork([ids[i] for i in p[ok]], s[ok], np.zeros((int(ok.sum()), 4)))
        out.append(sorted(best, key=lambda a: -best[a])[:k])
    start = time.perf_counter()
    timed = queries[:latency_queries]
    for q in timed:  # one query at a time, with the per-artwork collapse
        s1, p1 = index.search(q[None], n_hits)  # type: ignore[attr-defined]
        ok1 = p1[0] >= 0
        best_per_artwork([ids[i] for i in p1[0][ok1]], s1[0][ok1], np.zeros((int(ok1.sum()), 4)))
    return out, (time.perf_counter() - start) / len(timed)


def main(argv: list[str] | None = None) -> int:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="output root of eval_regions.py")
    parser.add_argument("--artworks", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=0.8)
    parser.add_argument("--n-hits", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--verify-top", type=int, default=500, help="the search default")
    parser.add_argument("--verification-only", action="store_true", help="skip the region indexes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobe", type=int, nargs="*", help="only flat and ivf at these nprobe")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    out = str(args.run)
    tag = pick_model_tag(out, None)
    catalogue = cat.read_catalogue(out)
    if args.verification_only:
        verification_cost(out, catalogue, cat.query_ids(catalogue), args.verify_top)
        return 0
    ids, _region, _box, emb = read_regions(out, tag)
    per_artwork = len(ids) / len(set(ids))
    gids, gemb = generated_gallery(ids, emb, args.artworks, args.spread, args.seed)
    queries_ids = cat.query_ids(catalogue)
    _q, queries = read_embeddings(out, tag, ids=queries_ids)
    print(
        f"gallery: {len(set(gids))} artworks ({len(set(ids))} real), {per_artwork:.0f} regions each,"
        f" {len(gids)} vectors of {gemb.shape[1]} dims; {len(queries)} real queries; "
        f"{args.threads} FAISS threads; n_hits {args.n_hits}"
    )
    exact: list[list[str]] = []
    print(f"{'index':<34}{'build s':>9}{'size MB':>9}{'ms/query':>10}{'recall@50':>11}")
    configs = CONFIGS
    if args.nprobe:
        configs = (("flat", {}),) + tuple(("ivf", {"nlist": 256, "nprobe": n}) for n in args.nprobe)
    for kind, params in configs:
        start = time.perf_counter()
        index = build_region_faiss(gemb, kind, **params)  # type: ignore[arg-type]
        build = time.perf_counter() - start
        size = len(faiss.serialize_index(index)) / 1e6
        found, latency = top_artworks(index, queries, gids, args.n_hits, 50)
        if kind == "flat":
            exact = found
        recall = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(found, exact)])
        name = kind + ("" if not params else " " + ",".join(f"{k}={v}" for k, v in params.items()))
        print(f"{name:<34}{build:>9.1f}{size:>9.1f}{latency * 1000:>10.1f}{recall:>11.3f}")
        del index
    verification_cost(out, catalogue, queries_ids, args.verify_top)
    return 0


def verification_cost(out: str, catalogue: object, query_ids: list[str], top: int) -> None:
    """Mean time per query to extract its local features and verify `top` stored artworks, with
    the search defaults (`RegionSearchParams`: the query's own side and keypoint limit, RootSIFT)."""
    import json

    import cv2

    from drawmatch.core import storage
    from drawmatch.core.images import open_image
    from drawmatch.models.local_features import extract, read_features, verify
    from drawmatch.retrieval.region_index import region_index_dir
    from drawmatch.retrieval.region_search import RegionSearchParams

    params = RegionSearchParams()

    cv2.setNumThreads(1)
    info = json.loads(
        storage.read_text(
            storage.join(region_index_dir(out, pick_model_tag(out, None)), "index.json")
        )
    )
    local = info.get("local_features")
    if not local:
        print("no local features stored: verification not measured")
        return
    feats = read_features(out, local["kind"], int(local["max_side"]))
    names = sorted(feats)
    paths = cat.resolve_paths(
        catalogue.set_index("id").loc[query_ids[:20]].reset_index(),  # type: ignore[attr-defined]
        cat.read_roots(out),
    )
    t_extract, t_verify = [], []
    for i, path in enumerate(paths):
        start = time.perf_counter()
        image = open_image(path, draft_size=1024)
        qf = extract(image, local["kind"], params.query_feature_side, params.query_n_features)
        t_extract.append(time.perf_counter() - start)
        start = time.perf_counter()
        for j in range(top):
            cand = feats[names[(i * top + j) % len(names)]]
            verify(qf, cand, local["kind"], params.ratio, rootsift=params.rootsift)
        t_verify.append(time.perf_counter() - start)
    n_kp = np.mean([len(f.keypoints) for f in feats.values()])
    print(
        f"verification ({local['kind']} at {local['max_side']} px, {n_kp:.0f} keypoints per "
        f"artwork, rootsift {params.rootsift}, 1 thread): query "
        f"features {1000 * np.mean(t_extract):.0f} ms, {top} candidates "
        f"{1000 * np.mean(t_verify):.0f} ms ({1000 * np.mean(t_verify) / top:.1f} ms each), "
        f"stored features {sum(f.descriptors.nbytes + f.keypoints.nbytes for f in feats.values()) / len(feats) / 1e3:.0f} kB per artwork"
    )


if __name__ == "__main__":
    raise SystemExit(main())
