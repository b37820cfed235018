"""The review queue's next card at collection scale: closest first against most uncertain first
(a new threshold each request: the worst case, every decided match moves the median; and the
same threshold again: the cached order) and, on the same candidates with a calibrated confidence,
likely copies first and most uncertain first by the confidence, with decided and skipped pairs
to step over.

    python benchmarks/bench_review_queue.py --drawings 100000 --k 20 --rounds 7

Candidates are generated (random distances and confidences), as many as the batch search of `--drawings`
drawings at top `--k` gives; `--decided` pairs are decided, `--skipped` skipped, `--matches` of
them matches (the threshold's median is over those). Each arm answers `--requests` requests per
round (`ReviewQueue.next`, plus `known_match_threshold` in the uncertain order without a
confidence: what `/review` computes besides the store's queries); the rate is requests per second. Arms interleaved and rotated (`benchlib`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import loadavg, print_report, run_interleaved  # noqa: E402

from drawmatch.serve.review_queue import Candidates, ReviewQueue, known_match_threshold  # noqa: E402


def candidates(drawings: int, k: int, artworks: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = drawings * k
    return pd.DataFrame(
        {
            "drawing_id": np.repeat([f"d{i:07d}" for i in range(drawings)], k),
            "artwork_id": [f"a{j:06d}" for j in rng.integers(0, artworks, n)],
            "rank": np.tile(np.arange(1, k + 1), drawings),
            "distance": rng.uniform(0.2, 1.0, n).astype(np.float32),
        }
    ).drop_duplicates(["drawing_id", "artwork_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--artworks", type=int, default=10_000)
    parser.add_argument("--decided", type=int, default=2_000)
    parser.add_argument("--matches", type=int, default=500)
    parser.add_argument("--skipped", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    table = candidates(args.drawings, args.k, args.artworks, 0)
    cands = Candidates.from_table(table)
    confidence = np.random.default_rng(2).uniform(0.0, 1.0, len(table))
    calibrated = Candidates.from_table(table.assign(confidence=confidence))
    queue = ReviewQueue({"m": cands, "calibrated": calibrated})
    rng = np.random.default_rng(1)
    picked = table.iloc[rng.choice(len(table), args.decided + args.skipped, replace=False)]
    pairs = list(zip(picked["drawing_id"], picked["artwork_id"]))
    decided = set(pairs[: args.decided])
    matches = set(pairs[: args.matches])
    skipped = {p: i for i, p in enumerate(pairs[args.decided :])}
    print(f"{len(cands):,} candidates, {len(decided):,} decided, {len(skipped):,} skipped")
    moved = [0]

    def arm(order: str, fresh: bool = False, tag: str = "m"):
        def run() -> float:
            t0 = time.perf_counter()
            for _ in range(args.requests):
                threshold = None
                if order == "uncertain" and tag == "m":
                    threshold = known_match_threshold(cands, matches)
                    if fresh:  # a new match moved the median: a new order
                        moved[0] += 1
                        threshold = (threshold or 0.0) + 1e-9 * moved[0]
                queue.next(tag, decided, skipped, 1, order, threshold)
            return args.requests / (time.perf_counter() - t0)

        return run

    before = loadavg()
    samples = run_interleaved(
        {
            "closest first": arm("closest"),
            "uncertain, same threshold (cached)": arm("uncertain"),
            "uncertain, new threshold each time": arm("uncertain", fresh=True),
            "likely first (confidence)": arm("likely", tag="calibrated"),
            "uncertain by confidence": arm("uncertain", tag="calibrated"),
        },
        args.rounds,
    )
    print_report(
        "review queue: next card",
        samples,
        [
            ("cached uncertain / closest", "uncertain, same threshold (cached)", "closest first"),
            (
                "new-threshold uncertain / closest",
                "uncertain, new threshold each time",
                "closest first",
            ),
            ("likely (confidence) / closest", "likely first (confidence)", "closest first"),
            ("uncertain by confidence / closest", "uncertain by confidence", "closest first"),
        ],
        before,
        loadavg(),
        unit="requests/s",
    )


if __name__ == "__main__":
    main()
