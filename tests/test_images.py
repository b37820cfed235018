"""Safe decoding of bad and unusual image files (drawmatch.core.images), one kind per test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from drawmatch.core.images import ImageError, open_image
from tests.conftest import make_image


def _reason(path, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        open_image(path, **kwargs)
    return info.value.reason


def test_plain_jpeg_is_rgb_of_its_size(tmp_path):
    path = make_image(tmp_path / "a.jpg", size=(64, 48))
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (64, 48)
    arr = np.asarray(open_image(path))
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "zero-byte file"


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    assert _reason(path) == "not an image"


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "unreadable file"


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_jpeg(tmp_path, keep):
    full = make_image(tmp_path / "full.jpg", size=(120, 90))
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * keep)])
    assert _reason(cut) == "truncated"


def test_truncated_png(tmp_path):
    full = make_image(tmp_path / "full.png", size=(120, 90), fmt="PNG")
    data = full.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    assert _reason(cut) == "truncated"


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    arr = np.asarray(open_image(path))
    assert arr.shape == (20, 30, 3)
    r, g, b = arr[10, 15].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_to_8bit(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    arr = np.asarray(open_image(path))
    assert arr.shape == (1, 3, 3)
    # 0 -> 0, half -> 128, full -> 255, grey in all three channels
    assert arr[0, :, 0].tolist() == [0, 128, 255]
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "pal.png"
    img = Image.new("P", (4, 2), 1)
    img.putpalette([0, 0, 0] + [200, 10, 10] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)  # index 0 is the transparent one
    img.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    arr = np.asarray(open_image(path))
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[1, 3].tolist() == [200, 10, 10]


def test_rgba_png_is_composited_on_white(tmp_path):
    path = tmp_path / "alpha.png"
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[0, 0, 3] = 0  # fully transparent
    rgba[1, 1, 3] = 255  # opaque
    Image.fromarray(rgba, mode="RGBA").save(path)
    arr = np.asarray(open_image(path))
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[1, 1].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rot.jpg"
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(path, exif=exif)
    assert Image.open(path).size == (60, 40)
    assert open_image(path).size == (40, 60)


def test_decompression_bomb_with_small_limit(tmp_path):
    path = make_image(tmp_path / "big.png", size=(200, 200), fmt="PNG")
    assert _reason(path, max_pixels=10_000) == "decompression bomb"  # > 2x the limit
    assert _reason(path, max_pixels=30_000) == "decompression bomb"  # between 1x and 2x
    assert open_image(path, max_pixels=40_000).size == (200, 200)


def test_bomb_limit_is_restored(tmp_path):
    path = make_image(tmp_path / "big.png", size=(200, 200), fmt="PNG")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError):
        open_image(path, max_pixels=10_000)
    assert Image.MAX_IMAGE_PIXELS == before


def test_draft_decodes_a_smaller_jpeg(tmp_path):
    path = make_image(tmp_path / "large.jpg", size=(800, 600))
    small = open_image(path, draft_size=150)
    assert small.size == (200, 150)  # 1/4 scale keeps the short side >= 150
    assert open_image(path).size == (800, 600)


def test_image_error_carries_reason_and_detail(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(ImageError) as info:
        open_image(path)
    assert info.value.reason == "not an image"
    assert "notes.jpg" in str(info.value)
