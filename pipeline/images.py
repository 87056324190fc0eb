"""Image files: which suffixes are images, safe relative names under an images folder, the true
(EXIF-oriented) size, and the EXIF orientation transform of pixel coordinates.

Checks read the image header only (format, size, EXIF orientation): a file that is missing, empty
or not an image is caught; a file whose header is intact but whose pixel data is truncated is not
(that would need a full decode of every image).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import FdposeError

# ultralytics' image formats (its IMG_FORMATS without the ones PIL cannot open).
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".mpo", ".dng"})
_EXIF_ORIENTATION = 0x0112
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_WINDOWS_DRIVE = re.compile(r"^[a-zA-Z]:")


def safe_relative_name(name: object) -> str | None:
    """``name`` as a relative POSIX path that stays under an images root, or None when it is not a
    string, is empty, holds control characters, is absolute, is a URL, or climbs out with ``..``."""
    if not isinstance(name, str) or not name.strip():
        return None
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") for c in name):  # NUL, newlines...
        return None
    posix = name.replace("\\", "/")
    if _URL.match(posix) or posix.startswith("/") or _WINDOWS_DRIVE.match(posix):
        return None
    parts = [part for part in posix.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


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


def _jpeg_info(head: bytes) -> ImageInfo | None:
    """Size and orientation from a JPEG's markers up to the start of scan, or None when anything is
    unusual (PIL then decides): the common case without PIL's per-marker Python objects."""
    position, size, orientation = 2, None, 1
    end = len(head)
    while position + 4 <= end:
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(head[position + 2:position + 4], "big")
        if length < 2 or position + 2 + length > end:
            return None
        segment = head[position + 4:position + 2 + length]
        if marker == 0xDA:  # start of scan: the header is complete
            return ImageInfo(size[0], size[1], orientation) if size else None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if len(segment) < 5:
                return None
            size = (int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big"))
            if not all(size):
                return None
        elif marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            orientation = _tiff_orientation(segment[6:])
            if orientation is None:
                return None
        position += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    """The orientation tag of an EXIF block's first IFD (1 when absent), None when malformed."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            return None
        if int.from_bytes(tiff[entry:entry + 2], order) == _EXIF_ORIENTATION:
            value = int.from_bytes(tiff[entry + 8:entry + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _png_info(head: bytes) -> ImageInfo | None:
    """Size from a PNG's IHDR when no chunk before the image data could carry EXIF (else None)."""
    if len(head) < 33 or head[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    position = 33
    while position + 8 <= len(head):
        kind = head[position + 4:position + 8]
        if kind == b"IDAT":
            return ImageInfo(width, height, 1) if width and height else None
        if kind == b"eXIf":
            return None
        position += 12 + int.from_bytes(head[position:position + 4], "big")
    return None


_HEADER_BYTES = 65536  # JPEG headers (with EXIF) and PNG chunks before the image data fit in most files


def image_info(path: str | Path) -> ImageInfo:
    """Stored size and EXIF orientation from the header; a missing or unreadable file is an
    :class:`FdposeError` naming it.

    JPEG and PNG headers are parsed directly (many times faster than PIL's per-marker objects); any
    other format, or a header the fast parse finds unusual, is read by PIL.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except FileNotFoundError:
        raise FdposeError("image file not found", path=path) from None
    except IsADirectoryError:
        raise FdposeError("is a directory, not an image", path=path) from None
    except OSError as error:
        raise FdposeError(f"unreadable image ({error.strerror})", path=path) from None
    except ValueError as error:  # a NUL or an unencodable character in the name
        raise FdposeError(f"unusable image file name ({error})", path=path) from None
    fast = None
    if head[:3] == b"\xff\xd8\xff":
        fast = _jpeg_info(head)
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        fast = _png_info(head)
    if fast is not None:
        return fast
    return _pil_info(path)


def pil_open(path: str | Path) -> Image.Image:
    """PIL's own ``Image.open``, even after ultralytics is imported.

    ultralytics replaces ``Image.open`` on import with a wrapper that, on a file PIL cannot identify,
    tries to pip-install ``pi-heif`` and retries; for us such a file is a corrupt image to report, and
    nothing may be installed at run time.
    """
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = Image.open
    if patches is not None and opener is getattr(patches, "image_open", None):
        opener = patches._image_open
    return opener(path)


def _pil_info(path: str | Path) -> ImageInfo:
    try:
        with pil_open(path) as image:
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
