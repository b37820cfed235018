"""Bad image files given on the command line (`search --query`, `stylize --content/--style`) cost
one line on stderr and exit code 1 or 2, with nothing written; odd but valid images (alpha, 16-bit,
CMYK) are searched like any other."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from drawmatch.cli import main
from drawmatch.core.config import load_config
from drawmatch.jobs import embed, index
from drawmatch.jobs.embed import EmbedConfig
from drawmatch.jobs.index import IndexConfig
from tests.conftest import hand_catalogue, make_image


def _png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buf, format="PNG")
    return buf.getvalue()


def _bomb(path: Path) -> None:
    """A small PNG whose header states 30000 x 30000 pixels (a decompression bomb)."""
    data = bytearray(_png_bytes(8, 8))
    ihdr = bytes(data[12:16]) + struct.pack(">II", 30000, 30000) + bytes(data[24:29])
    data[16:24] = ihdr[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


BAD: dict[str, Callable[[Path], None]] = {
    "empty.jpg": lambda p: p.write_bytes(b""),
    "half.jpg": _truncated,
    "notes.png": lambda p: p.write_text("these are not pixels\n"),
    "bomb.png": _bomb,
    "folder.jpg": lambda p: p.mkdir(),
    "2004_14-17_1013_BLG_V_C.png": lambda p: p.write_bytes(_png_bytes(64, 64)),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_line_refusal(capsys, argv: list[str], root: Path) -> str:
    before = _snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert _snapshot(root) == before  # nothing written
    return err


@pytest.fixture(scope="module")
def searchable(ray_local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badinputs")
    drawings = [make_image(root / "d" / f"draw{i}.jpg", (64, 64), seed=i) for i in range(2)]
    artworks = [make_image(root / "a" / f"art{i}.jpg", (64, 64), seed=20 + i) for i in range(4)]
    out = root / "out"
    hand_catalogue(out, {"drawing": drawings, "artwork": artworks})
    tiny = ["model.backbone=tiny", "model.pretrained=false", "model.image_size=48"]
    embed.run(load_config(EmbedConfig, None, [f"out={out}", *tiny]))
    index.run(IndexConfig(out=str(out)))
    return out


@pytest.mark.parametrize("name", list(BAD))
def test_search_refuses_a_bad_query_file_in_one_line(capsys, searchable, tmp_path, name):
    bad = tmp_path / name
    BAD[name](bad)
    err = _one_line_refusal(
        capsys, ["search", f"out={searchable}", "--query", str(bad)], searchable
    )
    assert err.startswith("drawmatch search: ") and name in err
    if name == "folder.jpg":
        assert "is a folder" in err


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("key", ["content", "style"])
def test_stylize_refuses_a_bad_image_in_one_line(capsys, tmp_path, name, key):
    bad = tmp_path / name
    BAD[name](bad)
    good = make_image(tmp_path / "good.png", (64, 64), fmt="PNG")
    files = {"content": good, "style": good, key: bad}
    target = tmp_path / "result.jpg"
    argv = ["stylize", "--content", str(files["content"]), "--style", str(files["style"])]
    err = _one_line_refusal(capsys, [*argv, "--out", str(target), "params.steps=1"], tmp_path)
    assert err.startswith("drawmatch stylize: ") and key in err
    assert not target.exists()


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (3000, 40), (2, 300)])
def test_stylize_refuses_a_too_thin_image_before_torch(capsys, tmp_path, monkeypatch, size):
    from drawmatch.augment import neural_style

    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was built for an image it cannot use")

    monkeypatch.setattr(neural_style, "create_backbone", no_model)
    thin = tmp_path / "thin.png"
    Image.new("RGB", size, (10, 120, 30)).save(thin)
    good = make_image(tmp_path / "good.png", (64, 64), fmt="PNG")
    argv = ["stylize", "--content", str(thin), "--style", str(good), "--out"]
    err = _one_line_refusal(capsys, [*argv, str(tmp_path / "r.jpg"), "params.steps=1"], tmp_path)
    assert f"{size[0]}x{size[1]}" in err and "content" in err


def _alpha(p: Path) -> None:
    rgba = np.zeros((64, 48, 4), np.uint8)
    rgba[..., 0], rgba[16:48, :, 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(p)


def _sixteen_bit(p: Path) -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(p)


def _cmyk(p: Path) -> None:
    Image.new("CMYK", (64, 64), (10, 200, 30, 5)).save(p, format="JPEG")


ODD = [("alpha.png", _alpha), ("deep.tif", _sixteen_bit), ("cmyk.jpg", _cmyk)]


@pytest.mark.parametrize("name, write", ODD)
def test_odd_but_valid_images_are_searched(capsys, searchable, tmp_path, name, write):
    query = tmp_path / name
    write(query)
    code = main(["search", f"out={searchable}", "--query", str(query), "--k", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "art" in captured.out and captured.err.count("Traceback") == 0


@pytest.mark.parametrize("name, write", ODD)
def test_odd_but_valid_images_are_stylized(capsys, tmp_path, name, write):
    source = tmp_path / name
    write(source)
    target = tmp_path / "result.png"
    tiny = ["params.backbone=tiny", "params.pretrained=false", "params.steps=1", "params.size=32"]
    argv = ["stylize", "--content", str(source), "--style", str(source), "--out", str(target)]
    code = main([*argv, *tiny])
    assert code == 0, capsys.readouterr().err
    with Image.open(target) as result:
        assert result.mode == "RGB" and max(result.size) == 32


def test_the_stylizer_refuses_a_too_thin_image_in_words():
    from drawmatch.augment.neural_style import NeuralStylizer
    from drawmatch.augment.styles import NeuralStyleParams

    stylizer = NeuralStylizer(NeuralStyleParams(backbone="tiny", pretrained=False, size=64))
    square = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"image of 640x10 px is too thin to style"):
        stylizer(np.zeros((10, 640, 3), np.uint8), square)
    assert stylizer(np.zeros((16, 64, 3), np.uint8), square).shape == (16, 64, 3)


def _valid_files() -> list[bytes]:
    rng = np.random.default_rng(3)
    pixels = Image.fromarray(rng.integers(0, 255, (40, 56, 3), np.uint8))
    files = []
    for fmt in ("PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"):
        buf = io.BytesIO()
        pixels.save(buf, format=fmt)
        files.append(buf.getvalue())
    return files


@st.composite
def _hostile_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, a valid image cut short, or a valid image with some bytes overwritten."""
    kind = draw(st.sampled_from(["random", "cut", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(_valid_files())))
    if kind == "cut":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_hostile_bytes())
def test_any_query_file_is_searched_or_refused_in_one_line(capsys, searchable, tmp_path, data):
    query = tmp_path / "query.img"
    query.write_bytes(data)
    before = _snapshot(searchable)
    code = main(["search", f"out={searchable}", "--query", str(query), "--k", "2"])
    captured = capsys.readouterr()
    assert _snapshot(searchable) == before
    if code == 0:
        assert "art" in captured.out
    else:
        assert code == 1 and len(captured.err.strip().splitlines()) == 1, captured.err
        assert captured.err.startswith("drawmatch search: error: query=")
