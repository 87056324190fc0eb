"""The Label Studio server: the one place that makes the SDK client, turns API errors into one line,
downloads a project's export, and fetches files with the key.

The key only ever comes from :data:`API_KEY_ENV` (or, for ``fdpose serve``, from Label Studio's own
``/setup``); it is sent to that server only and never written or printed. :class:`ImageFetcher` is
plain HTTP (no private SDK names): a legacy token goes as ``Token <key>``; a personal access token
(a JWT refresh token) is exchanged at ``/api/token/refresh`` for a short-lived access token, renewed
when the server refuses it. Downloads follow no redirect, stop at ``timeout_s`` (for the whole body,
not only between reads) and at ``max_bytes``, and only ever go to the server's own scheme and host.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import FdposeError

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
URL_ENV = "LABEL_STUDIO_URL"
EXPORT_TIMEOUT_S = 300.0
DOWNLOAD_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 256 * 2**20
JWT_PARTS = 3  # a personal access token is a JWT refresh token (header.payload.signature)


def api_key(url: str) -> str:
    """The key from :data:`API_KEY_ENV`; :class:`FdposeError` naming the variable when it is unset."""
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise FdposeError(f"set {API_KEY_ENV} to a Label Studio API key (access token)", path=url)
    return key


def sdk_client(url: str) -> Any:
    """A label-studio-sdk client for ``url``, with the key from the environment."""
    key = api_key(url)
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url.rstrip("/"), api_key=key)


def api_call(url: str, what: str, call: Callable[..., Any], *args: Any, item: str | None = None,
             detail_chars: int = 200, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` through the SDK, turning HTTP and connection errors into one clear
    line (which never holds the key): ``<what> failed (HTTP <status>: <the server's detail>)``."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return call(*args, **kwargs)
    except ApiError as error:
        detail = error.body if isinstance(error.body, str) else json.dumps(error.body)
        raise FdposeError(f"{what} failed (HTTP {error.status_code}: {detail[:detail_chars]})", path=url,
                          item=item) from None
    except httpx.HTTPError as error:
        raise FdposeError(f"{what} failed ({type(error).__name__}: {error})", path=url, item=item) from None


def project_label_config(client: Any, url: str, project_id: int) -> str:
    """The project's label config XML ("" when it has none)."""
    project = api_call(url, f"reading project {project_id}", client.projects.get, id=project_id)
    return project.label_config or ""


def export_snapshot(client: Any, url: str, project_id: int) -> bytes:
    """The project's JSON export: every task, every annotation (cancelled and ground truth too) and
    full predictions. An export snapshot, because the quick export lists predictions by id only."""
    what = f"exporting project {project_id}"
    exports = client.projects.exports
    snapshot = api_call(
        url, what, exports.create, id=project_id, title="fdpose convert",
        serialization_options={"predictions": {"only_id": False}, "drafts": {"only_id": True}},
        annotation_filter_options={"usual": True, "ground_truth": True, "skipped": True},
        task_filter_options={"only_with_annotations": False})
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while str(snapshot.status) != "completed":
        if str(snapshot.status) == "failed":
            raise FdposeError(f"{what} failed on the server (export {snapshot.id})", path=url)
        if time.monotonic() > deadline:
            raise FdposeError(f"{what}: export {snapshot.id} not ready after {EXPORT_TIMEOUT_S:.0f} s",
                              path=url)
        time.sleep(0.5)
        snapshot = api_call(url, what, exports.get, id=project_id, export_pk=snapshot.id)
    chunks = api_call(url, what, lambda: list(exports.download(id=project_id, export_pk=snapshot.id,
                                                               export_type="JSON")))
    api_call(url, what, exports.delete, id=project_id, export_pk=snapshot.id)
    return b"".join(chunks)


class FetchError(Exception):
    """A file the server did not give: ``status`` 413 when it is over the size limit, else 422 (for a
    server to answer with); the message names the URL and the reason, never the key."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.message = message
        self.status = status


class ImageFetcher:
    """Fetches files from one Label Studio server with one key (see the module docstring).

    ``trust_env`` lets the environment's proxy settings apply (as they do to the SDK's API calls);
    ``fdpose serve`` turns it off so a request never reaches anything but the server itself."""

    def __init__(self, base_url: str, key: str, *, timeout_s: float = DOWNLOAD_TIMEOUT_S,
                 max_bytes: int = MAX_DOWNLOAD_BYTES, trust_env: bool = False):
        import httpx  # a label-studio-sdk dependency; imported here to keep module import cheap

        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._access: str | None = None
        self._httpx = httpx
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                    trust_env=trust_env)

    def close(self) -> None:
        self._client.close()

    def on_server(self, url: str) -> bool:
        """Whether ``url`` is on this server (same scheme, host and port): the only place the key goes."""
        parts, base = urlsplit(url), urlsplit(self.base_url)
        return (parts.scheme, parts.netloc) == (base.scheme, base.netloc)

    def _headers(self, renew: bool = False) -> dict[str, str]:
        if len(self.key.split(".")) != JWT_PARTS:
            return {"Authorization": f"Token {self.key}"}
        if self._access is None or renew:
            response = self._client.post(f"{self.base_url}/api/token/refresh", json={"refresh": self.key})
            try:
                self._access = response.json()["access"] if response.status_code == 200 else None
            except (ValueError, KeyError, TypeError):
                self._access = None
            if not self._access:
                raise FetchError(f"Label Studio {self.base_url} refused the key "
                                 f"(HTTP {response.status_code} from /api/token/refresh)")
        return {"Authorization": f"Bearer {self._access}"}

    def get(self, url: str) -> bytes:
        """The body of ``url`` (on this server); :class:`FetchError` for anything else."""
        if not self.on_server(url):
            raise FetchError(f"{url} is not on the Label Studio server {self.base_url}; the key goes "
                             "nowhere else")
        for renew in (False, True):
            try:
                with self._client.stream("GET", url, headers=self._headers(renew)) as response:
                    if response.status_code == 401 and not renew:
                        continue  # an access token that expired: renew it once
                    if response.status_code != 200:
                        raise FetchError(f"image download failed (HTTP {response.status_code} from {url})")
                    return self._read(response, url)
            except self._httpx.HTTPError as error:
                raise FetchError(f"image download failed ({type(error).__name__}: {error}) "
                                 f"from {url}") from None
        raise FetchError(f"Label Studio refused the key for {url} (HTTP 401)")

    def post_files(self, path: str, files: list[tuple[str, bytes]], what: str) -> Any:
        """POST ``files`` (name, bytes) as a multipart form to ``path`` on this server (Label Studio's file
        import, which the SDK's typed API lacks); the JSON answer, or one error line naming ``what``."""
        url = f"{self.base_url}{path}"
        form = [(f"file{i}", (name, data)) for i, (name, data) in enumerate(files)]  # one field per file
        for renew in (False, True):
            try:
                response = self._client.post(url, files=form, headers=self._headers(renew))
            except self._httpx.HTTPError as error:
                raise FdposeError(f"{what} failed ({type(error).__name__}: {error})",
                                  path=self.base_url) from None
            except FetchError as error:
                raise FdposeError(f"{what} failed ({error.message})", path=self.base_url) from None
            if response.status_code == 401 and not renew:
                continue
            if response.status_code not in (200, 201):
                raise FdposeError(f"{what} failed (HTTP {response.status_code}: {response.text[:200]})",
                                  path=self.base_url)
            return response.json()
        raise FdposeError(f"{what} failed: Label Studio refused the key (HTTP 401)", path=self.base_url)

    def _read(self, response: Any, url: str) -> bytes:
        """The body, within ``max_bytes`` and ``timeout_s`` in all (not only between two reads)."""
        deadline = time.monotonic() + self.timeout_s
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > self.max_bytes:
                raise FetchError(f"image larger than {self.max_bytes} bytes ({url})", 413)
            if time.monotonic() > deadline:
                raise FetchError(f"image download took over {self.timeout_s:.0f} s ({url})")
        return bytes(data)
