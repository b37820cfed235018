"""Shared fixtures: one local Ray instance for the whole session, tiny image makers, workbench
servers and a headless Chromium to drive them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAJ = SHARED / "imaj-metadata"
CHROMIUM = "/usr/bin/chromium"  # Debian's, driven by Playwright
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"
)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with 2 CPUs shared by every test that needs Ray."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    if not ray.is_initialized():
        # With the dashboard: Ray Train's placement-group cleaner needs its state API.
        ray.init(num_cpus=2, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_out(ray_local, tmp_path_factory):
    """The demo job run once through its Ray entrypoint (`jobs/demo.py`); its output root."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
    try:
        import demo as demo_entrypoint
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("demo") / "run"
    assert demo_entrypoint.main([f"out={out}", "examples=3"]) == 0
    return out


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto's server mode) on loopback, with the AWS environment
    that points pyarrow and boto3 at it set for this process; yields that environment, which
    submitted jobs pass on to their workers through their runtime_env."""
    import logging

    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def make_bucket(name: str) -> str:
    """Create a bucket on the `s3_server`; returns its URI."""
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def imaj_dir() -> Path:
    """The real IMAJ metadata folder from shared data; tests using it skip where it is absent."""
    if not IMAJ.is_dir():
        pytest.skip("shared IMAJ metadata folder is not present")
    return IMAJ


def make_image(
    path: Path, size: tuple[int, int] = (64, 48), seed: int = 0, fmt: str = "JPEG"
) -> Path:
    """Write a small random-but-smooth RGB image (width, height) to `path`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def hand_catalogue(out: Path, files: dict[str, list[Path]]) -> object:
    """Write a catalogue and roots.json for image files without the ingest job.

    `files` maps a collection (`drawing` / `artwork`) to files that all lie in one folder.
    """
    import hashlib

    import pandas as pd

    from drawmatch.data import catalogue as cat

    rows = []
    roots = {}
    for collection, paths in files.items():
        root = f"{collection}s"
        roots[root] = str(paths[0].parent)
        for p in paths:
            rows.append(
                dict(
                    id=p.stem,
                    collection=collection,
                    root=root,
                    path=p.name,
                    sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                    width=None,
                    height=None,
                    status="ok",
                    error=None,
                    parent_id=None,
                    style="original",
                    duplicate_of=None,
                    verso=False,
                    artist=None,
                    title=None,
                )
            )
    df = pd.DataFrame(rows)
    cat.write_catalogue(df, out)
    cat.write_roots(out, roots)
    return df


def tiny_training_set(root: Path, n_pairs: int = 12, n_folds: int = 1) -> tuple[Path, Path]:
    """12 artworks (smooth random images) and 12 drawings (each a darker, flipped copy of its
    artwork), catalogued under `root/out`; fold k trains on 8 pairs, validates on 2, tests on 2
    (the sets rotate with k). Returns (out, first fold file)."""
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    drawings, artworks = [], []
    (root / "a").mkdir(exist_ok=True)
    (root / "d").mkdir(exist_ok=True)
    for i in range(n_pairs):
        base = Image.fromarray(rng.integers(0, 255, (3, 3, 3), dtype=np.uint8)).resize(
            (48, 48), Image.Resampling.BICUBIC
        )
        base.save(root / "a" / f"art{i:02d}.png")
        copy = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT).point(lambda v: int(v * 0.7))
        copy.save(root / "d" / f"draw{i:02d}.png")
        artworks.append(root / "a" / f"art{i:02d}.png")
        drawings.append(root / "d" / f"draw{i:02d}.png")
    out = root / "out"
    hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    (out / "folds").mkdir(parents=True)
    for k in range(n_folds):
        sets = ["train"] * (n_pairs - 4) + ["val"] * 2 + ["test"] * 2
        sets = sets[-2 * k :] + sets[: -2 * k] if k else sets
        pd.DataFrame(
            {
                "pair_id": range(n_pairs),
                "drawing_id": [p.stem for p in drawings],
                "artwork_id": [p.stem for p in artworks],
                "set": sets,
                "parent_id": [""] * n_pairs,
            }
        ).to_csv(out / "folds" / f"fold_{k:02d}.csv", index=False)
    return out, out / "folds" / "fold_00.csv"


# The tiny training set's settings: tiny backbone at 32 px, 2 gloo workers, a learning rate that
# moves random weights in a few steps. Later overrides win.
TINY_TRAIN = (
    "model.backbone=tiny",
    "model.pretrained=false",
    "model.image_size=32",
    "train_resize=36",
    "train_crop=32",
    "batch_size=2",
    "n_hardest=3",
    "lr=0.01",
    "patience=10",
    "cpus_per_worker=0.5",
    "num_workers=2",
)


@pytest.fixture(scope="module")
def tiny_fold(tmp_path_factory) -> tuple[Path, Path]:
    """`tiny_training_set` made once per test module: (out, first fold file)."""
    return tiny_training_set(tmp_path_factory.mktemp("fold"))


def tiny_train_config(out: Path, fold_csv: Path, *overrides: str):
    """A TrainConfig for `tiny_training_set` (TINY_TRAIN, then `overrides`)."""
    from drawmatch.core.config import load_config
    from drawmatch.jobs.train import TrainConfig

    return load_config(
        TrainConfig, None, [f"out={out}", f"fold_csv={fold_csv}", *TINY_TRAIN, *overrides]
    )


# -- the workbench in a real server and a real browser ---------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(out: Path, port: int, *keys: str) -> subprocess.Popen:
    """`drawmatch serve` over `out` on `port` in a process of its own (no query model loaded;
    `keys`: more config keys)."""
    args = [f"out={out}", f"port={port}", "load_model=false", *keys, "log_level=warning"]
    code = f"import sys; from drawmatch.cli import main; sys.exit(main(['serve', *{args!r}]))"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def wait_up(url: str, proc: subprocess.Popen) -> None:
    """Wait until the server at `url` answers its health check (2 minutes at most)."""
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not start")


@contextmanager
def served(out: Path, *keys: str) -> Iterator[str]:
    """A workbench server over `out` while the block runs; yields its URL."""
    port = free_port()
    proc = start_server(out, port, *keys)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def chromium():
    """A headless Chromium (Debian's), driven by Playwright; closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@contextmanager
def ray_never_started() -> Iterator[None]:
    """Fail if anything calls `ray.init` inside the block, whether or not an earlier test left a
    Ray instance up: what a config refusal proves is that it came before Ray was started."""
    from unittest import mock

    import ray

    was_up = ray.is_initialized()
    with mock.patch.object(ray, "init", side_effect=AssertionError("ray.init was called")):
        yield
    assert ray.is_initialized() == was_up


def embed_index_search(out: Path) -> tuple[set[str], set[str], pd.DataFrame]:
    """Embed an output root with the tiny random model, index its artworks and search every
    drawing (top 2): the ids embedded, the ids indexed and the top-k table."""
    from drawmatch.core.config import load_config
    from drawmatch.data import embeddings
    from drawmatch.jobs import embed, index, search
    from drawmatch.jobs.embed import EmbedConfig
    from drawmatch.jobs.index import IndexConfig
    from drawmatch.jobs.search import SearchConfig
    from drawmatch.retrieval import artwork_index

    model = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=32"]
    tag = embed.run(load_config(EmbedConfig, None, [f"out={out}", *model])).model_tag
    index.run(IndexConfig(out=str(out)))
    topk = pd.read_parquet(search.run(SearchConfig(out=str(out), batch=True, k=2)))
    embedded: set[str] = set()
    for part in embeddings.part_files(embeddings.embeddings_dir(out, tag)):
        embedded |= set(pd.read_parquet(part, columns=["id"])["id"])
    return embedded, set(artwork_index.ArtworkIndex(out, tag, check=False).ids), topk


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    """Where browser tests leave their screenshots (`DRAWMATCH_ARTEFACTS`, else a temporary
    folder)."""
    chosen = os.environ.get("DRAWMATCH_ARTEFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test screenshots: {folder}")
    return folder
