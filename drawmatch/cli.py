"""The `drawmatch` command: one subcommand per job, each `--config FILE` plus `key=value` overrides.

`jobs/<job>.py` calls `run_job` too, so `drawmatch embed ...` and `python jobs/embed.py ...` (what
`ray job submit` runs) are the same code path.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from drawmatch import settings
from drawmatch.settings import ConfigError, load_config

# job name -> (config class, module holding `run(config)`, one-line help)
JOBS: dict[str, tuple[type, str, str]] = {
    "ingest": (settings.IngestConfig, "drawmatch.ingest", "catalogue drawings and artworks"),
    "augment": (settings.AugmentConfig, "drawmatch.augment", "write style-augmented copies"),
    "embed": (settings.EmbedConfig, "drawmatch.embed", "embed catalogue images with a CNN"),
    "index": (settings.IndexConfig, "drawmatch.index", "build a FAISS index of artworks"),
    "regions": (
        settings.RegionsConfig,
        "drawmatch.regions",
        "region embeddings, region index and local features of artworks",
    ),
    "search": (settings.SearchConfig, "drawmatch.search", "top-k artworks for a drawing"),
    "evaluate": (settings.EvaluateConfig, "drawmatch.evaluate", "retrieval metrics for pairs"),
    "split": (settings.SplitConfig, "drawmatch.splits", "artwork-disjoint train/val/test folds"),
    "train": (
        settings.TrainConfig,
        "drawmatch.train",
        "fine-tune a backbone on one fold (Ray Train)",
    ),
    "sweep": (settings.SweepConfig, "drawmatch.sweep", "two-stage Ray Tune sweep over folds"),
    "demo": (settings.DemoConfig, "drawmatch.demo", "run the whole pipeline on bundled data"),
}

# convenience flags -> the override they stand for
FLAGS: dict[str, dict[str, str]] = {
    "embed": {"weights": "model.weights"},
    "search": {"query": "query", "k": "k"},
}
# convenience switches -> the boolean key they set
SWITCHES: dict[str, dict[str, str]] = {
    "evaluate": {"folds": "folds"},
}


def build_parser(job: str) -> argparse.ArgumentParser:
    _cls, _module, help_text = JOBS[job]
    parser = argparse.ArgumentParser(prog=f"drawmatch {job}", description=help_text)
    parser.add_argument("--config", help="YAML config file (keys of the job's config)")
    for flag, key in FLAGS.get(job, {}).items():
        parser.add_argument(f"--{flag}", help=f"same as {key}=VALUE")
    for flag, key in SWITCHES.get(job, {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"same as {key}=true")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def parse_job_config(job: str, argv: list[str]) -> Any:
    """Parse a job's command line into its checked config (raises ConfigError)."""
    cls, _module, _help = JOBS[job]
    args = build_parser(job).parse_intermixed_args(argv)
    overrides = list(args.overrides)
    for flag, key in FLAGS.get(job, {}).items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    for flag, key in SWITCHES.get(job, {}).items():
        if getattr(args, flag):
            overrides.append(f"{key}=true")
    return load_config(cls, args.config, overrides)


def run_job(job: str, argv: list[str] | None = None) -> int:
    """Parse, run and report one job; returns a process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        config = parse_job_config(job, list(sys.argv[1:] if argv is None else argv))
    except ConfigError as exc:
        print(f"drawmatch {job}: config error: {exc}", file=sys.stderr)
        return 2
    run: Callable[[Any], Any] = importlib.import_module(JOBS[job][1]).run
    try:
        run(config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"drawmatch {job}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in JOBS:
        print("usage: drawmatch JOB [--config FILE] [key=value ...]\n\njobs:")
        for name, (_cls, _module, help_text) in JOBS.items():
            print(f"  {name:<9} {help_text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown job {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return run_job(argv[0], argv[1:])
