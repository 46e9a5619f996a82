"""Uploaded query images: a size limit, a pixel limit, and decoding that never raises anything else.

    image = decode_upload(data, max_pixels=40_000_000)   # RGB PIL image, or UploadError(status, message)

Only Pillow is used (no web stack here), so this is testable and reusable on its own.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass
class UploadError(Exception):
    """An upload the page refuses: ``status`` (400 not an image, 413 too large) and a one-line ``message``."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def describe_bytes(n: int) -> str:
    """``n`` bytes as a short human size (``10 MB``, ``512 KB``, ``12 bytes``)."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.3g} MB"
    return f"{n / 1024:.3g} KB" if n >= 1024 else f"{n} bytes"


def check_size(size: int, max_bytes: int) -> None:
    """Raise a 413 :class:`UploadError` when ``size`` bytes exceed ``max_bytes``."""
    if size > max_bytes:
        raise UploadError(413, f"the upload is {describe_bytes(size)}, over the limit of {describe_bytes(max_bytes)}")


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
                  ) -> Image.Image:
    """Decode ``data`` into an RGB image (first frame), or raise :class:`UploadError`.

    The header is read first: an image over ``max_pixels`` (a decompression bomb: a small file that
    decodes to gigabytes) is refused with 413 before any pixel is decoded; Pillow's own
    ``DecompressionBombError`` (over twice ``Image.MAX_IMAGE_PIXELS``) is turned into the same answer. ``verify()`` checks the
    file's structure, then a fresh decode loads the pixels; any decoding failure is a 400.
    """
    check_size(len(data), max_bytes)
    if not data:
        raise UploadError(400, "the upload is empty: choose an image file")
    fmt = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides below
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                fmt = probe.format
                if width * height > max_pixels:
                    raise UploadError(413, f"the image is {width}×{height} = {width * height:,} pixels, over the "
                                           f"limit of {max_pixels:,} (a crop of a person needs far fewer)")
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                rgb = image.convert("RGB")
    except UploadError:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"the image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise UploadError(400, "this file is not an image Pillow can read (expected JPEG, PNG, BMP, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UploadError(400, f"this {fmt or 'image'} file is damaged or truncated ({reason})") from None
    if min(rgb.size) < 1:
        raise UploadError(400, "the image has no pixels")
    return rgb
