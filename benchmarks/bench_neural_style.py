"""Cost of one neural style transfer rendition on CPU (the augment job's `neural` style).

Times `NeuralStylizer` (EfficientNet-Lite0, ImageNet weights) on drawing/photo pairs of the bundled
demo data, each drawing in the style of its first paired photo, with torch limited to `--threads`
(an augment actor uses one), after one warm-up rendition; prints seconds per image and per step.

    python benchmarks/bench_neural_style.py [--size 256] [--steps 150] [--images 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image

from drawmatch.augment.neural_style import NeuralStylizer
from drawmatch.augment.styles import NeuralStyleParams
from drawmatch.workflows.demo import demo_data_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    data = demo_data_dir()
    pairs = pd.read_csv(data / "pairs.csv").drop_duplicates("drawing_id")
    params = NeuralStyleParams(size=args.size, steps=args.steps, optimizer=args.optimizer)
    stylizer = NeuralStylizer(params, threads=args.threads)

    def load(folder: str, name: str) -> np.ndarray:
        return np.asarray(Image.open(data / folder / f"{name}.jpg").convert("RGB"))

    rows = list(pairs.itertuples(index=False))[: args.images + 1]
    times = []
    for n, row in enumerate(rows):
        content, style = load("drawings", row.drawing_id), load("artworks", row.artwork_id)
        start = time.perf_counter()
        stylizer(content, style)
        if n > 0:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    per_image = float(np.mean(times))
    print(
        f"{args.size}px, {args.steps} {args.optimizer} steps, {args.threads} thread(s), "
        f"torch {torch.__version__}: {per_image:.1f} s per image (min {min(times):.1f}, "
        f"max {max(times):.1f}, {len(times)} images), {per_image / args.steps:.3f} s per step"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
