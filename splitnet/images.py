"""Camera images as the model takes them: any file a camera or phone writes, decoded and
resized in one step.

    JPEG, PNG, ... (file or bytes) ─► header read first: refused above MAX_IMAGE_PIXELS
        ─► JPEG decoded straight to the smallest scale that covers the model's size
           (Pillow's draft mode) ─► RGB ─► resized to size × size ─► uint8 (size, size, 3)

The device decodes every frame it is given this way, the training data is decoded this
way, and a corrupt or oversized file raises :class:`ImageDecodeError` naming it.
"""

from __future__ import annotations

import os

import numpy as np


class ImageDecodeError(ValueError):
    """An image file could not be decoded; the message names the file."""


MAX_IMAGE_PIXELS = 64_000_000  # the largest image a device decodes: a 61 MP full-frame still


def decode_image(source: str | os.PathLike[str] | bytes, size: int | None = 224,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """One image file (or its bytes) as uint8 (size, size, 3) RGB; greyscale becomes RGB.

    The header is read first: an image of more than ``max_pixels`` is refused with
    ImageDecodeError before any pixel is decoded, and a JPEG is decoded straight to the
    smallest scale (1/2, 1/4 or 1/8) that still covers ``size`` (Pillow's draft mode), so
    a 24 MP camera still costs a 3 MP decode. Pillow's own decompression-bomb limit, a
    process-wide setting, is neither changed nor relied on."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            # ours is the size check below; Pillow's warning for large images is not news
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"cannot decode image {name}: it is {width}x{height} "
                    f"({width * height / 1e6:.1f} MP), more than the {max_pixels / 1e6:.0f} MP "
                    "this device decodes; scale it down first")
            img.draft("RGB", (size, size) if size else img.size)
            rgb = img.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot decode image {name}: {error}") from None


def resize_image(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame (a camera's) as (size, size, 3), resized the way
    ``decode_image`` resizes files."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


