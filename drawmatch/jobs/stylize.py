"""The stylize job: one image rendered in the style of another (neural style transfer).

`drawmatch stylize --content IMG --style IMG [--out FILE] [params.steps=...]` decodes both images
(any format `drawmatch.core.images.open_image` reads, EXIF rotation applied), runs
`drawmatch.augment.neural_style.NeuralStylizer` with `config.params` and writes the result, whose longer
side is `params.size`, as a JPEG or PNG (by the extension of `out`). It prints the unweighted
losses of the content image, the style image and the result against both, so a user can see how
far the result moved towards the style.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from drawmatch.augment.styles import NeuralStyleParams
from drawmatch.core import storage
from drawmatch.core.config import Config, section, setting
from drawmatch.core.images import ImageError, open_image
from drawmatch.data.imaj import is_verso_name


@dataclass(frozen=True)
class StylizeConfig(Config):
    """Render the image `content` in the style of the image `style` (neural style transfer,
    `params`) and write the result to `out` (a JPEG or PNG file; an existing file is replaced only
    with overwrite=true)."""

    content: str | None = setting(None, help="image rendered")
    style: str | None = setting(None, help="image whose style is used")
    out: str = setting("stylized.jpg", help="image file written (.jpg, .jpeg or .png)")
    overwrite: bool = setting(False, help="replace an existing out file")
    params: NeuralStyleParams = section(NeuralStyleParams)
    jpeg_quality: int = setting(92, ge=1, le=100, help="JPEG quality")
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")


FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


@dataclass(frozen=True)
class StylizeResult:
    """Where the result went, its size, the seconds the optimisation took, and the unweighted
    losses (`content`, `style`, `tv`) of the result against the content and style images."""

    out: str
    width: int
    height: int
    seconds: float
    losses: dict[str, float]


def output_format(path: str) -> str:
    """PIL format name for an output file name, or ValueError for an unsupported extension."""
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in FORMATS:
        raise ValueError(f"out={path}: the file name must end in {', '.join(FORMATS)}")
    return FORMATS[suffix]


def _load(key: str, path: str, size: int, max_pixels: int) -> np.ndarray:
    """Decode one input image; a verso name, a bad file or an image too thin to style at `size`
    is a ValueError naming `key`, before any model is built."""
    from drawmatch.augment.neural_style import check_image_size

    if is_verso_name(path):
        raise ValueError(
            f"{key}={path}: the name states a verso (private data of a minor): refused"
        )
    try:
        img = open_image(path, draft_size=size, max_pixels=max_pixels)
        check_image_size(img.width, img.height, size)
    except (ImageError, ValueError) as exc:
        raise ValueError(f"{key}={path}: {exc}") from None
    return np.asarray(img)


def encode(img: np.ndarray, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def run(config: StylizeConfig) -> StylizeResult:
    """Stylise `config.content` with `config.style`; write `config.out`."""
    from drawmatch.augment.neural_style import NeuralStylizer

    if not config.content or not config.style:
        raise ValueError("stylize needs content=IMG and style=IMG (or --content, --style)")
    fmt = output_format(config.out)
    p = config.params
    content = _load("content", config.content, p.size, config.max_image_pixels)
    style = _load("style", config.style, p.size, config.max_image_pixels)
    stylizer = NeuralStylizer(p)
    start = time.perf_counter()
    result = stylizer(content, style)
    seconds = time.perf_counter() - start
    storage.write_bytes(config.out, encode(result, fmt, config.jpeg_quality))
    table = {
        "content image": stylizer.losses(content, content, style),
        "style image": stylizer.losses(style, content, style),
        "result": stylizer.losses(result, content, style),
    }
    print(
        f"stylize: {config.content} in the style of {config.style} -> {config.out} "
        f"({result.shape[1]}x{result.shape[0]}, {p.steps} {p.optimizer} steps on {p.backbone}, "
        f"{seconds:.1f} s)"
    )
    print("  losses against the content image (content) and the style image (style, tv):")
    for name, losses in table.items():
        print(
            f"    {name:<14} content {losses['content']:.4g}  style {losses['style']:.4g}  "
            f"tv {losses['tv']:.4g}"
        )
    return StylizeResult(config.out, result.shape[1], result.shape[0], seconds, table["result"])
