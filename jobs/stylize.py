"""Ray entrypoint of the stylize job: `python jobs/stylize.py --content IMG --style IMG [--out FILE]`.

The job runs in one process (no Ray stages): one image is one optimisation.
"""

from __future__ import annotations

import sys

from drawmatch.cli import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job("stylize", argv)


if __name__ == "__main__":
    sys.exit(main())
