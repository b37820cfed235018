"""Jobs as users submit them: a real Ray head (`ray start --head`), `ray job submit --working-dir .`
of the embed job and of a two-trial sweep on tiny data, then their outputs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drawmatch import embed
from tests.conftest import hand_catalogue, make_image, tiny_training_set

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head started with `ray start --head --block` on free ports, with token auth as
    Ray 2.60's job server wants it; stopped by terminating it (never `ray stop`, which would
    also stop the tests' own local Ray instance)."""
    if shutil.which("ray") is None:
        pytest.skip("the ray command is not installed")
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        ["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True
    )
    dashboard = _free_port()
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "2",
            "--port",
            str(_free_port()),
            "--dashboard-port",
            str(dashboard),
            "--dashboard-host",
            "127.0.0.1",
            # Ports that default to fixed numbers, taken by the tests' own local instance otherwise.
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--dashboard-agent-grpc-port",
            str(_free_port()),
            "--metrics-export-port",
            str(_free_port()),
            "--runtime-env-agent-port",
            str(_free_port()),
            "--ray-client-server-port",
            str(_free_port()),
            "--temp-dir",
            str(tmp_path_factory.mktemp("ray-head")),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:
        ready = subprocess.run(["ray", "job", "list"], env=env, capture_output=True)
        if ready.returncode == 0:
            break
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited: {head.stdout.read() if head.stdout else ''}")
        time.sleep(2)
    else:
        head.terminate()
        pytest.fail("the Ray head's job server did not come up in 120 s")
    yield env
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()


def _submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`ray job submit`, waiting for the job; retried while the head's job agent starts."""
    for _attempt in range(30):
        done = subprocess.run(
            ["ray", "job", "submit", "--working-dir", str(ROOT), "--", sys.executable, *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if "No available agent" not in done.stderr + done.stdout:
            return done
        time.sleep(2)
    return done


def test_submitted_embed_job(ray_head, tmp_path):
    files = [make_image(tmp_path / "a" / f"art{i}.jpg", (64, 64), seed=i) for i in range(5)]
    out = tmp_path / "out"
    hand_catalogue(out, {"artwork": files})
    done = _submit(
        ray_head,
        "jobs/embed.py",
        f"out={out}",
        "model.backbone=tiny",
        "model.pretrained=false",
        "model.image_size=32",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    ids, emb = embed.read_embeddings(out, "tiny-avg-32-random")
    assert sorted(ids) == [f"art{i}" for i in range(5)] and emb.shape == (5, 32)


def test_submitted_two_trial_sweep(ray_head, tmp_path):
    out, _fold = tiny_training_set(tmp_path, n_folds=2)
    done = _submit(
        ray_head,
        "jobs/sweep.py",
        f"out={out}",
        "name=submitted",
        "margins=[0.3, 0.7]",
        "lrs=[0.01]",
        "backbones=[tiny]",
        "use_styles=[false]",
        "n_hardest=[3]",
        "top_k=1",
        "base.model.pretrained=false",
        "base.model.image_size=32",
        "base.train_resize=36",
        "base.train_crop=32",
        "base.batch_size=2",
        "base.n_hardest=3",
        "base.epochs=1",
        "base.cpus_per_worker=0.5",
        "trial_cpus=0.1",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = out / "sweep" / "submitted"
    assert (sweep_dir / "best_train_config.yaml").exists()
    assert len(list((out / "runs").glob("submitted-s2-*"))) == 2  # top 1 config x 2 folds
