"""Image preprocessing shared by the embedding actors, the training loader and query search.

Two transforms, as in the thesis (sec. 5.2.1):
- eval: bilinear resize to (size, size), then per-channel normalisation with the backbone's own mean
  and std (`Backbone.mean`/`std`: ImageNet's for most, CLIP's for the OpenCLIP towers, TensorFlow
  Lite's for EfficientNet-Lite2; the ImageNet defaults below are only defaults);
- train: resize, random crop, h-flip p=0.2, rotation +-5 deg, brightness/contrast/saturation jitter
  0.9-1.1, grayscale p=0.4, normalisation.
Decoding (`drawmatch.core.images.open_image`) is separate, so the resize can run in CPU tasks and the
normalisation next to the model (on its device).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from drawmatch.core import storage
from drawmatch.core.images import DEFAULT_MAX_PIXELS, ImageError, open_image

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_resize(img: Image.Image, size: int) -> np.ndarray:
    """Eval transform, geometric part: bilinear resize to (size, size) -> (size, size, 3) uint8."""
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_eval_array(
    path: str | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, data: bytes | None = None
) -> np.ndarray:
    """Decode one image file (JPEGs at reduced size) and eval-resize it: (size, size, 3) uint8."""
    return eval_resize(open_image(path, draft_size=size, max_pixels=max_pixels, data=data), size)


def decode_rows(
    batch: dict[str, np.ndarray], roots: dict[str, str], size: int, max_pixels: int
) -> dict[str, np.ndarray]:
    """Decode and eval-resize a batch of catalogue rows (`id`, `root`, `path`, `sha256`).

    Returns `id`, `sha256`, `image` (B, size, size, 3) uint8, `ok` (B,) bool and `error` (B,) str;
    a row that fails to decode keeps a black image, ok=False and its reason."""
    n = len(batch["id"])
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    errors = np.array([""] * n, dtype=object)
    for i in range(n):
        path = storage.join(roots[str(batch["root"][i])], str(batch["path"][i]))
        try:
            images[i] = load_eval_array(path, size, max_pixels)
        except ImageError as exc:
            ok[i], errors[i] = False, exc.reason
    return {
        "id": batch["id"],
        "sha256": batch["sha256"],
        "image": images,
        "ok": ok,
        "error": errors,
    }


def normalise(
    images: np.ndarray | torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    device: Any = None,
) -> torch.Tensor:
    """(B, S, S, 3) uint8 images -> (B, 3, S, S) float32 model input, normalised by mean and std."""
    import torch

    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, np.uint8))
    x = x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def train_transform(
    resize: int,
    crop: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Any:
    """Train transform: PIL image -> (3, crop, crop) normalised float tensor, random each call."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize),
            T.RandomCrop(crop),
            T.RandomHorizontalFlip(p=0.2),
            T.RandomRotation(5, fill=255),
            T.ColorJitter(brightness=(0.9, 1.1), contrast=(0.9, 1.1), saturation=(0.9, 1.1)),
            T.RandomGrayscale(p=0.4),
            T.ToTensor(),
            T.Normalize(mean=mean, std=std),
        ]
    )
