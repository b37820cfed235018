"""Ray entrypoint of the retrain job: `python jobs/retrain.py --config FILE [key=value ...]`."""

from __future__ import annotations

import sys

from drawmatch.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("retrain", argv)


if __name__ == "__main__":
    sys.exit(main())
