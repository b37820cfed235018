"""One writer at a time: the job lock on local folders, its owner message, its release when the
holder dies, and the owner marker on an object store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from drawmatch.core import locks, storage
from drawmatch.jobs import augment
from drawmatch.jobs.augment import AugmentConfig
from tests.conftest import make_bucket

_HOLD = (
    "import sys, time; from drawmatch.core.locks import job_lock\n"
    "with job_lock(sys.argv[1], 'embed'):\n"
    "    print('holding', flush=True); time.sleep(600)\n"
)


def test_a_held_lock_names_its_owner_and_dies_with_it(tmp_path):
    directory = str(tmp_path / "embeddings" / "tag")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, directory],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(locks.JobLockedError) as err:
            with locks.job_lock(directory, "embed"):
                pass
        message = str(err.value)
        assert message.startswith(
            f"another drawmatch embed run is writing to {directory} (pid {holder.pid} on host "
            f"{socket.gethostname()} since "
        )
        assert message.endswith("); wait for it or use another out=")
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed run: the kernel releases its lock
        holder.wait()
    with locks.job_lock(directory, "embed"):
        pass


def test_augment_is_refused_while_another_run_rewrites_the_catalogue(tmp_path):
    out = str(tmp_path / "out")
    with locks.job_lock(out, "ingest", name="catalogue"):
        with pytest.raises(locks.JobLockedError, match="another drawmatch ingest run is writing"):
            augment.run(AugmentConfig(out=out, select="all"))
    # released: augment gets past the lock (and stops at the missing catalogue)
    with pytest.raises(FileNotFoundError, match="no catalogue"):
        augment.run(AugmentConfig(out=out, select="all"))


def test_an_object_store_gets_an_owner_marker_and_a_warning(s3_server, capsys):
    root = make_bucket("locks")
    directory = f"{root}/run/embeddings/tag"
    marker = f"{directory}/.drawmatch.lock"
    with locks.job_lock(directory, "embed"):
        assert f'"pid": {os.getpid()}' in storage.read_text(marker)
        with locks.job_lock(directory, "embed"):  # cannot be refused: warned
            pass
    warning = capsys.readouterr().err
    assert f"warning: another drawmatch embed run is writing to {directory}" in warning
    assert "object stores cannot be locked" in warning
    assert not storage.exists(marker)
    assert not storage.list_files(directory, "part-*.parquet")


def test_a_released_lock_is_free_and_names_nobody(tmp_path):
    with locks.job_lock(str(tmp_path), "index"):
        assert '"job": "index"' in (tmp_path / ".drawmatch.lock").read_text()
    assert (tmp_path / ".drawmatch.lock").read_text() == ""
    with locks.job_lock(str(tmp_path), "index"):
        pass


def test_ingest_is_refused_while_augment_rewrites_the_catalogue(tmp_path):
    from drawmatch.jobs import ingest
    from drawmatch.jobs.ingest import IngestConfig

    out = str(tmp_path / "out")
    scans = tmp_path / "scans"
    scans.mkdir()
    with locks.job_lock(out, "augment", name="catalogue"):
        with pytest.raises(locks.JobLockedError, match="another drawmatch augment run is writing"):
            ingest.run(IngestConfig(out=out, drawings_root=str(scans)))
    assert not (tmp_path / "out" / "catalogue.parquet").exists()
