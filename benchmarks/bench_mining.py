"""Cost of online hard-negative mining inside a training step, and of a gallery bank refresh.

One process, the real pieces of the train job: a step is the mining forward of the anchors
(no gradient), the search of their hardest non-positives in a gallery bank of `--gallery` artworks,
then forward and backward of anchors, positives and negatives and an optimiser step. Mining = the
first two parts. A bank refresh embeds gallery images without gradient; its cost per image is
measured and scaled to the gallery size.

    python benchmarks/bench_mining.py [--backbone efficientnet_lite0] [--image-size 224]
        [--batch-size 4] [--gallery 8577] [--steps 6]

Target (docs/design.md): mining <= 15 % of a step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

from drawmatch.models.backbones import create_backbone
from drawmatch.training.freezing import set_train_mode
from drawmatch.training.losses import make_loss, retrieval_step_loss
from drawmatch.training.mining import hardest_negatives, positive_mask


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--gallery", type=int, default=8577)
    parser.add_argument("--n-hardest", type=int, default=10)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    net = create_backbone(args.backbone, pretrained=args.backbone == "efficientnet_lite0")
    set_train_mode(net, "frozen")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5, weight_decay=1e-4)
    loss_fn = make_loss("triplet", 0.7)
    b, s = args.batch_size, args.image_size
    bank = nn.functional.normalize(torch.randn(args.gallery, net.dim), dim=1)
    generator = torch.Generator().manual_seed(0)

    t_mine = t_total = 0.0
    for step in range(args.steps + 1):  # the first step warms up and is not counted
        anchors, positives = torch.randn(b, 3, s, s), torch.randn(b, 3, s, s)
        pos_idx = torch.randint(0, args.gallery, (b,))
        pos_sets = [{int(i)} for i in pos_idx]
        t0 = time.perf_counter()
        with torch.no_grad():
            probe = nn.functional.normalize(net(anchors), dim=1)
        negatives = hardest_negatives(probe, bank, pos_sets, args.n_hardest, generator)
        t1 = time.perf_counter()
        emb = nn.functional.normalize(
            net(torch.cat([anchors, positives, torch.randn(b, 3, s, s)])), dim=1
        )
        ref_labels = torch.cat([pos_idx, negatives])
        loss = retrieval_step_loss(
            loss_fn, emb[:b], emb[b:], positive_mask(pos_sets, ref_labels), "triplet"
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if step > 0:
            t_mine += t1 - t0
            t_total += t2 - t0

    net.eval()
    n_refresh = 32
    with torch.no_grad():
        net(torch.randn(4, 3, s, s))
        t = time.perf_counter()
        for _ in range(n_refresh // 8):
            net(torch.randn(8, 3, s, s))
        per_image = (time.perf_counter() - t) / n_refresh

    steps = args.steps
    print(
        f"{args.backbone} at {s}px, {b} triplets per step, gallery bank {args.gallery} x "
        f"{net.dim}, {args.threads} thread(s), {steps} steps"
    )
    print(f"step (mining + forward/backward of {3 * b} images + Adam): {t_total / steps:.3f} s")
    print(f"mining (anchor forward without gradient + bank search): {t_mine / steps:.3f} s")
    print(f"mining share of a step: {100 * t_mine / t_total:.1f} %  (target <= 15 %)")
    print(
        f"bank refresh: {per_image * 1000:.1f} ms per artwork without gradient (decode not "
        f"included) -> {per_image * args.gallery:.0f} s for {args.gallery} artworks on this "
        f"machine, i.e. {per_image * args.gallery / (t_total / steps):.0f} steps' worth"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
