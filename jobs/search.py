"""Ray entrypoint of the search job: `python jobs/search.py --config FILE [key=value ...]`."""

from __future__ import annotations

import sys

from drawmatch.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("search", argv)


if __name__ == "__main__":
    sys.exit(main())
