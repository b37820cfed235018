"""Neural style transfer (Gatys, Ecker and Bethge 2016), optimisation-based, on registry backbones.

An image x is optimised, starting from the content image (plus optional seeded noise), to minimise

    L(x) = content_weight * L_content + style_weight * L_style + tv_weight * L_tv

- L_content: mean squared difference between the feature maps of x and of the content image at
  one deep layer (`content_layer`);
- L_style: mean over the `style_layers` of the mean squared difference between the Gram matrices
  of x and of the style image at that layer, a Gram matrix of a (C, h, w) feature map F being
  G = F F^T / (C h w) (C x C, so images of different sizes compare);
- L_tv: total variation of x in pixel values 0-1, the mean squared difference between vertically
  neighbouring pixels plus the same between horizontally neighbouring ones.

Features are taken with `drawmatch.models.backbones.feature_maps` from the backbone's trunk, on images
normalised as for embedding (`drawmatch.models.preprocess.normalise`). x lives in that normalised space
and is kept inside the range of valid pixels after every step. Adam or L-BFGS, a fixed number of
steps; with a fixed seed, thread count and machine the result is the same every time.

Layers (`DEFAULT_LAYERS`): for VGG19 the classic choice, ReLU outputs relu1_1, relu2_1, relu3_1,
relu4_1, relu5_1 for style and relu4_2 for content. For EfficientNet-Lite0 the same idea on its
stages: the stem activation is shared with the head, so style reads the stem's batch norm
(`model._bn0`, 32 channels, 1/2 resolution) and the last block of the stages at 1/4, 1/8 and 1/16
(`model._blocks.2`, 24 ch; `.4`, 40 ch; `.7`, 80 ch) and the first block at 1/16 with 112 ch
(`model._blocks.8`); content reads `model._blocks.10` (112 ch, 1/16), deep enough to keep the
layout and shapes of the content image but not its textures. A backbone without defaults needs
`content_layer` and `style_layers` in the config (`drawmatch.models.backbones.layer_names` lists them).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from PIL import Image

from drawmatch.augment.styles import NeuralStyleParams
from drawmatch.models.backbones import Backbone, create_backbone, feature_maps, layer_names
from drawmatch.models.preprocess import normalise

# the deepest default layers are at 1/16 resolution: a shorter side under 16 px vanishes there
MIN_STYLE_SIDE = 16

# backbone -> (style layers, content layer)
DEFAULT_LAYERS: dict[str, tuple[tuple[str, ...], str]] = {
    "efficientnet_lite0": (
        ("model._bn0", "model._blocks.2", "model._blocks.4", "model._blocks.7", "model._blocks.8"),
        "model._blocks.10",
    ),
    "vgg19": (
        ("features.1", "features.6", "features.11", "features.20", "features.29"),
        "features.22",
    ),
    "tiny": (("0", "3", "6"), "6"),
}


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of feature maps: (B, C, h, w) -> (B, C, C), F F^T / (C h w)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two feature maps of the same shape (a scalar)."""
    return ((features - target) ** 2).mean()


def style_loss(features: list[torch.Tensor], target_grams: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the mean squared difference between the Gram matrix of each feature
    map (B, C, h, w) and the target Gram matrix (B or 1, C, C) of that layer (a scalar)."""
    if len(features) != len(target_grams) or not features:
        raise ValueError("style_loss needs one target Gram matrix per feature map, at least one")
    losses = [((gram(f) - g) ** 2).mean() for f, g in zip(features, target_grams, strict=True)]
    return torch.stack(losses).mean()


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Total variation of images (B, 3, H, W): mean squared vertical neighbour difference plus
    mean squared horizontal neighbour difference (a scalar)."""
    dy = images[:, :, 1:, :] - images[:, :, :-1, :]
    dx = images[:, :, :, 1:] - images[:, :, :, :-1]
    return (dy**2).mean() + (dx**2).mean()


def longer_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `size` (aspect kept, at least 1 px)."""
    scale = size / float(max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_image_size(width: int, height: int, size: int) -> None:
    """Refuse, with ValueError, an image too thin to style: once its longer side is `size`, its
    shorter side must be at least MIN_STYLE_SIDE px (the style layers' resolution)."""
    new_w, new_h = longer_side_size(width, height, size)
    if min(new_w, new_h) < MIN_STYLE_SIDE:
        raise ValueError(
            f"image of {width}x{height} px is too thin to style: at size={size} its shorter side "
            f"would be {min(new_w, new_h)} px, under {MIN_STYLE_SIDE} (sides at most "
            f"{size // MIN_STYLE_SIDE}:1, or a larger size)"
        )


def resize_longer(img: Image.Image, size: int) -> np.ndarray:
    """Bilinear resize so that the longer side is `size` (aspect kept): (h, w, 3) uint8."""
    new = longer_side_size(img.size[0], img.size[1], size)
    return np.asarray(img.convert("RGB").resize(new, Image.Resampling.BILINEAR), dtype=np.uint8)


def _params(params: NeuralStyleParams | dict[str, Any] | None) -> NeuralStyleParams:
    if params is None:
        return NeuralStyleParams()
    if isinstance(params, NeuralStyleParams):
        return params
    return NeuralStyleParams(**{**params, "style_layers": _tuple(params.get("style_layers"))})


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


class NeuralStylizer:
    """Style transfer with one backbone, built once (a Ray actor holds one).

    `__call__(content, style)` takes two RGB uint8 arrays (H, W, 3) of any sizes and returns the
    content image, resized so its longer side is `params.size`, rendered in the style of the
    style image (resized the same way): RGB uint8 (h, w, 3); an image too thin for that size is
    refused (`check_image_size`). `threads` sets torch's intra-op
    threads (None leaves them alone).
    """

    def __init__(
        self,
        params: NeuralStyleParams | dict[str, Any] | None = None,
        threads: int | None = None,
        model: Backbone | None = None,
    ) -> None:
        self.params = _params(params)
        if threads is not None:
            torch.set_num_threads(int(threads))
        p = self.params
        self.model = model or create_backbone(p.backbone, pretrained=p.pretrained)
        self.model.eval()
        for weight in self.model.parameters():
            weight.requires_grad_(False)
        self.style_layers, self.content_layer = self.layers(self.model, p)

    @staticmethod
    def layers(model: Backbone, params: NeuralStyleParams) -> tuple[tuple[str, ...], str]:
        """The style layers and content layer: the config's, else the backbone's defaults;
        ValueError for a backbone without defaults or a name the trunk does not have."""
        default_style, default_content = DEFAULT_LAYERS.get(model.name, ((), ""))
        style = tuple(params.style_layers or default_style)
        content = params.content_layer or default_content
        if not style or not content:
            raise ValueError(
                f"backbone {model.name} has no default style-transfer layers: set "
                f"content_layer and style_layers (layers: {', '.join(layer_names(model)[:40])})"
            )
        known = set(layer_names(model))
        unknown = [name for name in (*style, content) if name not in known]
        if unknown:
            raise ValueError(f"backbone {model.name} has no layer(s) {unknown}")
        return style, content

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        names = [*self.style_layers, self.content_layer]
        maps = feature_maps(self.model, x, list(dict.fromkeys(names)))
        return [maps[n] for n in self.style_layers], maps[self.content_layer]

    def _input(self, img: np.ndarray, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> normalised (1, 3, h, w): longer side at the configured size,
        or resized to `shape` (h, w) when given."""
        pil = Image.fromarray(np.ascontiguousarray(img))
        if shape is None:
            check_image_size(pil.width, pil.height, self.params.size)
            small = resize_longer(pil, self.params.size)
        else:
            resized = pil.convert("RGB").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
            small = np.asarray(resized, dtype=np.uint8)
        return normalise(small[None], self.model.mean, self.model.std)

    def losses(self, image: np.ndarray, content: np.ndarray, style: np.ndarray) -> dict[str, float]:
        """Unweighted content, style and TV losses of an RGB uint8 image against a content and a
        style image, as the optimisation sees them: content and style at the configured size,
        `image` resized to the content's size."""
        content_x = self._input(content)
        image_x = self._input(image, (content_x.shape[2], content_x.shape[3]))
        with torch.no_grad():
            style_feats, _ = self._features(self._input(style))
            _, content_feat = self._features(content_x)
            feats, feat = self._features(image_x)
            return {
                "content": float(content_loss(feat, content_feat)),
                "style": float(style_loss(feats, [gram(f) for f in style_feats])),
                "tv": float(tv_loss(self._pixels(image_x))),
            }

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.model.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.model.std).view(1, 3, 1, 1)
        return x * std + mean

    def run(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Optimise from normalised content (1, 3, H, W) towards the style of normalised style
        (1, 3, H', W'); returns the result in pixel values 0-1, (1, 3, H, W)."""
        p = self.params
        mean = torch.tensor(self.model.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.model.std).view(1, 3, 1, 1)
        low, high = (0.0 - mean) / std, (1.0 - mean) / std
        with torch.no_grad():
            style_feats, _ = self._features(style)
            target_grams = [gram(f) for f in style_feats]
            _, target_content = self._features(content)
            start = content.clone(memory_format=torch.contiguous_format)
            if p.init_noise > 0:
                gen = torch.Generator().manual_seed(p.seed)
                noise = torch.randn(start.shape, generator=gen) * p.init_noise / std
                start = torch.maximum(torch.minimum(start + noise, high), low)
        x = start.requires_grad_(True)

        def objective() -> torch.Tensor:
            feats, feat = self._features(x)
            loss = p.content_weight * content_loss(feat, target_content)
            loss = loss + p.style_weight * style_loss(feats, target_grams)
            return loss + p.tv_weight * tv_loss(x * std + mean)

        optimizer: torch.optim.Optimizer
        if p.optimizer == "lbfgs":
            optimizer = torch.optim.LBFGS([x], lr=p.lr, max_iter=1, history_size=50)
        else:
            optimizer = torch.optim.Adam([x], lr=p.lr)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        for _ in range(p.steps):
            optimizer.step(closure)  # type: ignore[arg-type]
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))
        return (x.detach() * std + mean).clamp(0.0, 1.0)

    def __call__(self, content: np.ndarray, style: np.ndarray) -> np.ndarray:
        result = self.run(self._input(content), self._input(style))
        pixels = result[0].permute(1, 2, 0).mul(255.0).round().to(torch.uint8)
        return pixels.numpy()


def stylizer_kwargs(params: NeuralStyleParams) -> dict[str, Any]:
    """`NeuralStylizer` params as a plain dict (for Ray's constructor kwargs)."""
    data = asdict(params)
    data["style_layers"] = _tuple(data["style_layers"])
    return data
