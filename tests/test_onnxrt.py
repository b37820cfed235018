"""The ONNX Runtime path of the embedding model: exports, caching, equality with torch."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from drawmatch.core.config import ConfigError
from drawmatch.data import embeddings
from drawmatch.jobs import embed
from drawmatch.models.backbones import create_backbone, list_backbones
from drawmatch.models.embedder import Embedder, ModelConfig
from drawmatch.models.preprocess import load_eval_array
from drawmatch.retrieval.metrics import retrieval_metrics_from_embeddings
from tests.test_embed import _config, tiny_collection  # noqa: F401  (a fixture)

pytest.importorskip("onnxruntime")

DEMO = Path(__file__).resolve().parents[1] / "drawmatch" / "demo_data"
TINY = ModelConfig(backbone="tiny", pretrained=False, image_size=48)


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAWMATCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_runtime_is_a_checked_choice():
    assert ModelConfig().runtime == "auto"
    with pytest.raises(ConfigError, match="runtime"):
        ModelConfig(runtime="tensorrt")


def test_auto_runs_onnx_on_a_cpu_worker_with_torch_embeddings_and_tag(onnx_cache, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images = np.random.default_rng(3).integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    torch.manual_seed(0)
    auto = Embedder(asdict(TINY), num_threads=1)  # runtime auto: the default
    torch.manual_seed(0)
    reference = Embedder(asdict(replace(TINY, runtime="torch")))
    assert auto.runtime == "onnx" and auto.onnx.path.parent == onnx_cache
    assert reference.runtime == "torch" and reference.onnx is None
    assert auto.tag == reference.tag and auto.weights_hash == reference.weights_hash
    assert _cosines(auto.embed_images(images), reference.embed_images(images)).min() >= 0.9999


def test_auto_on_a_gpu_worker_runs_torch_and_exports_nothing(onnx_cache, monkeypatch):
    """CUDA reported available (this machine has none): auto takes the torch path, which moves
    the network to the GPU (and fails here, where torch has no CUDA device), and never exports."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda|GPU|NVIDIA"):
        Embedder(asdict(TINY))
    assert not onnx_cache.exists() or not any(onnx_cache.iterdir())


def test_auto_falls_back_to_torch_once_where_the_export_fails(monkeypatch, caplog):
    """An export that fails (here: an ONNX opset no exporter has) makes auto run torch with one
    warning per process; an explicit onnx raises."""
    from drawmatch.models import embedder as embedder_module
    from drawmatch.models import onnx_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(onnx_runtime, "ONNX_OPSET", 999)
    monkeypatch.setattr(embedder_module, "_told", set())
    images = np.random.default_rng(4).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="drawmatch.models.embedder"):
        torch.manual_seed(0)
        first = Embedder(asdict(TINY))
        torch.manual_seed(0)
        second = Embedder(asdict(TINY))
    assert first.runtime == second.runtime == "torch" and first.onnx is None
    warned = [r.getMessage() for r in caplog.records if "cannot run with ONNX" in r.getMessage()]
    assert len(warned) == 1 and first.tag in warned[0]
    torch.manual_seed(0)
    reference = Embedder(asdict(replace(TINY, runtime="torch")))
    np.testing.assert_allclose(first.embed_images(images), reference.embed_images(images))
    with pytest.raises(Exception, match="999|opset"):
        Embedder(asdict(replace(TINY, runtime="onnx")))


def test_export_is_cached_by_weights_hash_and_size(onnx_cache):
    first = Embedder(asdict(replace(TINY, runtime="onnx")))
    path = first.onnx.path
    assert path.parent == onnx_cache
    assert first.weights_hash in path.name and "-48" in path.name
    stamp = path.stat().st_mtime_ns
    again = Embedder(asdict(replace(TINY, runtime="onnx")))
    assert again.onnx.path == path and path.stat().st_mtime_ns == stamp  # not exported again
    assert (
        again.tag == Embedder(asdict(replace(TINY, runtime="torch"))).tag
    )  # the runtime does not change the tag
    bigger = Embedder(asdict(replace(TINY, runtime="onnx", image_size=64)))
    assert bigger.onnx.path != path
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    assert bigger.embed_images(images).shape == (3, 32)


def test_fine_tuned_weights_get_their_export_next_to_them(tmp_path):
    net = create_backbone("tiny", pretrained=False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    weights = tmp_path / "run" / "best_model.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    model = Embedder(asdict(replace(TINY, runtime="onnx", weights=str(weights))))
    assert model.onnx.path.parent == weights.parent
    assert model.onnx.path.name.startswith("best_model.pt.") and model.weights_hash in str(
        model.onnx.path
    )
    images = np.random.default_rng(1).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)
    ref = Embedder(asdict(replace(TINY, weights=str(weights), runtime="torch")))
    ref = ref.embed_images(images)
    assert _cosines(model.embed_images(images), ref).min() >= 0.9999


@pytest.mark.parametrize(
    "backbone",
    [
        pytest.param(b, marks=pytest.mark.slow)
        if b in ("resnext101_32x8d", "dinov2_vitb14", "openclip_vitb16")
        else b
        for b in list_backbones()
    ],
)
def test_every_registry_backbone_exports_and_matches_torch(backbone):
    model = ModelConfig(backbone=backbone, pretrained=False, image_size=64)
    images = np.random.default_rng(2).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    torch.manual_seed(0)  # random weights: the same ones for both runtimes
    reference = Embedder(asdict(replace(model, runtime="torch")))
    torch.manual_seed(0)
    exported = Embedder(asdict(replace(model, runtime="onnx")), num_threads=1)
    assert exported.weights_hash == reference.weights_hash
    ref, got = reference.embed_images(images), exported.embed_images(images)
    assert got.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert _cosines(got, ref).min() >= 0.9999


@pytest.mark.slow
def test_onnx_equals_torch_on_the_demo_images_and_metrics_are_unchanged():
    """Pretrained EfficientNet-Lite0 on all bundled real images (30 drawn stamps, 337 photos):
    every vector within cosine 0.9999 of torch's, and the retrieval metrics the same."""
    drawings = sorted((DEMO / "drawings").iterdir())
    artworks = sorted((DEMO / "artworks").iterdir())
    torch_model = Embedder(asdict(ModelConfig(runtime="torch")), num_threads=2)
    onnx_model = Embedder(asdict(ModelConfig(runtime="onnx")), num_threads=2)
    vectors: dict[str, list[np.ndarray]] = {"torch": [], "onnx": []}
    for start in range(0, len(drawings) + len(artworks), 16):
        files = (drawings + artworks)[start : start + 16]
        images = np.stack([load_eval_array(f, 280) for f in files])
        vectors["torch"].append(torch_model.embed_images(images))
        vectors["onnx"].append(onnx_model.embed_images(images))
    ref, got = np.concatenate(vectors["torch"]), np.concatenate(vectors["onnx"])
    assert _cosines(got, ref).min() >= 0.9999

    pairs = pd.read_csv(DEMO / "pairs.csv")
    where = {f.stem: i for i, f in enumerate(artworks)}
    relevant = [
        np.array([where[a] for a in pairs.loc[pairs["drawing_id"] == f.stem, "artwork_id"]])
        for f in drawings
    ]
    n = len(drawings)
    metrics = {
        name: retrieval_metrics_from_embeddings(emb[:n], emb[n:], relevant)
        for name, emb in (("torch", ref), ("onnx", got))
    }
    for key, value in metrics["torch"].items():
        assert metrics["onnx"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("runtime", ["onnx", "auto"])
def test_embed_job_with_onnx_records_the_runtime(ray_local, tiny_collection, runtime):  # noqa: F811
    """The job with onnx, or with auto on this machine's CPU-only actors, writes the vectors of
    torch into the same folder and records the runtime that ran."""
    out = tiny_collection
    by_torch = embed.run(_config(out, "collections=[drawing]", "model.runtime=torch"))
    ids, ref = embeddings.read_embeddings(out, by_torch.model_tag)
    # the same model with the other runtime writes into the same folder (same tag)
    directory = Path(embeddings.embeddings_dir(out, by_torch.model_tag))
    for part in embeddings.part_files(directory):
        Path(part).unlink()
    by_onnx = embed.run(_config(out, "collections=[drawing]", f"model.runtime={runtime}"))
    assert by_onnx.model_tag == by_torch.model_tag and by_onnx.embedded == len(ids)
    info = json.loads((directory / embeddings.MODEL_FILE).read_text())
    assert info["runtime"] == "onnx" and info["runtimes"] == ["onnx", "torch"]
    assert info["model"]["runtime"] == runtime
    _, got = embeddings.read_embeddings(out, by_onnx.model_tag, ids=ids)
    assert _cosines(got, ref).min() >= 0.9999
