"""Codecs for sending the input image itself (OFFLOAD_INPUT and the full-offload baseline).

    uint8 image (H, W) or (H, W, 3) ──encode_image(codec)──► bytes ──decode_image──► same

``png``       lossless. Greyscale is written here with zlib (no extra dependency) and the
              decoder accepts any 8-bit greyscale, non-interlaced PNG; colour goes through
              Pillow.
``raw-zstd``  lossless: the pixels through zstd (greyscale only).
``jpegQ``     lossy JPEG at quality Q (95, 90, 75, 50), via Pillow (``pip install
              'splitnet[jpeg]'``).

Decoding bounds every allocation by the declared image size and raises
:class:`~splitnet.codec.PayloadError` on anything malformed.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import zstandard

from splitnet.codec import PayloadError

MAX_SIDE = 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_image(image: np.ndarray, codec: str) -> bytes:
    """Encode one uint8 image: greyscale (H, W) or colour (H, W, 3)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    colour = image.ndim == 3 and image.shape[2] == 3
    if image.ndim != 2 and not colour:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if codec == "png":
        return _pillow_png_encode(image) if colour else _png_encode(image)
    if codec == "raw-zstd":
        if colour:
            raise ValueError("raw-zstd sends greyscale images only; use png for colour")
        header = struct.pack("<HH", *image.shape)
        return header + zstandard.ZstdCompressor(level=19).compress(image.tobytes())
    if codec.startswith("jpeg"):
        return _jpeg_encode(image, _jpeg_quality(codec))
    raise ValueError(f"unknown input codec {codec!r}")


def decode_image(data: bytes, codec: str) -> np.ndarray:
    """Decode bytes from :func:`encode_image` back to a uint8 (H, W) or (H, W, 3) image."""
    if codec == "png":
        colour_type_offset = len(_PNG_SIGNATURE) + 8 + 9  # IHDR: width, height, depth, type
        if len(data) > colour_type_offset and data[colour_type_offset] == 2:
            return _pillow_decode(data, "PNG")
        return _png_decode(data)
    if codec == "raw-zstd":
        if len(data) < 4:
            raise PayloadError("raw-zstd image is too short")
        height, width = struct.unpack_from("<HH", data)
        _check_side(height, width)
        try:
            pixels = zstandard.ZstdDecompressor().decompress(
                data[4:], max_output_size=height * width, allow_extra_data=False)
        except zstandard.ZstdError as error:
            raise PayloadError(f"raw-zstd image is corrupt: {error}") from error
        if len(pixels) != height * width:
            raise PayloadError("raw-zstd image is truncated")
        return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width).copy()
    if codec.startswith("jpeg"):
        _jpeg_quality(codec)
        return _pillow_decode(data, "JPEG")
    raise PayloadError(f"unknown input codec {codec!r}")


def _check_side(height: int, width: int) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise PayloadError(f"image of {height}x{width} pixels is out of range")


# ------------------------------------------------------------------------ PNG
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_encode(image: np.ndarray) -> bytes:
    height, width = image.shape
    rows = image.astype(np.int16)
    raw = bytearray()
    previous = np.zeros(width, dtype=np.int16)
    for row in rows:
        left = np.concatenate(([0], row[:-1]))
        up_left = np.concatenate(([0], previous[:-1]))
        candidates = [
            row,  # 0: none
            row - left,  # 1: sub
            row - previous,  # 2: up
            row - (left + previous) // 2,  # 3: average
            row - _paeth(left, previous, up_left),  # 4: paeth
        ]
        # libpng's heuristic: the filter whose output has the smallest sum of |signed bytes|
        scores = [int(np.abs(((c % 256) + 128) % 256 - 128).sum()) for c in candidates]
        best = int(np.argmin(scores))
        raw.append(best)
        raw += (candidates[best] % 256).astype(np.uint8).tobytes()
        previous = row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + _png_chunk(b"IEND", b""))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _png_decode(data: bytes) -> np.ndarray:
    if not data.startswith(_PNG_SIGNATURE):
        raise PayloadError("not a PNG: bad signature")
    offset, header, idat = len(_PNG_SIGNATURE), None, bytearray()
    while True:
        if offset + 8 > len(data):
            raise PayloadError("PNG truncated before IEND")
        length, kind = struct.unpack_from(">I4s", data, offset)
        chunk = data[offset + 8: offset + 8 + length]
        if len(chunk) != length or offset + 12 + length > len(data):
            raise PayloadError("PNG truncated inside a chunk")
        (crc,) = struct.unpack_from(">I", data, offset + 8 + length)
        if zlib.crc32(kind + chunk) & 0xFFFFFFFF != crc:
            raise PayloadError(f"PNG chunk {kind!r} fails its CRC")
        offset += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    if header is None:
        raise PayloadError("PNG has no IHDR")
    width, height, depth, color, _, _, interlace = header
    if (depth, color, interlace) != (8, 0, 0):
        raise PayloadError("only 8-bit greyscale non-interlaced PNG is accepted")
    _check_side(height, width)
    expected = height * (width + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(bytes(idat), expected)
    except zlib.error as error:
        raise PayloadError(f"PNG image data is corrupt: {error}") from error
    if len(raw) != expected:
        raise PayloadError("PNG image data is truncated")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    out = np.zeros((height, width), dtype=np.int16)
    previous = np.zeros(width, dtype=np.int16)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int16)
        if kind == 0:
            row = line
        elif kind == 2:
            row = (line + previous) % 256
        elif kind == 1:
            row = np.cumsum(line) % 256
        elif kind in (3, 4):  # these depend on the decoded pixel to the left
            row = np.array(_unfilter_sequential(int(kind), line.tolist(), previous.tolist()),
                           dtype=np.int16)
        else:
            raise PayloadError(f"PNG row {y} has unknown filter type {kind}")
        out[y] = row
        previous = row
    return out.astype(np.uint8)


def _unfilter_sequential(kind: int, line: list[int], previous: list[int]) -> list[int]:
    row: list[int] = []
    for x, value in enumerate(line):
        left = row[x - 1] if x else 0
        if kind == 3:
            predictor = (left + previous[x]) // 2
        else:
            up, up_left = previous[x], previous[x - 1] if x else 0
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
        row.append((value + predictor) % 256)
    return row


# ------------------------------------------------------------------------ JPEG (Pillow)
def _jpeg_quality(codec: str) -> int:
    try:
        quality = int(codec[4:])
    except ValueError:
        raise PayloadError(f"unknown input codec {codec!r}; JPEG is 'jpeg<quality>'") from None
    if not 1 <= quality <= 100:
        raise PayloadError(f"JPEG quality {quality} is out of range")
    return quality


def _pillow():  # type: ignore[no-untyped-def]
    try:
        from PIL import Image
    except ImportError as error:
        raise RuntimeError(
            "JPEG input codecs need Pillow: pip install 'splitnet[jpeg]'") from error
    return Image


def _jpeg_encode(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if image.ndim == 2 else "RGB"
    _pillow().fromarray(image, mode=mode).save(buffer, format="JPEG", quality=quality,
                                               optimize=True)
    return buffer.getvalue()


def _pillow_png_encode(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    _pillow().fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def _pillow_decode(data: bytes, expected_format: str) -> np.ndarray:
    """Decode with Pillow, checking the format and the declared size before inflating."""
    image_module = _pillow()
    try:
        with image_module.open(io.BytesIO(data)) as img:
            if img.format != expected_format:
                raise PayloadError(f"expected a {expected_format}, got {img.format}")
            _check_side(img.height, img.width)
            if img.mode == "L":
                return np.asarray(img, dtype=np.uint8).copy()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except PayloadError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad data
        raise PayloadError(f"{expected_format} image is corrupt: {error}") from error
