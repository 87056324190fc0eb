"""Image files: true (EXIF-oriented) size, and placing files without re-encoding them.

Checks read the image header only (format, size, EXIF orientation): a file that is missing, empty
or not an image is caught; a file whose header is intact but whose pixel data is truncated is not
(that would need a full decode of every image).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import FdposeError

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    """An image's stored size and EXIF orientation (1 = as stored)."""

    stored_width: int
    stored_height: int
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` as displayed: orientations 5-8 turn the image by 90 or 270 degrees."""
        if self.orientation in (5, 6, 7, 8):
            return self.stored_height, self.stored_width
        return self.stored_width, self.stored_height


def image_info(path: str | Path) -> ImageInfo:
    """Stored size and EXIF orientation from the header; a missing or unreadable file is an
    :class:`FdposeError` naming it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
            except Exception:  # a malformed EXIF block is treated as no rotation, as viewers do
                orientation = 1
    except FileNotFoundError:
        raise FdposeError("image file not found", path=path) from None
    except IsADirectoryError:
        raise FdposeError("is a directory, not an image", path=path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise FdposeError(f"corrupt or unreadable image ({error})", path=path) from None
    if not 1 <= orientation <= 8:
        orientation = 1
    return ImageInfo(width, height, orientation)


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag (1..8) of an image, 1 when absent."""
    return image_info(path).orientation


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed, i.e. after its EXIF orientation, reading the
    header only. A missing or unreadable file is an :class:`FdposeError` naming it."""
    return image_info(path).size


def orient_points(xy: np.ndarray, orientation: int, stored_width: float, stored_height: float) -> np.ndarray:
    """Map ``(..., 2)`` pixel coordinates on the stored image to the displayed (EXIF-oriented) image.

    The same transforms as PIL's ``ImageOps.exif_transpose``: 2 mirror, 3 rotate 180, 4 flip,
    5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
    """
    x, y = xy[..., 0], xy[..., 1]
    w, h = stored_width, stored_height
    mapped = {
        1: (x, y), 2: (w - x, y), 3: (w - x, h - y), 4: (x, h - y),
        5: (y, x), 6: (h - y, x), 7: (h - y, w - x), 8: (y, w - x),
    }[orientation]
    return np.stack(mapped, axis=-1)


def place_file(source: str | Path, target: str | Path) -> None:
    """Hard-link ``source`` to ``target`` where the filesystem allows it, else copy it byte for byte."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
