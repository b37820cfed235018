"""Embed stages on plain arrays, and the real embed job on a local Ray instance."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from drawmatch.core import storage
from drawmatch.core.config import load_config
from drawmatch.data import catalogue as cat
from drawmatch.data import embeddings
from drawmatch.jobs import embed
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.models import embedder
from drawmatch.models.backbones import create_backbone
from drawmatch.models.embedder import ModelConfig
from tests.conftest import hand_catalogue, make_image

TINY = ModelConfig(backbone="tiny", pretrained=False, image_size=48)


def test_model_tag_names_backbone_pooling_size_and_weights():
    assert embeddings.model_tag("resnet50", "gem", 224, "imagenet") == "resnet50-gem-224-imagenet"
    assert embedder.Embedder(asdict(TINY)).tag == "tiny-avg-48-random"
    # the tiny test backbone has no pretrained weights: asking for them does not make it "imagenet"
    assert embedder.Embedder(asdict(replace(TINY, pretrained=True))).tag == "tiny-avg-48-random"


def test_model_tag_says_what_the_weights_are(tmp_path):
    """Same weights hash, same tag: a checkpoint holding the starting weights (a run whose best
    epoch was the pretrained model) is not labelled fine-tuned; changed weights are `ft-<hash>`."""
    net = create_backbone("tiny", pretrained=False)
    torch.save({"model": net.state_dict()}, tmp_path / "same.pt")
    with torch.no_grad():
        net.trunk[0].weight.add_(0.01)
    torch.save({"model": net.state_dict()}, tmp_path / "tuned.pt")
    base = embedder.Embedder(asdict(TINY))
    same = embedder.Embedder(asdict(replace(TINY, weights=str(tmp_path / "same.pt"))))
    tuned = embedder.Embedder(asdict(replace(TINY, weights=str(tmp_path / "tuned.pt"))))
    assert same.tag == base.tag and same.weights_hash == base.weights_hash
    assert tuned.weights_hash != base.weights_hash
    assert tuned.tag == f"tiny-avg-48-ft-{tuned.weights_hash[:8]}"


def test_decode_batch_resizes_and_reports_bad_files(tmp_path):
    make_image(tmp_path / "big.jpg", size=(1200, 800))
    make_image(tmp_path / "small.png", size=(30, 20), fmt="PNG")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    names = ["big.jpg", "small.png", "empty.jpg", "text.jpg"]
    batch = {
        "id": np.array([n.split(".")[0] for n in names], dtype=object),
        "root": np.array(["r"] * 4, dtype=object),
        "path": np.array(names, dtype=object),
        "sha256": np.array(["h"] * 4, dtype=object),
    }
    out = embed.decode_batch(batch, {"r": str(tmp_path)}, image_size=64, max_pixels=10**8)
    assert out["image"].shape == (4, 64, 64, 3)
    assert out["ok"].tolist() == [True, True, False, False]
    assert out["error"].tolist()[2:] == ["zero-byte file", "not an image"]
    # The small PNG is resized exactly like PIL's bilinear resize of the original.
    expected = np.asarray(
        Image.open(tmp_path / "small.png").convert("RGB").resize((64, 64), Image.BILINEAR)
    )
    np.testing.assert_array_equal(out["image"][1], expected)


def test_embedder_matches_a_direct_forward_and_is_normalised():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(3, 48, 48, 3), dtype=np.uint8)
    batch = {
        "id": np.array(["a", "b", "c"], dtype=object),
        "sha256": np.array(["h"] * 3),
        "image": images,
        "ok": np.array([True, False, True]),
        "error": np.array(["", "truncated", ""], dtype=object),
    }
    result = embedder.Embedder(asdict(TINY))(batch)
    emb = result["embedding"]
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[[0, 2]], axis=1), 1.0, rtol=1e-5)
    assert not emb[1].any()  # a failed row stays zero and keeps its reason
    assert result["error"][1] == "truncated"

    net = create_backbone("tiny", pretrained=False).eval()
    x = torch.tensor(images[[0, 2]], dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        direct = net((x - mean) / std)
    direct = (direct / direct.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(emb[[0, 2]], direct, atol=1e-5)


@pytest.fixture
def tiny_collection(tmp_path):
    drawings = [make_image(tmp_path / "d" / f"draw{i}.jpg", (90, 70), seed=i) for i in range(4)]
    artworks = [
        make_image(tmp_path / "a" / f"art{i}.jpg", (80, 100), seed=10 + i) for i in range(5)
    ]
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    artworks.append(tmp_path / "a" / "broken.jpg")
    out = tmp_path / "out"
    hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    return out


def _config(out, *overrides):
    return load_config(
        EmbedConfig,
        None,
        [
            f"out={out}",
            "model.backbone=tiny",
            "model.pretrained=false",
            "model.image_size=48",
            "rows_per_file=3",
            "batch_size=2",
            *overrides,
        ],
    )


def test_embed_job_resumes_and_counts_every_row(ray_local, tiny_collection):
    out = tiny_collection
    config = _config(out)
    first = embed.run(config)
    assert first.selected == 10
    assert first.embedded == 9
    assert first.errors == {"truncated": 1}
    directory = Path(embeddings.embeddings_dir(out, first.model_tag))
    ids, emb = embeddings.read_embeddings(out, first.model_tag)
    assert sorted(ids) == sorted([f"draw{i}" for i in range(4)] + [f"art{i}" for i in range(5)])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert (directory / embeddings.ERRORS_FILE).read_text().count("broken") == 1
    assert (directory / "embed_config.yaml").exists()

    # A rerun does no work.
    again = embed.run(config)
    assert again.embedded == 0 and again.already_done == 9

    # A job killed after some parts: remove one part; the rerun embeds exactly its rows, same values.
    part = Path(embeddings.part_files(directory)[0])
    lost = pq.read_table(part).column("id").to_pylist()
    part.unlink()
    resumed = embed.run(config)
    assert resumed.embedded == len(lost)
    ids2, emb2 = embeddings.read_embeddings(out, first.model_tag, ids=ids)
    np.testing.assert_allclose(emb2, emb, atol=1e-6)

    # Changed content: only that id is embedded again, and it is stored once.
    catalogue = cat.read_catalogue(out)
    make_image(out.parent / "d" / "draw0.jpg", (90, 70), seed=99)
    catalogue.loc[catalogue["id"] == "draw0", "sha256"] = "changed"
    cat.write_catalogue(catalogue, out)
    changed = embed.run(config)
    assert changed.stale_replaced == 1 and changed.embedded == 1
    ids3, _ = embeddings.read_embeddings(out, first.model_tag)
    assert sorted(ids3) == sorted(ids)


def test_embeddings_refuse_a_part_of_another_model(ray_local, tiny_collection):
    out = tiny_collection
    result = embed.run(_config(out, "collections=[artwork]"))
    directory = Path(embeddings.embeddings_dir(out, result.model_tag))
    foreign = embeddings.embeddings_table(
        ["x"], ["h"], np.ones((1, 32), np.float32), "resnet50-avg-224-imagenet", "ffff"
    )
    storage.write_parquet(foreign, directory / "part-foreign.parquet")
    with pytest.raises(ValueError, match="holds embeddings of model"):
        embeddings.read_embeddings(out, result.model_tag)


def test_fine_tuned_weights_give_their_own_model(ray_local, tiny_collection, tmp_path):
    out = tiny_collection
    base = embed.run(_config(out, "collections=[drawing]"))
    net = create_backbone("tiny", pretrained=False)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-1.0)
    torch.save({"model": net.state_dict()}, tmp_path / "ft.pt")
    tuned = embed.run(_config(out, "collections=[drawing]", f"model.weights={tmp_path / 'ft.pt'}"))
    assert tuned.model_tag.startswith("tiny-avg-48-ft-")
    assert tuned.weights_hash != base.weights_hash and tuned.embedded == 4
    _i, a = embeddings.read_embeddings(out, base.model_tag, ids=["draw1"])
    _i, b = embeddings.read_embeddings(out, tuned.model_tag, ids=["draw1"])
    assert not np.allclose(a, b)


def test_a_model_actor_stage_gives_each_actor_its_cpus_as_threads():
    """Each actor of the pool runs as many threads as its whole CPUs, at least one."""
    from drawmatch.runtime.pipeline import model_actor_stage

    config = EmbedConfig(num_actors=3, cpus_per_actor=2.5, gpus_per_actor=0.5)
    stage = model_actor_stage(embedder.Embedder, config, 8, {"model": {"backbone": "tiny"}})
    assert (stage.fn, stage.actors, stage.batch_size) == (embedder.Embedder, 3, 8)
    assert (stage.num_cpus, stage.num_gpus) == (2.5, 0.5)
    assert stage.kwargs == {"model": {"backbone": "tiny"}, "num_threads": 2}
    fraction = model_actor_stage(embedder.Embedder, replace(config, cpus_per_actor=0.75), 8, {})
    assert fraction.kwargs == {"num_threads": 1}


def test_embed_that_leaves_no_cpu_for_decoding_is_refused(ray_local, tiny_collection, capsys):
    """Two 1-CPU embedding actors on 2 CPUs leave nothing for a decode task: Ray would wait
    forever, so the job refuses before any work; an autoscaling cluster waits for nodes instead."""
    from drawmatch.runtime.ray_setup import RayConfig, check_resources

    out = tiny_collection
    with pytest.raises(ValueError, match="lower cpus_per_actor or decode_cpus"):
        embed.run(_config(out, "num_actors=2", "cpus_per_actor=1"))
    # nothing written: no model.json that later jobs would take for a model, no saved config
    assert not [
        p for p in (Path(out) / "embeddings").rglob("*") if p.is_file() and p.name[0] != "."
    ]
    check_resources(RayConfig(autoscaling=True), {"CPU": 99.0}, "a big job", "-")
    assert "waiting for the autoscaler" in capsys.readouterr().out


# --- concurrent runs and repeated rows ----------------------------------------------------------

_EMBED_CLI = "import sys; from drawmatch.cli import main; sys.exit(main(sys.argv[1:]))"


def test_two_embed_runs_at_once_one_is_refused_and_each_id_is_stored_once(ray_local, tmp_path):
    """Two `drawmatch embed` processes on one out= at the same time: one embeds, the other is
    refused at once with a message naming the first; the store holds every id exactly once."""
    import os
    import subprocess
    import sys

    ids = [f"draw{i:02d}" for i in range(24)]
    drawings = [
        make_image(tmp_path / "d" / f"{i}.jpg", (40, 40), seed=n) for n, i in enumerate(ids)
    ]
    out = tmp_path / "out"
    hand_catalogue(out, {"drawing": drawings})
    address = ray_local.get_runtime_context().gcs_address
    argv = [
        "embed",
        f"out={out}",
        "model.backbone=tiny",
        "model.pretrained=false",
        "model.image_size=32",
        "rows_per_file=4",
        "batch_size=2",
        "decode_cpus=0.25",
        "cpus_per_actor=0.5",
        f"ray.address={address}",
    ]
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _EMBED_CLI, *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = [(p.wait(timeout=600), *p.communicate()) for p in runs]
    codes = sorted(rc for rc, _out, _err in done)
    assert codes == [0, 1], done
    refused = next(err for rc, _out, err in done if rc == 1)
    winner = next(p for p, (rc, _o, _e) in zip(runs, done) if rc == 0)
    tag = "tiny-avg-32-random"
    directory = embeddings.embeddings_dir(out, tag)
    assert (
        f"drawmatch embed: error: another drawmatch embed run is writing to {directory} "
        f"(pid {winner.pid} on host "
    ) in refused
    assert "wait for it or use another out=" in refused
    stored = embeddings.stored_ids(directory)
    assert sorted(stored["id"]) == ids  # each id exactly once on disk
    assert embed.run(_config(out, "model.image_size=32")).already_done == len(ids)


def test_an_embed_run_holding_the_lock_refuses_another_and_releases_it(ray_local, tiny_collection):
    from drawmatch.core.locks import JobLockedError, job_lock

    config = _config(tiny_collection)
    directory = embeddings.embeddings_dir(storage.absolute(tiny_collection), "tiny-avg-48-random")
    with job_lock(directory, "embed"):
        with pytest.raises(JobLockedError, match="another drawmatch embed run is writing to"):
            embed.run(config)
    assert not list(Path(directory).glob("part-*.parquet"))
    assert embed.run(config).embedded == 9  # released: the next run goes ahead


def test_repeated_rows_left_by_an_older_version_are_read_once_and_dropped_by_a_rerun(
    ray_local, tiny_collection
):
    out = tiny_collection
    config = _config(out)
    first = embed.run(config)
    directory = Path(embeddings.embeddings_dir(out, first.model_tag))
    ids, emb = embeddings.read_embeddings(out, first.model_tag)
    # what two unlocked runs left: every part written twice, and one id twice inside one part
    for part in embeddings.part_files(directory):
        table = pq.read_table(part)
        embeddings.write_part(str(directory), table)
        embeddings.write_part(str(directory), pa.concat_tables([table.slice(0, 1)] * 2))
    assert len(embeddings.stored_ids(str(directory))) > 2 * len(ids)
    again_ids, again = embeddings.read_embeddings(out, first.model_tag, ids=ids)
    np.testing.assert_allclose(again, emb)
    assert sorted(embeddings.read_embeddings(out, first.model_tag)[0]) == sorted(ids)

    rerun = embed.run(config)
    assert rerun.embedded == 0  # nothing lost: the first row of every id is kept
    stored = embeddings.stored_ids(str(directory))
    assert sorted(stored["id"]) == sorted(ids)
    _ids, after = embeddings.read_embeddings(out, first.model_tag, ids=ids)
    np.testing.assert_allclose(after, emb)


def test_drop_rows_keeps_the_current_row_of_an_id_stored_with_old_and_new_content(tmp_path):
    directory = str(tmp_path / "emb")
    one = np.eye(4, dtype=np.float32)
    tag, whash = "tiny-avg-48-random", "h"
    embeddings.write_part(
        directory, embeddings.embeddings_table(["x", "y"], ["old", "sy"], one[:2], tag, whash)
    )
    embeddings.write_part(
        directory,
        embeddings.embeddings_table(["x", "y", "y"], ["new", "sy", "sy"], one[1:], tag, whash),
    )
    stored = embeddings.stored_ids(directory)
    current = pd.DataFrame({"id": ["x", "y"], "sha256": ["new", "sy"]})
    assert embeddings.drop_rows(directory, stored, current) == 3  # old x, two repeats of y
    after = embeddings.stored_ids(directory)
    assert sorted(zip(after["id"], after["sha256"])) == [("x", "new"), ("y", "sy")]
