"""Codecs for sending the input image itself (OFFLOAD_INPUT and the full-offload baseline).

    uint8 image (H, W) or (H, W, 3) ──encode_image(codec)──► bytes ──decode_image──► same

``png``       lossless, via Pillow.
``raw-zstd``  lossless: the pixels through zstd behind a 4-byte size header (greyscale only).
``jpegQ``     lossy JPEG at quality Q (95, 90, 75, 50), via Pillow.

Decoding untrusted bytes (the edge decodes what any device sends):

    bytes ─► Pillow reads the header only ─► format, size and mode checked against what
             the model takes (``expected_shape``) ─► only then are the pixels inflated

so an image that declares the wrong size costs a header parse, whatever size it declares;
without an expected shape, no side may exceed ``MAX_SIDE``. Pillow's process-wide
decompression-bomb limit is left alone: a device in the same process decodes camera stills
far larger than any payload (``splitnet.images.decode_image``). Anything malformed
raises :class:`~splitnet.codec.PayloadError`.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import zstandard

from splitnet.codec import PayloadError, decompress_bounded

MAX_SIDE = 1024


def encode_image(image: np.ndarray, codec: str) -> bytes:
    """Encode one uint8 image: greyscale (H, W) or colour (H, W, 3)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    colour = image.ndim == 3 and image.shape[2] == 3
    if image.ndim != 2 and not colour:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if codec == "png":
        return _pillow_encode(image, "PNG", compress_level=9)
    if codec == "raw-zstd":
        if colour:
            raise ValueError("raw-zstd sends greyscale images only; use png for colour")
        header = struct.pack("<HH", *image.shape)
        return header + zstandard.ZstdCompressor(level=19).compress(image.tobytes())
    if codec.startswith("jpeg"):
        return _pillow_encode(image, "JPEG", quality=_jpeg_quality(codec), optimize=True)
    raise ValueError(f"unknown input codec {codec!r}")


def decode_image(data: bytes, codec: str,
                 expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode bytes from :func:`encode_image` back to a uint8 (H, W) or (H, W, 3) image.

    With ``expected_shape`` ((H, W) grey or (H, W, 3) colour), an image that declares
    another size or colour is refused from its header, before any pixel is inflated.
    """
    if codec == "raw-zstd":
        if len(data) < 4:
            raise PayloadError("raw-zstd image is too short")
        height, width = struct.unpack_from("<HH", data)
        _check_declared((height, width), expected_shape)
        pixels = decompress_bounded(data[4:], height * width, magicless=False)
        if len(pixels) != height * width:
            raise PayloadError("raw-zstd image is truncated")
        return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width).copy()
    if codec == "png":
        return _pillow_decode(data, "PNG", expected_shape)
    if codec.startswith("jpeg"):
        _jpeg_quality(codec)
        return _pillow_decode(data, "JPEG", expected_shape)
    raise PayloadError(f"unknown input codec {codec!r}")


def _check_declared(shape: tuple[int, ...], expected: tuple[int, ...] | None) -> None:
    """Refuse a declared (H, W[, 3]) that is out of range or not what the model takes."""
    height, width = shape[:2]
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise PayloadError(f"image of {height}x{width} pixels is out of range")
    if expected is not None and tuple(shape) != tuple(expected):
        raise PayloadError(
            f"image is {'x'.join(map(str, shape))}; this model takes "
            f"{'x'.join(map(str, expected))} (height x width x channels)")


def _jpeg_quality(codec: str) -> int:
    try:
        quality = int(codec[4:])
    except ValueError:
        raise PayloadError(f"unknown input codec {codec!r}; JPEG is 'jpeg<quality>'") from None
    if not 1 <= quality <= 100:
        raise PayloadError(f"JPEG quality {quality} is out of range")
    return quality


def _pillow() -> Any:
    """PIL.Image, imported on first use (the device's import path stays light)."""
    from PIL import Image

    return Image


def _pillow_encode(image: np.ndarray, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    _pillow().fromarray(image, mode="L" if image.ndim == 2 else "RGB").save(
        buffer, format=image_format, **options)
    return buffer.getvalue()


_MODES = {"L": 1, "RGB": 3}  # Pillow mode ─► channels the pixels come out with


def _pillow_decode(data: bytes, expected_format: str,
                   expected_shape: tuple[int, ...] | None) -> np.ndarray:
    """Decode with Pillow, checking format, declared size and mode before inflating."""
    try:
        with _pillow().open(io.BytesIO(data), formats=[expected_format]) as img:  # header
            channels = _MODES.get(img.mode, 3)  # palette, CMYK, ... come out as RGB
            declared = (img.height, img.width) if channels == 1 else (img.height, img.width, 3)
            _check_declared(declared, expected_shape)
            pixels = img if img.mode in _MODES else img.convert("RGB")
            return np.asarray(pixels, dtype=np.uint8).copy()
    except PayloadError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad data
        raise PayloadError(f"{expected_format} image is corrupt: {error}") from error
