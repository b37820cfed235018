"""Style augmentation of drawings (thesis sec. 5.2.2): OpenCV effects on RGB images.

The effects are pure functions on RGB `uint8` arrays of shape (H, W, 3) that return RGB `uint8`
arrays of the same shape. OpenCV works in BGR, so each colour effect converts in and out; the oil
painting effect in particular builds its histogram on the BGR->gray plane and gives a different
result on RGB input.

`StyleAugmenter` is the Ray Data stage: a callable class that decodes catalogue rows, writes one
styled JPEG per (row, style) under the output root and returns the new catalogue rows.

The `neural` style is neural style transfer (`drawmatch.augment.neural_style`): it needs a second image,
the style reference, which the augment job chooses per row (columns `ref_root`, `ref_path`), and
a CNN, which the stage builds once when `neural` is among its styles. Its output's longer side is
`NeuralStyleParams.size` (256 px by default), not `max_side`.

Cost: the edge-preserving filters (`stylization`, `detailEnhance`) and the oil painting histogram
grow with the pixel count and take many seconds on a 3000x2000 scan; images are therefore decoded at
reduced size and shrunk so that their longer side is at most `max_side` before any effect runs
(see BENCHMARKS.md, "Decode and augment").
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from drawmatch.core import storage
from drawmatch.core.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, Config, ConfigError, setting
from drawmatch.core.images import DEFAULT_MAX_PIXELS, ImageError, open_image

STYLES = ("oil", "watercolor", "texture", "gray", "pencil")
NEURAL = "neural"  # the style-transfer effect of the augment job (drawmatch.augment.neural_style)


@dataclass(frozen=True)
class StyleParams(Config):
    """OpenCV parameters of the style effects (thesis sec. 5.2.2; report values where report and
    code differ, pencil from the code). The sigma ranges are OpenCV's documented ranges of the
    edge-preserving filters."""

    oil_size: int = setting(7, ge=1, help="oil painting: neighbourhood size")
    oil_dyn_ratio: int = setting(1, ge=1, help="oil painting: dynamic ratio")
    watercolor_sigma_s: float = setting(60.0, ge=0, le=200, help="watercolour: spatial sigma")
    watercolor_sigma_r: float = setting(0.6, ge=0, le=1, help="watercolour: range sigma")
    texture_sigma_s: float = setting(60.0, ge=0, le=200, help="texture: spatial sigma")
    texture_sigma_r: float = setting(0.4, ge=0, le=1, help="texture: range sigma")
    pencil_blur_ksize: int = setting(101, ge=1, help="pencil: blur kernel size (odd)")
    pencil_scale: float = setting(256.0, gt=0, le=65536, help="pencil: scale of the dodge division")

    def check(self) -> None:
        if self.pencil_blur_ksize % 2 == 0:
            raise ConfigError(f"pencil_blur_ksize: {self.pencil_blur_ksize} must be odd")


@dataclass(frozen=True)
class NeuralStyleParams(Config):
    """Neural style transfer (drawmatch.augment.neural_style): `steps` of `optimizer` (adam or lbfgs) at
    learning rate `lr` on images whose longer side is `size`, features of `backbone`;
    loss = content_weight * content + style_weight * style + tv_weight * total variation;
    `content_layer` and `style_layers` null: the backbone's defaults; `init_noise` (pixel std,
    0-1) of noise drawn from `seed` added to the starting image."""

    backbone: str = setting("efficientnet_lite0", help="backbone whose features are matched")
    pretrained: bool = setting(True, help="the backbone's pretrained weights")
    size: int = setting(
        256, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE, help="longer side of the rendered image in px"
    )
    steps: int = setting(150, ge=1, help="optimisation steps")
    optimizer: str = setting("adam", choices=("adam", "lbfgs"), help="optimiser of the image")
    lr: float = setting(0.05, gt=0, le=10, help="learning rate of the image's pixels")
    content_weight: float = setting(1.0, ge=0, le=1e9, help="weight of the content loss")
    style_weight: float = setting(1000.0, ge=0, le=1e9, help="weight of the style loss")
    tv_weight: float = setting(1.0, ge=0, le=1e9, help="weight of the total variation loss")
    content_layer: str | None = setting(None, help="content layer (null: the backbone's default)")
    style_layers: tuple[str, ...] | None = setting(
        None, help="style layers (null: the backbone's defaults)"
    )
    init_noise: float = setting(0.0, ge=0, le=1, help="std of the noise added to the start image")
    seed: int = setting(0, ge=0, help="seed of the noise and of random reference images")

    def check(self) -> None:
        if self.content_weight == 0 and self.style_weight == 0:
            raise ConfigError("content_weight, style_weight: at least one must be > 0")


OUTPUT_COLUMNS = (
    "id",
    "parent_id",
    "style",
    "collection",
    "root",
    "path",
    "sha256",
    "width",
    "height",
    "status",
    "error",
)
STYLED_DIR = "styled"
DEFAULT_PARAMS = StyleParams()


def _check_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def _gray(img: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luma of an RGB image (ITU-R BT.601 weights, as cv2.cvtColor)."""
    return cv2.cvtColor(_check_rgb(img), cv2.COLOR_RGB2GRAY)


def oil(img: np.ndarray, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """Oil painting: `cv2.xphoto.oilPainting(bgr, size, dynRatio)` (thesis: 7, 1)."""
    bgr = cv2.cvtColor(_check_rgb(img), cv2.COLOR_RGB2BGR)
    out = cv2.xphoto.oilPainting(bgr, int(params.oil_size), int(params.oil_dyn_ratio))
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def watercolor(img: np.ndarray, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """Watercolour: `cv2.stylization(bgr, sigma_s, sigma_r)` (thesis: 60, 0.6)."""
    bgr = cv2.cvtColor(_check_rgb(img), cv2.COLOR_RGB2BGR)
    out = cv2.stylization(
        bgr, sigma_s=float(params.watercolor_sigma_s), sigma_r=float(params.watercolor_sigma_r)
    )
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def texture(img: np.ndarray, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """Textured: `cv2.detailEnhance(bgr, sigma_s, sigma_r)` (thesis: 60, 0.4)."""
    bgr = cv2.cvtColor(_check_rgb(img), cv2.COLOR_RGB2BGR)
    out = cv2.detailEnhance(
        bgr, sigma_s=float(params.texture_sigma_s), sigma_r=float(params.texture_sigma_r)
    )
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def gray(img: np.ndarray, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """Grayscale as three equal channels: `cv2.cvtColor(RGB2GRAY)`."""
    return cv2.cvtColor(_gray(img), cv2.COLOR_GRAY2RGB)


def pencil(img: np.ndarray, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """Pencil sketch (thesis code): g = gray(img); b = GaussianBlur(255 - g, (k, k), 0);
    out = cv2.divide(g, 255 - b, scale) (x / 0 gives 0), as three equal channels."""
    ksize = int(params.pencil_blur_ksize)
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"pencil_blur_ksize must be a positive odd number, got {ksize}")
    g = _gray(img)
    blur = cv2.GaussianBlur(255 - g, (ksize, ksize), 0)
    sketch = cv2.divide(g, 255 - blur, scale=float(params.pencil_scale))
    return cv2.cvtColor(sketch, cv2.COLOR_GRAY2RGB)


STYLE_FUNCTIONS: dict[str, Callable[[np.ndarray, StyleParams], np.ndarray]] = {
    "oil": oil,
    "watercolor": watercolor,
    "texture": texture,
    "gray": gray,
    "pencil": pencil,
}
assert tuple(STYLE_FUNCTIONS) == STYLES


def check_styles(styles: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The styles as a tuple, or ValueError naming the unknown ones and the known ones (the
    OpenCV effects and `neural`)."""
    known = (*STYLE_FUNCTIONS, NEURAL)
    unknown = [s for s in styles if s not in known]
    if unknown:
        raise ValueError(f"unknown style(s) {unknown}; known styles: {', '.join(known)}")
    return tuple(styles)


def apply_style(img: np.ndarray, style: str, params: StyleParams = DEFAULT_PARAMS) -> np.ndarray:
    """Apply one named OpenCV style to an RGB uint8 (H, W, 3) image; returns RGB uint8 (H, W, 3).
    (`neural` needs a reference image and a model: `drawmatch.augment.neural_style.NeuralStylizer`.)"""
    if style not in STYLE_FUNCTIONS:
        check_styles([style])
        raise ValueError(f"style {style!r} needs a reference image; use NeuralStylizer")
    return STYLE_FUNCTIONS[style](img, params)


def shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    """Resize (area interpolation) so that the longer side is at most `max_side`; never enlarges."""
    h, w = img.shape[:2]
    longer = max(h, w)
    if longer <= max_side:
        return img
    scale = max_side / float(longer)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def styled_id(parent_id: str, style: str) -> str:
    return f"{parent_id}__{style}"


def styled_path(parent_id: str, style: str) -> str:
    """Path of a styled copy relative to the output root (catalogue root `out`)."""
    return f"{STYLED_DIR}/{style}/{styled_id(parent_id, style)}.jpg"


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _params(params: StyleParams | dict[str, Any] | None) -> StyleParams:
    if params is None:
        return DEFAULT_PARAMS
    if isinstance(params, StyleParams):
        return params
    return StyleParams(**params)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


class StyleAugmenter:
    """Ray Data stage writing styled copies of catalogue images.

    `__call__` takes a batch of catalogue rows (columns `id`, `root`, `path`, `collection`, and
    optionally `styles`, a comma-separated subset of styles to make for that row) and returns one
    row per (input row, style) with the columns of `OUTPUT_COLUMNS`: id `<parent_id>__<style>`,
    root `out`, path `styled/<style>/<id>.jpg`, the sha256, width and height of the written JPEG
    and status `ok`, or status `error` with the reason (an undecodable parent gives one error row
    per style; nothing raises).

    Each image is decoded at reduced size (`open_image(draft_size=max_side)`, JPEG DCT scaling) and
    shrunk so that its longer side is <= `max_side` before styling: the effects are slow on
    full-size scans (seconds per effect on 3000x2000). `cv2_threads` sets OpenCV's thread count
    for the process (1: one Ray CPU per actor; None leaves it alone), and torch's for `neural`.

    `neural`: the row's style reference is read from columns `ref_root` and `ref_path` (a row
    without one gets the error "style reference: none chosen"); `neural` holds its settings.
    """

    def __init__(
        self,
        styles: tuple[str, ...] | list[str] = STYLES,
        params: StyleParams | dict[str, Any] | None = None,
        roots: dict[str, str] | None = None,
        out_root: str = ".",
        max_side: int = 1024,
        jpeg_quality: int = 92,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cv2_threads: int | None = 1,
        neural: NeuralStyleParams | dict[str, Any] | None = None,
    ) -> None:
        self.styles = check_styles(tuple(styles))
        self.params = _params(params)
        self.out_root = storage.absolute(out_root)
        self.roots = dict(roots or {})
        self.roots.setdefault("out", self.out_root)
        if max_side < 1:
            raise ValueError(f"max_side must be positive, got {max_side}")
        self.max_side = int(max_side)
        self.jpeg_quality = int(jpeg_quality)
        self.max_pixels = int(max_pixels)
        if cv2_threads is not None:
            cv2.setNumThreads(int(cv2_threads))
        self.stylizer: Any = None
        if NEURAL in self.styles:
            from drawmatch.augment.neural_style import NeuralStylizer

            self.stylizer = NeuralStylizer(neural, threads=cv2_threads)

    def _row_styles(self, value: Any) -> tuple[str, ...]:
        text = _text(value)
        if text is None:
            return self.styles
        wanted = [s.strip() for s in text.split(",") if s.strip()]
        return tuple(s for s in self.styles if s in wanted)

    def _load(self, root: str | None, path: str | None) -> np.ndarray:
        if root is None or path is None:
            raise ImageError("missing path")
        if root not in self.roots:
            raise ImageError("unknown root", root)
        pil = open_image(
            storage.join(self.roots[root], path),
            draft_size=self.max_side,
            max_pixels=self.max_pixels,
        )
        return shrink(np.asarray(pil), self.max_side)

    def _style(
        self, img: np.ndarray, style: str, batch: dict[str, np.ndarray], i: int
    ) -> np.ndarray:
        if style != NEURAL:
            return apply_style(img, style, self.params)
        root = _text(batch["ref_root"][i]) if "ref_root" in batch else None
        path = _text(batch["ref_path"][i]) if "ref_path" in batch else None
        if root is None or path is None:
            raise ImageError("none chosen")
        return self.stylizer(img, self._load(root, path))  # type: ignore[no-any-return]

    def _write(self, img: np.ndarray, rel: str) -> tuple[str, int, int]:
        data = encode_jpeg(img, self.jpeg_quality)
        storage.write_bytes(storage.join(self.out_root, rel), data)
        return hashlib.sha256(data).hexdigest(), int(img.shape[1]), int(img.shape[0])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list[Any]] = {c: [] for c in OUTPUT_COLUMNS}
        n = len(batch["id"])
        styles_col = batch.get("styles")
        for i in range(n):
            parent = str(batch["id"][i])
            collection = _text(batch["collection"][i]) if "collection" in batch else None
            styles = self._row_styles(styles_col[i] if styles_col is not None else None)
            img: np.ndarray | None = None
            load_error: str | None = None
            try:
                img = self._load(_text(batch["root"][i]), _text(batch["path"][i]))
            except ImageError as exc:
                load_error = exc.reason
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error row
                load_error = f"decode failed: {type(exc).__name__}"
            for style in styles:
                rel = styled_path(parent, style)
                sha: str | None = None
                width: int | None = None
                height: int | None = None
                error = load_error
                if img is not None:
                    try:
                        out = self._style(img, style, batch, i)
                    except ImageError as exc:
                        error = f"style reference: {exc.reason}"
                    except Exception as exc:  # noqa: BLE001
                        error = f"style failed: {type(exc).__name__}: {exc}"[:200]
                    else:
                        try:
                            sha, width, height = self._write(out, rel)
                        except OSError as exc:
                            error = f"write failed: {exc.strerror or type(exc).__name__}"
                rows["id"].append(styled_id(parent, style))
                rows["parent_id"].append(parent)
                rows["style"].append(style)
                rows["collection"].append(collection)
                rows["root"].append("out")
                rows["path"].append(rel)
                rows["sha256"].append(sha)
                rows["width"].append(width)
                rows["height"].append(height)
                rows["status"].append("ok" if error is None else "error")
                rows["error"].append(error)
        return {c: np.array(v, dtype=object) for c, v in rows.items()}


def augmenter_kwargs(
    styles: tuple[str, ...],
    params: StyleParams,
    roots: dict[str, str],
    out_root: str,
    max_side: int,
    jpeg_quality: int,
    max_pixels: int,
    neural: NeuralStyleParams | None = None,
) -> dict[str, Any]:
    """Constructor kwargs of `StyleAugmenter` as plain values (for Ray's fn_constructor_kwargs)."""
    return {
        "neural": None if neural is None else asdict(neural),
        "styles": list(styles),
        "params": asdict(params),
        "roots": dict(roots),
        "out_root": str(out_root),
        "max_side": int(max_side),
        "jpeg_quality": int(jpeg_quality),
        "max_pixels": int(max_pixels),
    }
