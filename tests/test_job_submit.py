"""Jobs as users submit them: a real Ray head (`ray start --head`), `ray job submit --working-dir .`
of the embed job and of a two-trial sweep on tiny data, then their outputs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings
from tests.conftest import hand_catalogue, make_bucket, make_image, tiny_training_set

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


def _submit(
    env: dict[str, str], *args: str, runtime_env: dict[str, object] | None = None
) -> subprocess.CompletedProcess[str]:
    """`ray job submit`, waiting for the job; retried while the head's job agent starts."""
    extra = ["--runtime-env-json", json.dumps(runtime_env)] if runtime_env else []
    for _attempt in range(30):
        done = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--working-dir",
                str(ROOT),
                *extra,
                "--",
                sys.executable,
                *args,
            ],
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
    ids, emb = embeddings.read_embeddings(out, "tiny-avg-32-random")
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


def test_submitted_jobs_read_and_write_an_object_store(ray_head, s3_server, tmp_path):
    """ingest -> augment -> embed -> index -> search -> evaluate -> split -> train -> embed with
    the fine-tuned weights -> sweep, each submitted with `ray job submit`, with every input and
    output in a bucket of a local S3-compatible server: the workers reach it through the job's
    runtime_env, as on a cluster without shared disks."""
    bucket = make_bucket("submitted-jobs")
    data, out = f"{bucket}/data", f"{bucket}/run"
    for i in range(4):
        for kind, name, seed in (("artworks", f"art{i}", i), ("drawings", f"draw{i}", 10 + i)):
            local = make_image(tmp_path / kind / f"{name}.jpg", (60, 50), seed=seed)
            storage.write_bytes(f"{data}/{kind}/{name}.jpg", local.read_bytes())
    storage.write_bytes(f"{data}/drawings/empty.jpg", b"")
    pairs = pd.DataFrame({"drawing_id": [f"draw{i}" for i in range(4)]})
    pairs["artwork_id"] = [f"art{i}" for i in range(4)]
    storage.write_bytes(f"{data}/pairs.csv", pairs.to_csv(index=False).encode())
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    train = [
        "train_resize=36",
        "train_crop=32",
        "batch_size=2",
        "n_hardest=3",
        "epochs=1",
        "num_workers=2",
        "cpus_per_worker=0.5",
    ]
    steps = [
        ["ingest", f"drawings_root={data}/drawings", f"artworks_root={data}/artworks"],
        ["augment", f"pairs_csv={data}/pairs.csv", "styles=[gray,pencil]", "max_side=64"],
        ["embed", *tiny],
        ["index"],
        ["search", "batch=true", "k=2"],
        ["evaluate", f"pairs_csv={data}/pairs.csv"],
        ["split", f"pairs_csv={data}/pairs.csv", "n_folds=1"],
        ["train", f"fold_csv={out}/folds/fold_00.csv", "run_name=on-s3", *tiny, *train],
        ["embed", *tiny, f"model.weights={out}/runs/on-s3/best_model.pt", "collections=[drawing]"],
        [
            "sweep",
            "name=s3",
            "margins=[0.3, 0.7]",
            "lrs=[0.01]",
            "backbones=[tiny]",
            "use_styles=[true]",
            "n_hardest=[3]",
            "top_k=1",
            "trial_cpus=0.1",
            "base.model.pretrained=false",
            "base.model.image_size=32",
            *[f"base.{t}" for t in train],
        ],
    ]
    for job, *args in steps:
        done = _submit(
            ray_head, f"jobs/{job}.py", f"out={out}", *args, runtime_env={"env_vars": s3_server}
        )
        assert done.returncode == 0, job + done.stdout[-3000:] + done.stderr[-3000:]

    catalogue = cat.read_catalogue(out)
    assert len(catalogue) == 9 + 4 * 2  # 8 images, 1 empty file, 2 styles of 4 paired drawings
    assert catalogue.set_index("id").at["empty", "error"] == "zero-byte file"
    styled = catalogue[catalogue["parent_id"].notna()]
    assert all(storage.is_file(p) for p in cat.resolve_paths(styled, cat.read_roots(out)))
    ids, emb = embeddings.read_embeddings(out, "tiny-avg-32-random")
    assert sorted(ids) == sorted([f"art{i}" for i in range(4)] + [f"draw{i}" for i in range(4)])
    assert storage.is_file(f"{out}/index/tiny-avg-32-random/index.json")
    topk = storage.read_parquet(f"{out}/candidates/tiny-avg-32-random/topk.parquet").to_pandas()
    assert sorted(topk["drawing_id"].unique()) == [f"draw{i}" for i in range(4)]
    assert len(topk) == 4 * 2
    metrics = json.loads(
        storage.read_text(f"{out}/evaluation/tiny-avg-32-random/metrics-pairs.json")
    )
    assert metrics["metrics"]["n_pairs"] == 4
    assert storage.is_file(f"{out}/folds/fold_00.csv")
    summary = json.loads(storage.read_text(f"{out}/runs/on-s3/metrics.json"))
    assert [h["epoch"] for h in summary["history"]] == [0]
    assert storage.list_files(f"{out}/runs/on-s3", "checkpoint_*/checkpoint.pt", recursive=True)
    # the weights read from the bucket: a fine-tuned model, or the starting one when no epoch
    # beat it (best epoch -1), which then keeps the starting model's tag and embeddings
    if summary["best_epoch"] >= 0:
        (tuned,) = [t for t in embeddings.list_model_tags(out) if "-ft-" in t]
        tuned_ids, _emb = embeddings.read_embeddings(out, tuned)
        assert sorted(tuned_ids) == [f"draw{i}" for i in range(4)]
    else:
        assert embeddings.list_model_tags(out) == ["tiny-avg-32-random"]
    sweep = json.loads(storage.read_text(f"{out}/sweep/s3/table.json"))
    assert len(sweep["screened"]) == 2 and list(sweep["confirmed"]) == [sweep["best"]]
    assert storage.is_file(f"{out}/sweep/s3/best_train_config.yaml")
    assert storage.list_files(f"{out}/sweep/s3/stage2", "*/*", recursive=True)  # Tune's state
    assert storage.is_file(f"{out}/runs/s3-s2-{sweep['best']}-fold_00/metrics.json")
    assert not (ROOT / "s3:").exists()  # nothing went to a local folder named like the URI
