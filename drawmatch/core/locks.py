"""One writer at a time: a lock per output folder and kind of shared state.

Jobs that rewrite shared state hold a lock for the driver's whole run (Ray workers write parts
only while their driver holds it): `embed` on `embeddings/<model_tag>/`, `index` on
`index/<model_tag>/`, `ingest` and `augment` on the catalogue of an output root. A second run on
the same state is refused at once with `JobLockedError`:

    another drawmatch embed run is writing to <dir> (pid N on host H since T); wait for it or
    use another out=

Local folders (and shared file systems with working `flock`, such as NFSv4) use an exclusive,
non-blocking `fcntl.flock` on a lock file, `.<name>.lock`, which names its owner. The kernel
releases it when the process ends, however it ends, so a killed run never leaves a stale lock.

Object stores (`s3://`, `gs://`) cannot lock: there, concurrent runs on one output root are the
user's responsibility. A run writes a marker object naming its owner and removes it at the end;
a run that finds a marker warns (the marker may be left by a killed run) and carries on. The
readers and an embed rerun read and keep one row per id, so a collision costs work, not results.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow.fs as pafs

from drawmatch.core import storage

R = TypeVar("R")


class JobLockedError(ValueError):
    """Another run holds the lock. A ValueError, so the CLI reports it in one line like every
    other refusal (exit status 1)."""


def _owner(job: str) -> dict[str, Any]:
    return {
        "job": job,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _describe(raw: str) -> tuple[str, str]:
    """(job, "pid N on host H since T") from a lock file's text; unknown parts say so."""
    try:
        owner = json.loads(raw)
        who = f"pid {owner['pid']} on host {owner['host']} since {owner['since']}"
        return str(owner["job"]), who
    except (ValueError, KeyError, TypeError):
        return "", "owner not recorded yet"


def _message(job: str, directory: str, raw: str) -> str:
    holder, who = _describe(raw)
    return (
        f"another drawmatch {holder or job} run is writing to {directory} ({who}); "
        "wait for it or use another out="
    )


@contextlib.contextmanager
def job_lock(directory: str, job: str, name: str = "drawmatch") -> Iterator[None]:
    """Hold the lock `<directory>/.<name>.lock` for `job` (e.g. `embed`); raise
    `JobLockedError` at once if another run holds it."""
    fs, local = storage.filesystem(directory)
    if not isinstance(fs, pafs.LocalFileSystem):
        with _marker(directory, job, name):
            yield
        return
    os.makedirs(local, exist_ok=True)
    path = os.path.join(local, f".{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            raise JobLockedError(_message(job, directory, raw)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_owner(job)).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the file stays: removing it would race with a new locker
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _marker(directory: str, job: str, name: str) -> Iterator[None]:
    """An owner marker on an object store: a warning for the next run, not a lock."""
    path = storage.join(directory, f".{name}.lock")
    if storage.exists(path):
        print(
            "warning: "
            + _message(job, directory, storage.read_text(path)).replace(
                "wait for it or use another out=",
                "object stores cannot be locked, so this run carries on; if no such run is "
                f"active, the marker was left by a killed run: remove {path}",
            ),
            file=sys.stderr,
        )
    storage.write_text(path, json.dumps(_owner(job)))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            storage.remove(path)


def locked(
    job: str, directory: Callable[[Any], str], name: str = "drawmatch"
) -> Callable[[Callable[[Any], R]], Callable[[Any], R]]:
    """Decorate a job's `run(config)` so it holds `job_lock(directory(config), job, name)`."""

    def wrap(run: Callable[[Any], R]) -> Callable[[Any], R]:
        @functools.wraps(run)
        def locked_run(config: Any) -> R:
            with job_lock(directory(config), job, name):
                return run(config)

        return locked_run

    return wrap


def catalogue_lock(job: str) -> Callable[[Callable[[Any], R]], Callable[[Any], R]]:
    """The lock of jobs that rewrite `catalogue.parquet` (ingest, augment): one per output root."""
    return locked(job, lambda config: str(config.out), name="catalogue")
