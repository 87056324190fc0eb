"""Task images for ``/predict``: downloaded from the Label Studio server the backend is set up for,
and nowhere else.

A task's image reference is resolved against that server's URL: a path (``/data/upload/...``,
``/data/local-files/?d=...``) or an absolute URL on the same scheme, host and port. Anything else (another
host, ``file:``, a bare file path) is refused: a request never makes the backend read a local file or
send the key elsewhere. Downloads carry the key, go straight to the server (no proxy from the
environment), follow no redirect, stop at ``timeout_s`` and at ``max_bytes``, and must decode as an
image.
"""

from __future__ import annotations

import time
from urllib.parse import urljoin, urlsplit

import numpy as np

from pipeline.serve.protocol import RequestError

JWT_PARTS = 3  # a personal access token is a JWT refresh token (header.payload.signature)


def image_url(reference: object, base_url: str, task_id: object) -> str:
    """The URL of a task's image on ``base_url``; :class:`RequestError` for anything else."""
    if not isinstance(reference, str) or not reference.strip():
        raise RequestError(422, f"task {task_id}: no image reference in its data")
    reference = reference.strip()
    parts, base = urlsplit(reference), urlsplit(base_url)
    if parts.scheme or parts.netloc:
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise RequestError(422, f"task {task_id}: image {reference!r} is not on the Label Studio server "
                                    f"{base_url}; only that server's images are downloaded")
        return reference
    if not reference.startswith("/"):
        raise RequestError(422, f"task {task_id}: image {reference!r} is not a Label Studio URL "
                                "(local paths are never read)")
    return urljoin(base_url.rstrip("/") + "/", reference.lstrip("/"))


class LabelStudioImages:
    """Downloads images from one Label Studio server with one key (a legacy token or a personal access
    token, which is exchanged for a short-lived access token and renewed when refused)."""

    def __init__(self, base_url: str, key: str, timeout_s: float, max_bytes: int):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.key = key
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._access: str | None = None
        self._httpx = httpx
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self._client.close()

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
                raise RequestError(422, f"Label Studio {self.base_url} refused the key "
                                        f"(HTTP {response.status_code} from /api/token/refresh)")
        return {"Authorization": f"Bearer {self._access}"}

    def _get(self, url: str, task_id: object) -> bytes:
        for renew in (False, True):
            try:
                with self._client.stream("GET", url, headers=self._headers(renew)) as response:
                    if response.status_code == 401 and not renew:
                        continue
                    if response.status_code != 200:
                        raise RequestError(422, f"task {task_id}: image download failed "
                                                f"(HTTP {response.status_code} from {url})")
                    return self._read(response, url, task_id)
            except self._httpx.HTTPError as error:
                raise RequestError(422, f"task {task_id}: image download failed ({type(error).__name__}: "
                                        f"{error}) from {url}") from None
        raise RequestError(422, f"task {task_id}: Label Studio refused the key for {url} (HTTP 401)")

    def _read(self, response: object, url: str, task_id: object) -> bytes:
        """The body, within ``max_bytes`` and ``timeout_s`` in all (not only between two reads)."""
        deadline = time.monotonic() + self.timeout_s
        data = bytearray()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > self.max_bytes:
                raise RequestError(413, f"task {task_id}: image larger than {self.max_bytes} bytes ({url})")
            if time.monotonic() > deadline:
                raise RequestError(422, f"task {task_id}: image download took over {self.timeout_s:.0f} s "
                                        f"({url})")
        return bytes(data)

    def fetch(self, reference: object, task_id: object) -> np.ndarray:
        """The task's image as a BGR array."""
        import cv2

        url = image_url(reference, self.base_url, task_id)
        data = self._get(url, task_id)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise RequestError(422, f"task {task_id}: {url} is not a decodable image ({len(data)} bytes)")
        return image
