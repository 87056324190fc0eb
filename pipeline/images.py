"""Image files: true (EXIF-oriented) size, and placing files without re-encoding them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.errors import FdposeError

# EXIF orientations 5-8 rotate by 90 or 270 degrees: the displayed image has width and height swapped.
_EXIF_ORIENTATION = 0x0112


def exif_orientation(path: str | Path) -> int:
    with Image.open(path) as image:
        try:
            return int(image.getexif().get(_EXIF_ORIENTATION, 1))
        except Exception:  # a malformed EXIF block is treated as no rotation, as viewers do
            return 1


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed, i.e. after its EXIF orientation, reading the
    header only. A missing or unreadable file is an :class:`FdposeError` naming it."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
            except Exception:
                orientation = 1
            image.verify()
    except FileNotFoundError:
        raise FdposeError("image file not found", path=path) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise FdposeError(f"corrupt or unreadable image ({error})", path=path) from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


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
