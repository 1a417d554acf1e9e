"""Decoding one fundus image: crop, colour modes, preprocessing, and every kind of bad file."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retina.errors import RetinaError
from retina.images import MAX_PIXELS, PREPROCESSING, BadImage, load_fundus

ORANGE = (230, 120, 40)


def disc_image(width: int, height: int, box: tuple[int, int, int, int], mode: str = "RGB"):
    """An orange disc (ellipse inscribed in `box`) on black, converted to `mode`."""
    img = Image.new("RGB", (width, height))
    ImageDraw.Draw(img).ellipse(box, fill=ORANGE)
    return img if mode == "RGB" else img.convert(mode)


def save(img: Image.Image, path: Path, fmt: str = "JPEG", **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


def is_orange(pixel: np.ndarray) -> bool:
    return bool(np.abs(pixel.astype(int) - ORANGE).max() <= 20)


def bright_fraction(arr: np.ndarray) -> float:
    return float((arr.max(axis=0) > 60).mean())


def test_crop_removes_black_border(tmp_path):
    # A 40 px disc in a 400x300 black photo: after the crop it fills the square.
    path = save(disc_image(400, 300, (130, 80, 170, 120)), tmp_path / "small.jpeg", quality=95)
    out = load_fundus(path, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert abs(bright_fraction(out) - np.pi / 4) < 0.08  # a disc inscribed in the square
    assert np.allclose(out[:, 16, 16], ORANGE, atol=12)
    assert out[:, 0, 0].max() < 30 and out[:, 31, 31].max() < 30  # corners outside the disc


def test_disc_cut_at_top_and_bottom_is_padded_to_a_square(tmp_path):
    # Kaggle-style: the disc is taller than the photo; the square keeps the disc's width.
    path = save(disc_image(300, 160, (50, -20, 250, 180)), tmp_path / "cut.jpeg", quality=95)
    out = load_fundus(path, 40)
    assert is_orange(out[:, 20, 2])  # left edge of the disc, middle row
    assert out[:, 1, 20].max() < 30  # padded band above the photo is black
    assert is_orange(out[:, 10, 20])  # inside the photo, inside the disc


@pytest.mark.parametrize("size", [(1, 1), (64, 48)])
def test_black_or_tiny_images_fall_back_to_the_full_image(tmp_path, size):
    path = save(Image.new("RGB", size), tmp_path / "black.png", fmt="PNG")
    assert load_fundus(path, 16).shape == (3, 16, 16)
    assert load_fundus(path, 16).max() == 0
    white = save(Image.new("RGB", (1, 1), (200, 200, 200)), tmp_path / "w.png", fmt="PNG")
    assert np.all(load_fundus(white, 8) == 200)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1"])
def test_colour_modes_become_rgb(tmp_path, mode):
    img = disc_image(64, 64, (0, 0, 63, 63), mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = save(img, tmp_path / f"m.{fmt.lower()}", fmt=fmt, quality=95)
    out = load_fundus(path, 16)
    assert out.shape == (3, 16, 16)
    # P and 1 are dithered: compare with the average colour of the patch one output pixel covers.
    expected = np.asarray(img.convert("RGB"))[28:36, 28:36].reshape(-1, 3).mean(axis=0)
    assert np.abs(out[:, 8, 8] - expected).max() <= 16


def test_palette_with_transparency_becomes_rgb(tmp_path):
    img = disc_image(32, 32, (0, 0, 31, 31)).convert("P")
    img.info["transparency"] = 0
    path = save(img, tmp_path / "t.png", fmt="PNG")
    assert load_fundus(path, 8).shape == (3, 8, 8)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.full((32, 32), 32896, dtype=np.uint16)  # 32896 / 257 == 128
    values[:, :16] = 65535
    path = save(Image.fromarray(values), tmp_path / "g16.png", fmt="PNG")
    assert Image.open(path).mode.startswith("I")
    out = load_fundus(path, 32)
    assert np.all(out[:, :, 28:] == 128)  # PIL's own convert would give 255 here
    assert np.all(out[:, :, :4] == 255)


@pytest.mark.parametrize("peak,expected", [(65535, 255), (200, 200)])
def test_32_bit_integer_grey_uses_the_range_its_values_need(tmp_path, peak, expected):
    values = np.full((16, 16), peak, dtype=np.int32)
    path = save(Image.fromarray(values), tmp_path / "i32.tiff", fmt="TIFF")
    assert Image.open(path).mode == "I"
    assert np.all(load_fundus(path, 8) == expected)


def test_png_under_a_jpeg_name_is_decoded(tmp_path):
    path = save(disc_image(64, 64, (0, 0, 63, 63)), tmp_path / "really_png.jpeg", fmt="PNG")
    out = load_fundus(path, 16)
    assert np.allclose(out[:, 8, 8], ORANGE, atol=2)


def bad_reason(path: Path) -> str:
    with pytest.raises(BadImage) as info:
        load_fundus(path, 16)
    return str(info.value)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpeg").write_bytes(b"")
    assert bad_reason(tmp_path / "empty.jpeg") == "empty file (0 bytes)"


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = io.BytesIO()
    Image.fromarray(noise).save(data, format="JPEG", quality=95)
    (tmp_path / "cut.jpeg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    assert bad_reason(tmp_path / "cut.jpeg").startswith("truncated or corrupt JPEG: ")


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.jpeg").write_text("this is not a photograph\n")
    assert bad_reason(tmp_path / "notes.jpeg").startswith("not an image")


def test_missing_file(tmp_path):
    assert bad_reason(tmp_path / "gone.jpeg").startswith("cannot read file")


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height (nothing that large is ever stored)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the IHDR CRC valid
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width,height", [(10_000, 9_000), (100_000, 100_000)])
def test_huge_dimensions_are_refused_before_decoding(tmp_path, width, height):
    reason = bad_reason(png_claiming_size(tmp_path / "bomb.jpeg", width, height))
    assert reason.startswith("image too large")
    assert f"{MAX_PIXELS / 1e6:.0f} megapixels" in reason or "80-megapixel" in reason


def test_graham_subtracts_the_local_average(tmp_path):
    img = disc_image(128, 128, (0, 0, 127, 127))
    ImageDraw.Draw(img).ellipse((60, 60, 67, 67), fill=(250, 200, 120))  # a bright lesion
    path = save(img, tmp_path / "g.png", fmt="PNG")
    out = load_fundus(path, 64, "graham")
    assert np.all(out[:, 0, 0] == 128) and np.all(out[:, 63, 0] == 128)  # masked outside
    assert np.abs(out[:, 32, 12].astype(int) - 128).max() <= 6  # flat colour -> grey
    assert out[:, 32, 32].min() > 140 and out[:, 32, 32].mean() > 180  # the lesion stands out
    assert set(PREPROCESSING) == {"none", "graham"}


def test_unknown_preprocessing_names_the_choices(tmp_path):
    path = save(disc_image(16, 16, (0, 0, 15, 15)), tmp_path / "a.png", fmt="PNG")
    with pytest.raises(RetinaError, match="graham.*none|none.*graham"):
        load_fundus(path, 8, "clahe")
