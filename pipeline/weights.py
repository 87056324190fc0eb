"""Where a ``--pretrained`` checkpoint comes from: a local file, an official ultralytics pose weight
by name, or an http(s) URL.

* A path that exists is used as it is.
* An official ultralytics pose weight name (``yolov8n-pose.pt``, ``yolo11s-pose.pt``, ...; ultralytics'
  own list) that is not a local file is fetched by ultralytics' own downloader into the cache folder
  (it publishes the file only once complete). Offline, that is one error line saying what to do.
* ``http(s)://.../x.pt`` is downloaded here with a per-read timeout (a stalling server fails), an
  overall deadline and a size limit, optionally checked against ``#sha256=<hex>`` at the end of the
  URL, into the cache folder under a name derived from the URL: written to a temporary sibling and
  renamed only when complete and checked, so the cache never holds a partial or wrong file. A cached
  file is reused (and checked again when the URL names a checksum).

The cache folder is ``$FDPOSE_WEIGHTS_DIR``, else ``~/.cache/fdpose/weights``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import FdposeError
from pipeline.io import sha256_file

TIMEOUT_S = 30.0  # per connect and per read: a server that sends nothing for this long has stalled
DEADLINE_S = 1800.0  # the whole download
MAX_BYTES = 1 << 30  # 1 GiB: larger than any pose checkpoint; more is a wrong URL
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def cache_dir() -> Path:
    """The folder downloaded weights are kept in."""
    return Path(os.environ.get("FDPOSE_WEIGHTS_DIR") or Path.home() / ".cache" / "fdpose" / "weights")


def is_url(spec: str) -> bool:
    return spec.lower().startswith(("http://", "https://"))


def official_pose_weights() -> set[str]:
    """ultralytics' own names of its released pose checkpoints."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return {name for name in GITHUB_ASSETS_NAMES if "-pose" in name and name.endswith(".pt")}


def resolve_weights(spec: str | Path, folder: Path | None = None, *, timeout: float = TIMEOUT_S,
                    max_bytes: int = MAX_BYTES, deadline: float = DEADLINE_S) -> Path:
    """The local path of the checkpoint ``spec`` names (a file, an official pose weight name or a
    URL), downloading it into ``folder`` (default :func:`cache_dir`) when needed."""
    text = str(spec)
    folder = folder or cache_dir()
    if is_url(text):
        return download(text, folder, timeout=timeout, max_bytes=max_bytes, deadline=deadline)
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    if path.name == text and text in official_pose_weights():
        return fetch_official(text, folder)
    raise FdposeError("pretrained checkpoint not found (a file, an official pose weight name such as "
                      "yolov8n-pose.pt, or an http(s) URL)", path=text)


def fetch_official(name: str, folder: Path) -> Path:
    """An official ultralytics pose checkpoint, from the cache or by ultralytics' downloader."""
    target = folder / name
    if target.is_file():
        return target.resolve()
    from ultralytics.utils import is_online
    from ultralytics.utils.downloads import attempt_download_asset

    advice = (f"download it on a connected machine (https://github.com/ultralytics/assets/releases) and pass "
              f"its path to --pretrained, or copy it to {target}")
    if not is_online():
        raise FdposeError(f"cannot fetch {name}: this machine is offline; {advice}", item="--pretrained")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(target)
    except Exception as error:  # requests, curl and OS errors alike: one line, with what to do
        raise FdposeError(f"cannot fetch {name} ({type(error).__name__}: {error}); {advice}",
                          item="--pretrained") from None
    if not target.is_file():
        raise FdposeError(f"cannot fetch {name}: the download left no file; {advice}", item="--pretrained")
    return target.resolve()


def _split_checksum(url: str) -> tuple[str, str | None]:
    base, _, fragment = url.partition("#")
    if not fragment:
        return base, None
    if not fragment.startswith("sha256=") or not _SHA256.match(fragment[7:]):
        raise FdposeError("the URL fragment must be #sha256=<64 hex digits>", item=url)
    return base, fragment[7:].lower()


def cached_name(url: str) -> str:
    """The cache file of a URL (without its checksum fragment): its last path part, prefixed by a hash
    of the whole URL so that two URLs never share a file."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]) or "weights.pt"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def download(url: str, folder: Path, *, timeout: float = TIMEOUT_S, max_bytes: int = MAX_BYTES,
             deadline: float = DEADLINE_S) -> Path:
    """Download ``url`` (optionally ``#sha256=<hex>``) into ``folder``: the cached file when present."""
    base, checksum = _split_checksum(url)
    target = folder / cached_name(base)
    if target.is_file() and (checksum is None or sha256_file(target) == checksum):
        return target.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        digest = _fetch(base, partial, timeout, max_bytes, deadline)
        if checksum is not None and digest != checksum:
            raise FdposeError(f"sha256 mismatch: the file has {digest}, the URL says {checksum}", item=url)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.resolve()


def _fetch(url: str, out: Path, timeout: float, max_bytes: int, deadline: float) -> str:
    """Stream ``url`` into ``out``; returns the sha256 of what was written."""
    start = time.monotonic()
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "fdpose"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise FdposeError(f"the server announces {int(length):,} bytes, over the limit of "
                                  f"{max_bytes:,} bytes", item=url)
            written = 0
            with open(out, "wb") as handle:
                while block := response.read(1 << 16):
                    written += len(block)
                    if written > max_bytes:
                        raise FdposeError(f"download exceeds the limit of {max_bytes:,} bytes", item=url)
                    if time.monotonic() - start > deadline:
                        raise FdposeError(f"download took longer than {deadline:g} s", item=url)
                    digest.update(block)
                    handle.write(block)
                handle.flush()
                os.fsync(handle.fileno())
    except urllib.error.HTTPError as error:
        raise FdposeError(f"download failed: HTTP {error.code} {error.reason}", item=url) from None
    except (TimeoutError, urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
            raise FdposeError(f"download stalled: no data for {timeout:g} s", item=url) from None
        raise FdposeError(f"download failed: {reason}", item=url) from None
    return digest.hexdigest()
