"""Decode one fundus photograph into a square uint8 array, cropped to the fundus circle.

`decode_fundus(path, size, preprocessing)` is the one function that turns a file into the
pixels a model sees: the cache builder (`retina.cache`) runs it once per image of a dataset, and
`python -m retina.predict` (`retina.grading`) on every new photograph, so an exported model
gets exactly what it was trained on. It decodes with PIL (any format PIL recognises, whatever
the file name says), converts the colour mode to 8-bit RGB, crops to the bright fundus disc
(dropping the black border), pads to a square around the disc's centre, resizes to `size` x
`size`, then applies the optional preprocessing (`load_fundus`: the pixels alone). A file that cannot be turned into an image raises `BadImage(reason)`; the cache
collects those reasons and reports every bad file at once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

from retina.errors import RetinaError

# Largest image we agree to decode. A 12-megapixel fundus camera is typical; 80 MP leaves room
# for any real camera while refusing a crafted header that would allocate gigabytes.
MAX_PIXELS = 80_000_000
# Grey level (0-255, on a box-averaged thumbnail) above which a pixel belongs to the fundus.
# Borders of real photographs are JPEG-noisy black (0-8); the dim fundus rim is above ~15.
BORDER_THRESHOLD = 10
# A thumbnail row/column belongs to the fundus when it has at least this share of the largest
# row/column count: keeps the whole disc (its edge chord is far larger) and ignores burned-in
# text or specks in the black corners.
PROFILE_FRACTION = 0.1
# The crop is located on a thumbnail whose long side is about this many pixels (fast).
THUMBNAIL_SIDE = 256


class BadImage(Exception):
    """A file that cannot be decoded into a fundus image; `str(exc)` is the reason."""


def _none(rgb: np.ndarray) -> np.ndarray:
    return rgb


def _graham(rgb: np.ndarray) -> np.ndarray:
    """Ben Graham's Kaggle 2015 preprocessing: subtract the local average colour.

    4*img - 4*GaussianBlur(img) + 128, clipped to 0..255, then everything outside 90 % of the
    fundus radius set to grey 128 (the blur smears the rim; Graham masked it the same way).
    Graham blurred with sigma = radius / 30; after our crop the radius is size / 2.
    """
    size = rgb.shape[0]
    sigma = max(size / 60.0, 0.5)
    blurred = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius=sigma))
    out = 4 * rgb.astype(np.int16) - 4 * np.asarray(blurred, dtype=np.int16) + 128
    out = np.clip(out, 0, 255).astype(np.uint8)
    centre = (size - 1) / 2.0
    yy, xx = np.ogrid[:size, :size]
    outside = (yy - centre) ** 2 + (xx - centre) ** 2 > (0.9 * size / 2.0) ** 2
    out[outside] = 128
    return out


# name -> function(uint8 [S, S, 3]) -> uint8 [S, S, 3]; applied after crop and resize.
PREPROCESSING: dict[str, Callable[[np.ndarray], np.ndarray]] = {"none": _none, "graham": _graham}


def preprocessing_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing function called `name`; RetinaError naming the choices otherwise."""
    try:
        return PREPROCESSING[name]
    except KeyError:
        choices = ", ".join(sorted(PREPROCESSING))
        raise RetinaError(
            f"unknown preprocessing {name!r}: choose one of {choices} (e.g. --preprocessing none)"
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; 16/32-bit greys are scaled down, not clipped at 255."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img).astype(np.float64)
        peak = float(values.max(initial=0))
        # 16-bit data spans 0..65535; PIL's own convert() would clip everything above 255 to
        # white. Mode I may hold 8-bit, 16-bit (older PNG decoding) or wider values: use the
        # smallest of those ranges that holds the data.
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "I" and peak <= 255:
            top = 255.0
        elif img.mode == "I" and peak <= 65535:
            top = 65535.0
        else:
            top = max(peak, 1.0)
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "P":
        # Palette images with transparency must pass through RGBA (PIL warns otherwise).
        img = img.convert("RGBA")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise BadImage(f"cannot convert colour mode {img.mode} to RGB ({exc})") from None


def fundus_box(img: Image.Image) -> tuple[int, int, int, int]:
    """Square box (left, top, right, bottom) around the bright fundus disc of `img`.

    The box may extend past the image (the disc is often cut at the top and bottom); cropping
    with it pads with black. Falls back to the whole image when no disc is visible.
    """
    width, height = img.size
    factor = max(1, max(width, height) // THUMBNAIL_SIDE)
    small = img.reduce(factor) if factor > 1 else img  # box average: also damps JPEG noise
    bright = np.asarray(small.convert("L")) > BORDER_THRESHOLD
    row_counts, col_counts = bright.sum(axis=1), bright.sum(axis=0)
    if row_counts.max(initial=0) == 0:
        left, top, right, bottom = 0, 0, width, height
    else:
        rows = np.flatnonzero(row_counts >= PROFILE_FRACTION * row_counts.max())
        cols = np.flatnonzero(col_counts >= PROFILE_FRACTION * col_counts.max())
        left, right = cols[0] * factor, min(width, (cols[-1] + 1) * factor)
        top, bottom = rows[0] * factor, min(height, (rows[-1] + 1) * factor)
    side = max(right - left, bottom - top, 1)
    x0 = int(round((left + right - side) / 2.0))
    y0 = int(round((top + bottom - side) / 2.0))
    return x0, y0, x0 + side, y0 + side


def _open_checked(path: Path, size: int) -> Image.Image:
    """Open and fully decode `path`, turning every way it can fail into a BadImage reason."""
    try:
        nbytes = os.path.getsize(path)
    except OSError as exc:
        raise BadImage(f"cannot read file ({exc.strerror or exc})") from None
    if nbytes == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # We apply our own, lower limit below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise BadImage(
                f"image too large: {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                f"over the {MAX_PIXELS / 1e6:.0f}-megapixel limit (refused before decoding; "
                "a corrupt or crafted header?)"
            )
        # JPEG only: decode at a reduced scale (DCT scaling), still at least 2x the output size.
        img.draft(img.mode, (2 * size, 2 * size))
        img.load()  # LOAD_TRUNCATED_IMAGES stays False, so a truncated file raises here
        return img
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(
            f"image too large: {exc} (our limit is {MAX_PIXELS / 1e6:.0f} megapixels)"
        ) from None
    except UnidentifiedImageError:
        raise BadImage(
            f"not an image ({nbytes} bytes that PIL recognises as no image format)"
        ) from None
    except OSError as exc:
        raise BadImage(f"truncated or corrupt JPEG: {exc}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # PIL's format plugins signal malformed headers with these.
        raise BadImage(f"corrupt image data: {type(exc).__name__}: {exc}") from None


def decode_fundus(path: Path, size: int, preprocessing: str = "none") -> tuple[np.ndarray, str]:
    """`load_fundus` plus the format PIL found (e.g. "JPEG", "PNG"), for the cache's statistics."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    process = preprocessing_fn(preprocessing)
    img = _open_checked(Path(path), size)
    fmt = img.format or "unknown"
    with img:
        try:
            rgb = _to_rgb(img)
            square = rgb.crop(fundus_box(rgb))  # pads with black where the box leaves the image
            # reducing_gap: box-reduce first (fast), then filter the last factor of <= 2.
            resized = square.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        except (OSError, ValueError) as exc:  # PIL can still fail here on odd modes/data
            raise BadImage(f"cannot convert the decoded image ({img.mode}): {exc}") from None
    hwc = process(np.asarray(resized, dtype=np.uint8))
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)), fmt


def load_fundus(path: Path, size: int, preprocessing: str = "none") -> np.ndarray:
    """Decode, convert to RGB, crop to the fundus, resize: uint8 [3, size, size].

    Raises BadImage(reason) for a missing, empty, truncated, corrupt, non-image or too-large
    file, and RetinaError for an unknown `preprocessing` name.
    """
    return decode_fundus(path, size, preprocessing)[0]
