"""Style effects on plain arrays and the StyleAugmenter stage on a plain dict (no Ray)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drawmatch.augment.styles import (
    STYLES,
    StyleAugmenter,
    StyleParams,
    apply_style,
    shrink,
    styled_path,
)

from .conftest import make_image


def _image(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    """Smooth colourful RGB uint8 (h, w, 3) image with some edges."""
    rng = np.random.default_rng(seed)
    base = rng.integers(20, 235, size=(6, 8, 3), dtype=np.uint8)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 10, 30)
    return img


@pytest.mark.parametrize("style", STYLES)
def test_style_shape_dtype_and_changes_image(style: str) -> None:
    img = _image()
    out = apply_style(img, style, StyleParams())
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    assert not np.array_equal(out, img)


def test_gray_is_itu_luma_on_three_equal_channels() -> None:
    img = _image()
    out = apply_style(img, "gray")
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 0], out[..., 2])
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    assert np.abs(out[..., 0] - luma).max() <= 1.0


def _gaussian_kernel(ksize: int) -> np.ndarray:
    # OpenCV's sigma for sigma=0: 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def test_pencil_matches_hand_computed_formula() -> None:
    ksize = 5
    img = _image(12, 16, seed=3)
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    gray = np.round(0.299 * r + 0.587 * g + 0.114 * b)
    inv = 255.0 - gray
    pad = ksize // 2
    k = _gaussian_kernel(ksize)
    padded = np.pad(inv, pad, mode="reflect")  # numpy "reflect" == OpenCV BORDER_REFLECT_101
    rows = np.stack([np.convolve(row, k, mode="valid") for row in padded])
    blur = np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T
    blur = np.round(blur)
    den = 255.0 - blur
    expected = np.where(den > 0, np.clip(np.round(gray * 256.0 / np.maximum(den, 1)), 0, 255), 0)

    out = apply_style(img, "pencil", StyleParams(pencil_blur_ksize=ksize))
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    diff = np.abs(out[..., 0].astype(np.float64) - expected)
    assert diff.max() <= 3, diff.max()
    assert diff.mean() < 0.5
    # a uniform image blurs to itself: g * 256 / (255 - (255 - g)) = 256 -> saturates to white
    flat = np.full((10, 10, 3), 120, np.uint8)
    assert (apply_style(flat, "pencil") == 255).all()


def test_pencil_default_kernel_matches_direct_cv2() -> None:
    img = _image()
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    blur = cv2.GaussianBlur(255 - g, (101, 101), 0)
    expected = cv2.divide(g, 255 - blur, scale=256)
    assert np.array_equal(apply_style(img, "pencil")[..., 1], expected)


def test_colour_styles_equal_direct_cv2_calls_in_bgr() -> None:
    img = _image()
    bgr = np.ascontiguousarray(img[..., ::-1])
    direct = {
        "oil": cv2.xphoto.oilPainting(bgr, 7, 1),
        "watercolor": cv2.stylization(bgr, sigma_s=60, sigma_r=0.6),
        "texture": cv2.detailEnhance(bgr, sigma_s=60, sigma_r=0.4),
    }
    for style, expected_bgr in direct.items():
        out = apply_style(img, style, StyleParams())
        assert np.array_equal(out, expected_bgr[..., ::-1]), style
    # oil painting depends on channel order: running it on RGB would give another image
    wrong = cv2.xphoto.oilPainting(np.ascontiguousarray(img), 7, 1)
    assert not np.array_equal(apply_style(img, "oil"), wrong)


def test_style_params_are_used() -> None:
    img = _image()
    a = apply_style(img, "oil", StyleParams(oil_size=7))
    b = apply_style(img, "oil", StyleParams(oil_size=2))
    assert not np.array_equal(a, b)


def test_unknown_style_names_known_ones() -> None:
    with pytest.raises(ValueError, match="known styles: oil, watercolor, texture, gray, pencil"):
        apply_style(_image(), "cubist")
    with pytest.raises(ValueError, match="RGB uint8"):
        apply_style(np.zeros((4, 4), np.uint8), "gray")


def test_shrink_caps_longer_side() -> None:
    img = np.zeros((300, 500, 3), np.uint8)
    assert shrink(img, 100).shape == (60, 100, 3)
    assert shrink(img, 1000) is img


def _batch(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}


def test_augmenter_writes_files_and_error_rows(tmp_path: Path) -> None:
    drawings = tmp_path / "drawings"
    make_image(drawings / "a.jpg", size=(200, 100), seed=1)
    make_image(drawings / "sub" / "b.png", size=(80, 60), seed=2, fmt="PNG")
    (drawings / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (drawings / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    aug = StyleAugmenter(
        styles=("gray", "pencil"),
        params={"pencil_blur_ksize": 11},
        roots={"drawings": str(drawings)},
        out_root=str(out),
        max_side=64,
        jpeg_quality=90,
    )
    batch = _batch(
        [
            {"id": "a", "root": "drawings", "path": "a.jpg", "collection": "drawing"},
            {"id": "b", "root": "drawings", "path": "sub/b.png", "collection": "drawing"},
            {"id": "x", "root": "drawings", "path": "broken.jpg", "collection": "drawing"},
            {"id": "z", "root": "drawings", "path": "empty.jpg", "collection": "drawing"},
            {"id": "m", "root": "nowhere", "path": "a.jpg", "collection": "artwork"},
        ]
    )
    res = StyleAugmenter.__call__(aug, batch)
    assert len(res["id"]) == 10
    assert list(res["id"][:4]) == ["a__gray", "a__pencil", "b__gray", "b__pencil"]
    assert set(res["root"]) == {"out"}
    ok = [i for i, s in enumerate(res["status"]) if s == "ok"]
    assert len(ok) == 4
    for i in ok:
        path = out / res["path"][i]
        assert res["path"][i] == styled_path(res["parent_id"][i], res["style"][i])
        assert path.exists()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == res["sha256"][i]
        with Image.open(path) as im:
            assert im.size == (res["width"][i], res["height"][i])
            assert max(im.size) <= 64
        assert res["error"][i] is None
    assert (res["width"][0], res["height"][0]) == (64, 32)
    errors = {res["id"][i]: res["error"][i] for i in range(10) if res["status"][i] == "error"}
    assert set(errors) == {"x__gray", "x__pencil", "z__gray", "z__pencil", "m__gray", "m__pencil"}
    assert errors["z__gray"] == "zero-byte file"
    assert errors["m__gray"] == "unknown root"
    assert errors["x__gray"]
    assert res["sha256"][4] is None and res["width"][4] is None
    assert not list(out.rglob(".*tmp*"))


def test_augmenter_row_styles_subset_and_empty_batch(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg", size=(80, 60))
    aug = StyleAugmenter(styles=("gray", "oil"), roots={"d": str(tmp_path)}, out_root=str(tmp_path))
    batch = _batch(
        [{"id": "a", "root": "d", "path": "a.jpg", "collection": "drawing", "styles": "oil"}]
    )
    res = aug(batch)
    assert list(res["id"]) == ["a__oil"] and res["status"][0] == "ok"
    empty = aug({k: v[:0] for k, v in batch.items()})
    assert all(len(v) == 0 for v in empty.values()) and "sha256" in empty
    with pytest.raises(ValueError, match="unknown style"):
        StyleAugmenter(styles=("sepia",))
