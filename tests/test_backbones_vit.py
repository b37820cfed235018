"""The vision-transformer backbones (DINOv2 through timm, OpenCLIP image towers through open_clip)
on random weights, built from their real architecture code, checked against those libraries' own
forward passes; the registry's specs; normalisation and input size reaching the embedder and the
ONNX path. Nothing downloads: a fixture refuses every network connection."""

from __future__ import annotations

import copy
import socket
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from drawmatch import cli
from drawmatch.core.config import ConfigError, load_config
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.models.backbones import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TokenTrunk,
    backbone_spec,
    create_backbone,
    list_backbones,
    resample_positions,
    resolve_model,
)
from drawmatch.models.embedder import Embedder, ModelConfig
from drawmatch.models.preprocess import normalise
from drawmatch.workflows.sweep import SweepConfig

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

VITS = ("dinov2_vits14", "dinov2_vitb14", "openclip_vitb32", "openclip_vitb16")
DINO_ARCH = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to open a network connection is refused and recorded."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"tests must not use the network: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    torch.manual_seed(0)
    return attempts


# ---------------------------------------------------------------- registry and specs


def test_registry_lists_the_modern_backbones_with_their_specs() -> None:
    names = list_backbones()
    assert set(VITS) | {"efficientnet_lite2"} <= set(names)
    for name in VITS:
        spec = backbone_spec(name)
        assert spec.kind == "vit" and spec.poolings == ("cls", "avg")
        assert spec.input_size == 224 and spec.package is None  # weights download on first use
    assert backbone_spec("resnet50").poolings == ("avg", "max", "gem")
    # the normalisation each family's own code uses
    assert backbone_spec("dinov2_vits14").mean == tuple(timm.get_pretrained_cfg(DINO_ARCH).mean)
    assert backbone_spec("dinov2_vits14").std == tuple(timm.get_pretrained_cfg(DINO_ARCH).std)
    for name, arch, tag in (
        ("openclip_vitb32", "ViT-B-32", "laion2b_s34b_b79k"),
        ("openclip_vitb16", "ViT-B-16", "laion2b_s34b_b88k"),
    ):
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        assert backbone_spec(name).mean == tuple(cfg["mean"]) == CLIP_MEAN
        assert backbone_spec(name).std == tuple(cfg["std"]) == CLIP_STD
        assert CLIP_MEAN != IMAGENET_MEAN


@pytest.mark.parametrize("name", VITS)
def test_shapes_and_poolings_on_random_weights(name: str) -> None:
    spec = backbone_spec(name)
    cls = create_backbone(name, pretrained=False).eval()
    assert cls.pooling == "cls" and cls.weights == "random" and cls.dim == spec.dim
    assert isinstance(cls.trunk, TokenTrunk)
    assert (cls.mean, cls.std) == (spec.mean, spec.std)
    avg = copy.copy(cls)  # the same weights, pooled the other way
    avg.pooling = "avg"
    x = torch.randn(2, 3, 56, 56)  # 4x4 patches of 14, or 2x2 of 32 after padding to 64
    with torch.no_grad():
        tokens = cls.trunk(x)
        rows, cols = cls.trunk.grid(56, 56)
        assert tokens.shape == (2, 1 + rows * cols, tokens.shape[-1])
        a, b = cls(x), avg(x)
        assert a.shape == b.shape == (2, spec.dim)
        torch.testing.assert_close(a, cls.trunk.project(tokens[:, 0]))
        torch.testing.assert_close(b, cls.trunk.project(tokens[:, 1:].mean(dim=1)))
        assert not torch.allclose(a, b)
        fmap = avg.feature_map(x)  # projected patch tokens on their grid
        assert fmap.shape == (2, spec.dim, rows, cols)
        torch.testing.assert_close(fmap.mean(dim=(2, 3)), b, rtol=1e-5, atol=1e-5)


def test_a_vit_refuses_cnn_poolings_and_a_cnn_refuses_cls() -> None:
    with pytest.raises(ValueError, match="pooling 'gem'.*cls, avg"):
        create_backbone("openclip_vitb32", pretrained=False, pooling="gem")
    with pytest.raises(ValueError, match="pooling 'cls'.*avg, max, gem"):
        create_backbone("tiny", pretrained=False, pooling="cls")


# ---------------------------------------------------------------- against the libraries' own code


def test_dinov2_trunk_equals_timm_at_another_input_size() -> None:
    """At 70 px (5x5 patches): timm's own ViT built for 70 px, with the position embeddings
    resampled by timm's own function (bicubic, no antialiasing), gives the same tokens and the
    same pooled vectors as the backbone (timm's dynamic-size path would antialias instead)."""
    from timm.layers import resample_abs_pos_embed

    backbone = create_backbone("dinov2_vits14", pretrained=False).eval()
    state = backbone.trunk.model.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [5, 5], antialias=False)
    ref = timm.create_model(DINO_ARCH, img_size=70, num_classes=0, global_pool="token")
    ref.load_state_dict(state)
    ref.eval()
    x = torch.randn(2, 3, 70, 70)
    with torch.no_grad():
        torch.testing.assert_close(backbone.trunk(x), ref.forward_features(x))
        torch.testing.assert_close(backbone(x), ref(x))  # cls
        backbone.pooling, ref.global_pool = "avg", "avg"
        torch.testing.assert_close(backbone(x), ref(x))  # mean of the patch tokens
    # the resampling itself matches timm's
    pos = torch.randn(1, 1 + 37 * 37, 8)
    torch.testing.assert_close(
        resample_positions(pos[0], (37, 37), (4, 6))[None],
        resample_abs_pos_embed(pos, [4, 6], antialias=False),
    )


@pytest.mark.parametrize("size", [224, 64])
def test_openclip_tower_equals_open_clip_forward(size: int) -> None:
    """CLS pooling is CLIP's image embedding: open_clip's own tower (pool_type tok) gives the same
    vector; avg is its pool_type avg. At 64 px open_clip's model is built for 64 px with its own
    position-embedding resize (no antialiasing)."""
    from open_clip.model import resize_pos_embed

    backbone = create_backbone("openclip_vitb32", pretrained=False).eval()
    if size == 224:
        ref = backbone.trunk.visual
    else:
        clip = open_clip.create_model("ViT-B-32", pretrained=None, force_image_size=size)
        state = {f"visual.{k}": v for k, v in backbone.trunk.visual.state_dict().items()}
        resize_pos_embed(state, clip, antialias=False)
        clip.visual.load_state_dict({k[7:]: v for k, v in state.items()})
        ref = clip.visual
    ref.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), ref(x), rtol=1e-4, atol=1e-5)
        backbone.pooling, ref.pool_type = "avg", "avg"
        torch.testing.assert_close(backbone(x), ref(x), rtol=1e-4, atol=1e-5)


def test_input_that_is_no_multiple_of_the_patch_is_padded() -> None:
    """56 px through patches of 32: the same as the image padded with zeros to 64 px."""
    backbone = create_backbone("openclip_vitb32", pretrained=False).eval()
    x = torch.randn(1, 3, 56, 56)
    padded = torch.nn.functional.pad(x, (0, 8, 0, 8))
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), backbone(padded))


def test_pretrained_weights_load_through_the_hubs(monkeypatch: pytest.MonkeyPatch) -> None:
    """pretrained=True takes each library's real loading path, for the weights the registry
    names (the download is refused here)."""
    import open_clip.pretrained
    import timm.models._hub

    asked: list[str] = []

    def refuse(repo_id: str, *args: object, **kwargs: object) -> None:
        asked.append(repo_id)
        raise OSError(f"tests must not download {repo_id}")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", refuse)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", refuse)
    for name, repo in (
        ("dinov2_vits14", "timm/vit_small_patch14_dinov2.lvd142m"),
        ("openclip_vitb32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ):
        with pytest.raises(Exception):  # noqa: B017 (each library wraps the error its own way)
            create_backbone(name, pretrained=True)
        assert asked and asked[-1].rstrip("/") == repo


# ---------------------------------------------------------------- config, embedder, ONNX


def test_null_image_size_and_pooling_are_the_backbones_own() -> None:
    cfg = ModelConfig(backbone="openclip_vitb32", pretrained=False)
    assert cfg.image_size is None and cfg.pooling is None
    resolved = resolve_model(cfg)
    assert (resolved.image_size, resolved.pooling) == (224, "cls")
    assert resolve_model(ModelConfig()).image_size == 280  # the CNNs' (thesis) size
    assert resolve_model(ModelConfig()).pooling == "avg"
    explicit = resolve_model(replace(cfg, image_size=56, pooling="avg"))
    assert (explicit.image_size, explicit.pooling) == (56, "avg")
    with pytest.raises(ValueError, match="does not suit backbone openclip_vitb32"):
        resolve_model(replace(cfg, pooling="max"))


def test_cli_refuses_a_pooling_the_backbone_lacks_before_the_job() -> None:
    bad = load_config(EmbedConfig, None, ["model.backbone=dinov2_vits14", "model.pooling=gem"])
    with pytest.raises(ConfigError, match="model.pooling: pooling 'gem' does not suit"):
        cli._check_backbones("embed", bad)
    sweep = load_config(SweepConfig, None, ["backbones=[tiny, dinov2_vits14]"])
    cli._check_backbones("sweep", sweep)  # the default pooling suits both
    mixed = load_config(
        SweepConfig, None, ["backbones=[tiny, dinov2_vits14]", "base.model.pooling=max"]
    )
    with pytest.raises(ConfigError, match="backbones=dinov2_vits14"):
        cli._check_backbones("sweep", mixed)


def test_model_tags_name_backbone_pooling_size_and_weights() -> None:
    clip = Embedder({"backbone": "openclip_vitb32", "pretrained": False, "runtime": "torch"})
    assert clip.tag == "openclip_vitb32-cls-224-random" and clip.image_size == 224
    torch.manual_seed(1)  # random weights come from a fixed seed, whatever the global RNG
    dino = Embedder(
        {"backbone": "dinov2_vits14", "pretrained": False, "image_size": 56, "runtime": "torch"}
    )
    assert dino.tag == "dinov2_vits14-cls-56-random" and dino.dim == 384
    torch.manual_seed(2)
    avg = Embedder(
        {"backbone": "dinov2_vits14", "pretrained": False, "image_size": 56, "pooling": "avg"}
        | {"runtime": "torch"}
    )
    assert avg.tag == "dinov2_vits14-avg-56-random"
    assert avg.weights_hash == dino.weights_hash  # same weights: only the tag tells them apart


def test_embedder_normalises_with_the_backbones_own_mean_and_std() -> None:
    embedder = Embedder(
        {"backbone": "openclip_vitb32", "pretrained": False, "image_size": 64, "runtime": "torch"}
    )
    assert (embedder.mean, embedder.std) == (CLIP_MEAN, CLIP_STD)
    images = np.random.default_rng(1).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    got = embedder.embed_images(images)
    with torch.no_grad():
        own = torch.nn.functional.normalize(embedder.net(normalise(images, CLIP_MEAN, CLIP_STD)))
        imagenet = torch.nn.functional.normalize(
            embedder.net(normalise(images, IMAGENET_MEAN, IMAGENET_STD))
        )
    np.testing.assert_allclose(got, own.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(got - imagenet.numpy()).max() > 1e-3


@pytest.mark.parametrize("name,size", [("dinov2_vits14", 56), ("openclip_vitb32", 56)])
def test_onnx_runtime_matches_torch(name: str, size: int, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("DRAWMATCH_CACHE", str(tmp_path))
    model = asdict(ModelConfig(backbone=name, pretrained=False, image_size=size))
    torch.manual_seed(3)
    reference = Embedder({**model, "runtime": "torch"})
    torch.manual_seed(3)
    exported = Embedder({**model, "runtime": "onnx"}, num_threads=1)
    assert exported.tag == reference.tag and exported.weights_hash == reference.weights_hash
    images = np.random.default_rng(2).integers(0, 255, (3, size, size, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        exported.embed_images(images), reference.embed_images(images), atol=1e-5
    )
    assert torch.backends.mha.get_fastpath_enabled()  # the export put the fast path back


def test_drawmatch_models_prints_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    for name in list_backbones():
        assert name in rows
    # name, kind, input, normalisation, pooling, dim, weights, offline, GPU, source...
    assert rows["efficientnet_lite2"][1:9] == [
        "cnn", "280", "tf-lite", "avg,max,gem", "1280", "imagenet", "yes", "no",
    ]  # fmt: skip
    assert rows["openclip_vitb32"][1:9] == [
        "vit", "224", "clip", "cls,avg", "512", "laion2b", "no", "no",
    ]  # fmt: skip
    assert rows["dinov2_vitb14"][2:9] == [
        "224",
        "imagenet",
        "cls,avg",
        "768",
        "lvd142m",
        "no",
        "yes",
    ]
    assert "clip: mean 0.4815, 0.4578, 0.4082" in out
    assert cli.main(["models", "extra"]) == 2
    assert cli.main(["--help"]) == 0 and "models" in capsys.readouterr().out
