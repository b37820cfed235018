"""What a run prints and counts: no Ray error-level noise on a clean run, a lost worker reported
with the counts of what went in and came out, and no Ray start when there is nothing to do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drawmatch.data import catalogue as cat
from drawmatch.data.renditions import ensure_rendition, rendition_path
from drawmatch.jobs import thumbnails
from drawmatch.jobs.thumbnails import ThumbnailsConfig
from tests import serve_data
from tests.conftest import hand_catalogue, make_image

_CLI = "import sys; from drawmatch.cli import main; sys.exit(main(sys.argv[1:]))"
# Ray's C++ log lines: `[date time,ms E pid tid] file.cc:line: ...`; E is the error level
_CPP_ERROR = re.compile(r"^\[[^\]]* E \d+ \d+\] \S+\.cc:\d+", re.MULTILINE)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", _CLI, *argv], env=env, capture_output=True, text=True, timeout=600
    )


def _assert_quiet(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    assert not _CPP_ERROR.findall(run.stderr), run.stderr[-3000:]
    assert "core_worker.cc" not in run.stderr
    assert "Mutex corrupt" not in run.stderr and "SIGABRT" not in run.stderr


def test_a_thumbnails_rerun_with_nothing_missing_starts_no_ray(tmp_path, monkeypatch):
    import ray

    out = serve_data.build(tmp_path, n_drawings=3, n_artworks=2)
    config = ThumbnailsConfig(out=str(out), sizes=(64, 128))
    rows = thumbnails.select(cat.read_catalogue(out), config.collections)
    sources = cat.resolve_paths(rows, cat.read_roots(out))
    for source, sha in zip(sources, rows["sha256"]):  # every rendition made beforehand
        for size in config.sizes:
            assert ensure_rendition(out, source, sha, size)[1]
    was_up = ray.is_initialized()

    def no_ray(*_args: object) -> None:
        raise AssertionError("Ray was started with nothing to render")

    monkeypatch.setattr(thumbnails, "init_ray", no_ray)
    result = thumbnails.run(config)
    assert (result.images, result.made, result.errors) == (len(rows), 0, {})
    assert ray.is_initialized() == was_up
    # one rendition gone: that one is missing now, and Ray is needed again
    Path(rendition_path(out, str(rows["sha256"].iloc[0]), 64)).unlink()
    with pytest.raises(AssertionError, match="Ray was started"):
        thumbnails.run(config)


def test_every_image_of_a_thumbnails_task_comes_back_made_or_with_its_reason(tmp_path):
    good = make_image(tmp_path / "good.jpg", (90, 60), seed=1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:40])  # a truncated file
    sha = "ab" * 32
    rows = [("good", str(good), sha), ("broken", str(broken), "cd" * 32), ("odd", str(good), "x")]
    back = thumbnails.render_part(rows, str(tmp_path / "out"), (32, 64), 85, 10**8)
    assert [(i, n) for i, n, _e in back] == [("good", 2), ("broken", 0), ("odd", 0)]
    assert back[0][2] == "" and back[1][2] and "not a sha256" in back[2][2]
    assert thumbnails.missing_sizes(str(tmp_path / "out"), sha, (32, 64, 128)) == [128]
    # a hash that is not one is work for a task (which records why), not a crash of the job
    assert thumbnails.needs_work(str(tmp_path / "out"), "x", (32,))


@pytest.mark.slow
def test_embed_and_thumbnails_runs_print_no_ray_error_lines(ray_local, tmp_path):
    """A clean run's stderr (the job in its own process, joining the test's Ray) holds no
    error-level Ray line and no worker crash."""
    drawings = [make_image(tmp_path / "d" / f"d{i}.jpg", (40, 40), seed=i) for i in range(6)]
    out = tmp_path / "out"
    hand_catalogue(out, {"drawing": drawings})
    address = f"ray.address={ray_local.get_runtime_context().gcs_address}"
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    embedded = _cli("embed", f"out={out}", *tiny, "cpus_per_actor=0.5", "decode_cpus=0.25", address)
    _assert_quiet(embedded)
    assert "6 embedded, 0 failed" in embedded.stdout
    rendered = _cli("thumbnails", f"out={out}", "sizes=[64]", address)
    _assert_quiet(rendered)
    assert "thumbnails: 6 renditions made for 6 of 6 images" in rendered.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["actor", "task"])
def test_a_stage_whose_worker_dies_stops_the_job_with_the_counts(ray_local, tmp_path, kind):
    """A model actor or decode task whose process dies is not restarted or retried in silence:
    the run stops with one line that counts what went in, what was done and what was not."""
    from drawmatch.runtime.pipeline import Stage, WorkerLostError, run_stages

    def dies_once(batch: dict[str, np.ndarray], marker: str) -> dict[str, np.ndarray]:
        """Kills its own process the first time it sees x13, as a decoder crash on a hostile
        file would; passes every other row. Defined here, so that Ray ships it by value."""
        if "x13" in batch["id"] and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        n = len(batch["id"])
        return {"id": batch["id"], "ok": np.ones(n, bool), "error": np.full(n, "", object)}

    class DiesOnce:
        def __init__(self, marker: str) -> None:
            self.marker = marker

        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dies_once(batch, self.marker)

    fn = DiesOnce if kind == "actor" else dies_once
    marker = str(tmp_path / "died")
    todo = pd.DataFrame({"id": [f"x{i}" for i in range(20)]})
    stage = Stage(fn, batch_size=4, num_cpus=0.5, kwargs={"marker": marker}, actors=1)
    with pytest.raises(WorkerLostError) as caught:  # an OSError: the CLI says it in one line
        run_stages(todo, 4, [stage], "test")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("test stopped (")
    counts = re.search(r"(\d+) in, (\d+) done and kept, (\d+) errors, (\d+) not done", message)
    assert counts, message
    n_in, done, errors, not_done = map(int, counts.groups())
    assert n_in == 20 and errors == 0 and not_done >= 1 and done + not_done == 20


@pytest.mark.slow
def test_a_thumbnails_task_whose_worker_dies_comes_back_as_an_error(ray_local, tmp_path):
    """Every part given to `run_tasks` comes back once: with its result, or with the Ray error
    that lost it (not retried, so a crash is never hidden)."""
    import ray

    def render(part: list[str], marker: str) -> list[str]:
        if "bad" in part and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return [p.upper() for p in part]

    task = ray.remote(num_cpus=0.5, max_retries=0)(render)
    parts = [["a", "b"], ["bad", "c"], ["d"]]
    back = list(thumbnails.run_tasks(task, parts, (str(tmp_path / "died"),), limit=2))
    assert sorted(map(tuple, (p for p, _r in back))) == sorted(map(tuple, parts))
    results = {tuple(p): r for p, r in back}
    assert results[("a", "b")] == ["A", "B"] and results[("d",)] == ["D"]
    assert isinstance(results[("bad", "c")], ray.exceptions.WorkerCrashedError)


def test_ray_trains_own_restart_notice_is_dropped_and_every_other_worker_line_kept():
    from drawmatch.runtime.ray_setup import drop_ray_noise

    printed: list[dict[str, object]] = []
    notice = (
        "[2026-12-06 07:38:58,953 E 14556 14653] core_worker.cc:2465: Actor with class name: "
        "'PreemptionWatcher' and ID: '74772bcc' has constructor arguments in the object store "
        "and max_restarts > 0. If the arguments in the object store go out of scope or are lost, "
        "the actor restart will fail."
    )
    ours = notice.replace("'PreemptionWatcher'", "'MapWorker(MapBatches(Embedder))'")
    crash = "[mutex.cc : 1954] RAW: Check failed: Lock: Mutex corrupt: both reader and writer"
    show = drop_ray_noise(printed.append)
    show({"pid": 1, "is_err": True, "lines": [notice, ours, crash, "Traceback (most recent"]})
    show({"pid": 2, "is_err": True, "lines": [notice]})  # nothing left: nothing printed
    assert printed == [{"pid": 1, "is_err": True, "lines": [ours, crash, "Traceback (most recent"]}]


def test_the_filter_goes_once_in_front_of_rays_printer_of_worker_output(ray_local):
    """The private hook the filter relies on (Ray 2.60's dispatcher) is where it is expected."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    from drawmatch.runtime.ray_setup import filter_worker_output

    before = list(dispatcher.handlers)
    try:
        dispatcher.add_handler("ray_print_logs", print)  # as ray.init(log_to_driver=True) does
        filter_worker_output()
        filter_worker_output()  # once per process, however often a job starts Ray
        printers = [h for name, h in dispatcher.handlers if name == "ray_print_logs"]
        assert len(printers) == 1 and getattr(printers[0], "drops_ray_noise", False)
    finally:
        dispatcher.handlers = before
