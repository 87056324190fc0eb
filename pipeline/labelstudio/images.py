"""Label Studio image references -> image files, from a local folder or downloaded from the server.

A task's image is a reference such as ``/data/upload/3/1a2b3c4d-cat.jpg`` (an uploaded file, stored
with an 8-character hex prefix), ``/data/local-files/?d=photos/cat.jpg`` (local files storage), a URL
or a plain path. :class:`FolderImages` finds the file under an images folder, in this order:

1. the reference's relative path (``3/1a2b3c4d-cat.jpg``, ``photos/cat.jpg``, the URL's path);
2. the file name (``1a2b3c4d-cat.jpg``) anywhere under the folder;
3. the file name without Label Studio's upload prefix (``cat.jpg``).

Step 2 or 3 matching several files is ambiguous and reported, never guessed; so is a missing file.
A relative path that would leave the folder (``../``, absolute paths) is never followed.

:class:`ServerImages` downloads references that point at the Label Studio server itself
(``/data/upload/...``, ``/data/local-files/...``) through the server's
:class:`~pipeline.labelstudio.client.ImageFetcher` (the key, a timeout, a size limit); it never sends
the key to another host, so images hosted elsewhere are reported, not fetched.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.errors import FdposeError
from pipeline.images import image_size, safe_relative_name
from pipeline.labelstudio.client import FetchError, ImageFetcher

# Label Studio stores uploads as ``<uuid4()[:8]>-<original name>``.
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?P<name>.+)$")


class UnresolvedImage(Exception):
    """An image reference that matched no file, or several: the reason goes into the report."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference."""

    raw: str
    kind: str  # "upload", "local-files", "url" or "path"
    relative: str | None  # a safe relative POSIX path to try first, or None
    name: str  # the file name
    server_path: str | None = None  # path (and query) on the Label Studio server, for downloads
    host: str | None = None  # ``host:port`` of an absolute URL

    @property
    def unprefixed_name(self) -> str | None:
        """The file name without Label Studio's upload prefix, if it has one."""
        match = UPLOAD_PREFIX.match(self.name)
        return match.group("name") if match else None


def parse_image_ref(reference: str) -> ImageRef:
    """Split a task's image reference into the parts the resolvers need."""
    raw = reference.strip()
    parts = urlsplit(raw)
    host = parts.netloc or None
    path = unquote(parts.path)
    if path.startswith("/data/upload/"):
        relative = path[len("/data/upload/"):]
        return ImageRef(raw, "upload", safe_relative_name(relative), posixpath.basename(relative),
                        server_path=parts.path, host=host)
    if path.startswith("/data/local-files"):
        document = (parse_qs(parts.query).get("d") or [""])[0]
        return ImageRef(raw, "local-files", safe_relative_name(document),
                        posixpath.basename(document.replace("\\", "/")),
                        server_path=f"{parts.path}?{parts.query}", host=host)
    if parts.scheme and parts.scheme not in ("file",) and len(parts.scheme) > 1:
        return ImageRef(raw, "url", safe_relative_name(path.lstrip("/")), posixpath.basename(path), host=host)
    plain = path.replace("\\", "/")
    return ImageRef(raw, "path", safe_relative_name(plain), posixpath.basename(plain))


def _describe(matches: list[str]) -> str:
    shown = ", ".join(matches[:3])
    return shown + (f" and {len(matches) - 3} more" if len(matches) > 3 else "")


class FolderImages:
    """Resolve references to files under ``root`` (see the module docstring for the order)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FdposeError("images folder not found", path=self.root)
        self._by_name: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]]:
        # Built once, on first need: one walk of the folder, sorted so lists are deterministic.
        if self._by_name is None:
            by_name: dict[str, list[str]] = {}
            for folder, dirs, files in os.walk(self.root):
                dirs.sort()
                base = Path(folder).relative_to(self.root)
                for file in sorted(files):
                    by_name.setdefault(file, []).append((base / file).as_posix())
            self._by_name = by_name
        return self._by_name

    def _by_file_name(self, name: str, what: str) -> str | None:
        matches = self._index().get(name, [])
        if len(matches) > 1:
            raise UnresolvedImage(f"ambiguous image: {what} {name!r} matches {len(matches)} files "
                                  f"({_describe(matches)})")
        return matches[0] if matches else None

    def resolve(self, ref: ImageRef) -> tuple[Path, str]:
        """``(path, relative name)`` of the file ``ref`` names; :class:`UnresolvedImage` if none or
        several match."""
        if ref.relative and (self.root / ref.relative).is_file():
            return self.root / ref.relative, ref.relative
        if ref.name:
            found = self._by_file_name(ref.name, "file name")
            if found is None and ref.unprefixed_name:
                found = self._by_file_name(ref.unprefixed_name, "name without upload prefix")
            if found is not None:
                return self.root / found, found
        raise UnresolvedImage(f"image not found under {self.root} (reference {ref.raw!r})")


class ServerImages:
    """Download the images a Label Studio server serves (uploads, local files) into ``out_dir``.

    ``fetcher`` is the server's :class:`~pipeline.labelstudio.client.ImageFetcher` (it carries the key).
    Files land at ``out_dir/<file name>`` for uploads (unique thanks to the upload prefix) and at
    ``out_dir/<d path>`` for local files; a file already fetched by an earlier task is reused.
    """

    def __init__(self, fetcher: ImageFetcher, out_dir: Path):
        self.fetcher = fetcher
        self.base_url = fetcher.base_url
        self.host = urlsplit(self.base_url).netloc
        self.out_dir = Path(out_dir)

    def resolve(self, ref: ImageRef) -> tuple[Path, str]:
        if ref.server_path is None or (ref.host is not None and ref.host != self.host):
            raise UnresolvedImage(f"image {ref.raw!r} is not served by {self.base_url}; not downloaded "
                                  "(the API key is only sent to the Label Studio server)")
        relative = ref.name if ref.kind == "upload" else (ref.relative or ref.name)
        if not relative or safe_relative_name(relative) is None:
            raise UnresolvedImage(f"image reference {ref.raw!r} names no file")
        target = self.out_dir / relative
        if not target.is_file():
            self._download(self.base_url + ref.server_path, target, ref)
        return target, relative

    def _download(self, url: str, target: Path, ref: ImageRef) -> None:
        try:
            data = self.fetcher.get(url)
        except FetchError as error:
            raise UnresolvedImage(f"{ref.raw!r}: {error}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            image_size(tmp)
        except FdposeError as error:
            os.unlink(tmp)
            raise UnresolvedImage(f"download of {ref.raw!r} is not a readable image ({error})") from None
        os.replace(tmp, target)
