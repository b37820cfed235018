"""Neural style transfer: Gram matrices and losses on hand-made tensors, the optimisation on real
demo images, determinism, the backbones' feature maps (VGG19 with random weights) and the
stylize job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drawmatch.augment.neural_style import (
    DEFAULT_LAYERS,
    NeuralStylizer,
    content_loss,
    gram,
    style_loss,
    tv_loss,
)
from drawmatch.augment.styles import NeuralStyleParams
from drawmatch.models.backbones import create_backbone, feature_maps, layer_names
from drawmatch.workflows.demo import demo_data_dir

from .conftest import make_image

# a (1, 2, 1, 2) feature map: channel 0 = [1, 2], channel 1 = [3, 4]
F = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])


def test_gram_by_hand():
    # F F^T = [[1*1+2*2, 1*3+2*4], [3*1+4*2, 3*3+4*4]] = [[5, 11], [11, 25]], / (C h w = 4)
    expected = torch.tensor([[[1.25, 2.75], [2.75, 6.25]]])
    assert torch.allclose(gram(F), expected)
    # batch items are independent, and the normalisation makes the size not matter
    doubled = torch.cat([F, F.repeat(1, 1, 1, 2)], dim=3)  # the same values twice as wide
    assert torch.allclose(gram(torch.cat([F, F])), expected.repeat(2, 1, 1))
    assert torch.allclose(gram(doubled[:, :, :, :2]), expected)


def test_content_loss_by_hand():
    a = torch.tensor([[[[1.0, 2.0]]]])
    b = torch.tensor([[[[0.0, 4.0]]]])
    assert float(content_loss(a, b)) == pytest.approx((1.0 + 4.0) / 2)
    assert float(content_loss(a, a)) == 0.0


def test_style_loss_by_hand():
    g = gram(F)
    # layer 1 against zeros: mean of squares of [[1.25, 2.75], [2.75, 6.25]]
    layer1 = (1.25**2 + 2 * 2.75**2 + 6.25**2) / 4  # 13.9375
    # layer 2 against its own Gram matrix: 0; the layers are averaged
    loss = style_loss([F, F], [torch.zeros_like(g), g])
    assert float(loss) == pytest.approx(layer1 / 2)
    assert float(loss) == pytest.approx(6.96875)
    with pytest.raises(ValueError):
        style_loss([F], [])


def test_tv_loss_by_hand():
    img = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    # vertical differences 2, 1, -1 -> mean square 2; horizontal 1, 2, 0, 0 -> 5/4
    assert float(tv_loss(img)) == pytest.approx(2.0 + 1.25)
    assert float(tv_loss(torch.ones(1, 3, 4, 4))) == 0.0


def test_feature_maps_are_the_trunks_intermediate_outputs():
    model = create_backbone("tiny", pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = feature_maps(model, x, ["2", "0"])
    assert list(maps) == ["2", "0"]
    trunk = model.trunk
    with torch.no_grad():
        assert torch.allclose(maps["0"], trunk[0](x))
        assert torch.allclose(maps["2"], trunk[:3](x))
        assert torch.allclose(feature_maps(model, x, ["6"])["6"], trunk(x))
    assert maps["2"].shape == (2, 8, 16, 16)
    assert "6" in layer_names(model)
    with pytest.raises(ValueError, match="no layer"):
        feature_maps(model, x, ["nope"])
    # hooks are removed: a plain forward afterwards is untouched
    assert not any(m._forward_hooks for m in model.trunk.modules())


def test_vgg19_random_weights_code_path():
    """VGG19 (weights download on users' machines) builds with random weights, its default
    style and content layers exist and give the classic ReLU maps, and a few steps run."""
    torch.manual_seed(0)
    model = create_backbone("vgg19", pretrained=False)
    assert model.weights == "random" and model.dim == 512
    style_layers, content_layer = DEFAULT_LAYERS["vgg19"]
    maps = feature_maps(model.eval(), torch.randn(1, 3, 32, 32), [*style_layers, content_layer])
    channels = [maps[n].shape[1] for n in style_layers]
    assert channels == [64, 128, 256, 512, 512]
    assert maps[content_layer].shape[1] == 512
    assert all(bool((m >= 0).all()) for m in maps.values())  # ReLU outputs
    params = NeuralStyleParams(backbone="vgg19", pretrained=False, size=32, steps=2)
    stylizer = NeuralStylizer(params, model=model)
    rng = np.random.default_rng(0)
    out = stylizer(
        rng.integers(0, 255, (40, 32, 3), np.uint8), rng.integers(0, 255, (32, 32, 3), np.uint8)
    )
    assert out.shape == (32, 26, 3) and out.dtype == np.uint8


def _demo_pair() -> tuple[np.ndarray, np.ndarray]:
    data = demo_data_dir()
    content = Image.open(data / "drawings" / "tux_cartoon_apple.jpg").convert("RGB")
    style = Image.open(data / "artworks" / "tux_photo_apple_fuji.jpg").convert("RGB")
    return np.asarray(content), np.asarray(style)


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("lbfgs", 1.0)])
def test_result_is_between_content_and_style(optimizer, lr):
    """On real images with the ImageNet weights: the result is closer in style to the style
    image than the content image is, and closer in content to the content image than the style
    image is."""
    content, style = _demo_pair()
    params = NeuralStyleParams(size=64, steps=25, optimizer=optimizer, lr=lr)
    stylizer = NeuralStylizer(params)
    result = stylizer(content, style)
    assert max(result.shape[:2]) == 64 and result.shape[2] == 3
    of_result = stylizer.losses(result, content, style)
    of_content = stylizer.losses(content, content, style)
    of_style = stylizer.losses(style, content, style)
    assert of_result["style"] < 0.5 * of_content["style"], (of_result, of_content)
    assert of_result["content"] < 0.5 * of_style["content"], (of_result, of_style)
    assert of_content["content"] == 0.0


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    content = rng.integers(0, 255, (48, 40, 3), np.uint8)
    style = rng.integers(0, 255, (40, 48, 3), np.uint8)

    def render(seed: int) -> np.ndarray:
        params = NeuralStyleParams(
            backbone="tiny", pretrained=False, size=40, steps=5, init_noise=0.1, seed=seed
        )
        return NeuralStylizer(params)(content, style)

    first = render(3)
    assert np.array_equal(first, render(3))
    assert not np.array_equal(first, render(4))


def test_layers_are_checked():
    params = NeuralStyleParams(backbone="tiny", pretrained=False, style_layers=("0", "zz"))
    with pytest.raises(ValueError, match="zz"):
        NeuralStylizer(params)
    custom = NeuralStyleParams(
        backbone="tiny", pretrained=False, style_layers=("0",), content_layer="3", size=32, steps=1
    )
    assert NeuralStylizer(custom).style_layers == ("0",)


def test_stylize_job_writes_the_result_and_keeps_existing_files(tmp_path: Path, capsys):
    from drawmatch.cli import main

    content = make_image(tmp_path / "content.jpg", size=(60, 40), seed=1)
    style = make_image(tmp_path / "style.png", size=(40, 40), seed=2, fmt="PNG")
    out = tmp_path / "result.png"
    argv = ["--content", str(content), "--style", str(style), "--out", str(out)]
    tiny = ["params.backbone=tiny", "params.pretrained=false", "params.size=32", "params.steps=3"]
    assert main(["stylize", *argv, *tiny]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (32, 21)
    text = capsys.readouterr().out
    assert "result" in text and "style image" in text
    before = out.read_bytes()
    assert main(["stylize", *argv, *tiny]) == 2  # exists: refused without overwrite
    assert "overwrite=true" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["stylize", *argv, *tiny, "overwrite=true"]) == 0
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    bad = ["--content", str(tmp_path / "broken.jpg"), "--style", str(style)]
    assert main(["stylize", *bad, "--out", str(tmp_path / "x.jpg"), *tiny]) == 1
    assert "content=" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()
