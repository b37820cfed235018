"""Ray entrypoint of the verify job: `python jobs/verify.py --config FILE [key=value ...]`."""

from __future__ import annotations

import sys

from drawmatch.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("verify", argv)


if __name__ == "__main__":
    sys.exit(main())
