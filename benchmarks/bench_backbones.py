"""Cost of every registry backbone at its default input size: multiply-accumulates per image
(counted by torch's FlopCounterMode, with nn.MultiheadAttention's fused kernel off so that CLIP's
attention is counted) and, with `--rate`, the bare forward rate on random weights (fp32, batch 1,
`--threads` torch threads, median of `--repeats` timed forwards after one warm-up).

    python benchmarks/bench_backbones.py [--rate] [--threads 1] [--repeats 5] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from drawmatch.models.backbones import backbone_spec, create_backbone, list_backbones


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", action="store_true", help="also time the forward")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'backbone':<20}{'input':>6}{'GMACs':>8}{'images/s':>10}")
    for name in args.only or list_backbones():
        spec = backbone_spec(name)
        net = create_backbone(name, pretrained=False).eval()
        x = torch.randn(1, 3, spec.input_size, spec.input_size)
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
        torch.backends.mha.set_fastpath_enabled(True)
        rate = "-"
        if args.rate:
            with torch.no_grad():
                net(x)
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    net(x)
                    times.append(time.perf_counter() - start)
            rate = f"{1.0 / statistics.median(times):.1f}"
        macs = counter.get_total_flops() / 2e9
        print(f"{name:<20}{spec.input_size:>6}{macs:>8.1f}{rate:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
