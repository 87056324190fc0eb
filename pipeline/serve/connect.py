"""Connect a running ``fdpose serve`` to a Label Studio project, as the project's Settings -> Model ->
Connect Model does: ``POST /api/ml {url, project, title}`` (Label Studio then calls the backend's
``/health`` and ``/setup``; a label config the model does not fit is refused with the reason). An
already connected backend (same URL) is kept. The key comes from ``LABEL_STUDIO_API_KEY`` only.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.errors import FdposeError
from pipeline.labelstudio.client import api_call, sdk_client

WAIT_S = 120.0  # how long to wait for the backend to answer /health


def wait_for_backend(backend_url: str, wait_s: float = WAIT_S) -> dict:
    """The backend's /health once it answers, or :class:`FdposeError` after ``wait_s``."""
    import httpx

    deadline = time.monotonic() + wait_s
    while True:
        try:
            response = httpx.get(f"{backend_url}/health", timeout=2.0, trust_env=False)
            if response.status_code == 200:
                return response.json()
            if response.status_code == 401:
                raise FdposeError("the backend wants basic auth; connect it in Label Studio's Model settings "
                                  "with the user and password", path=backend_url)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise FdposeError(f"no answer from {backend_url}/health within {wait_s:.0f} s (is fdpose serve "
                              "running there?)", path=backend_url)
        time.sleep(0.5)


def connect(label_studio: str, project: int, backend_url: str, title: str = "fdpose",
            wait_s: float = WAIT_S) -> str:
    """Connect ``backend_url`` to ``project`` of the Label Studio server ``label_studio``; returns a
    one-line summary."""
    client = sdk_client(label_studio)  # before waiting for the backend: a missing key fails at once
    backend_url = backend_url.rstrip("/")
    health = wait_for_backend(backend_url, wait_s)

    def connected() -> tuple[list[Any], Any]:
        known = [b for b in client.ml.list(project=project) if (b.url or "").rstrip("/") == backend_url]
        return known, known[0] if known else client.ml.create(url=backend_url, project=project, title=title)

    # Label Studio's reason for refusing the backend (its /setup answer) can be long: keep it whole.
    known, backend = api_call(label_studio, f"connecting {backend_url}", connected, item=f"project {project}",
                              detail_chars=1000)
    verb = "already connected" if known else "connected"
    return (f"{verb}: ML backend {backend.id} ({backend_url}, model {health.get('model_version')}) serves "
            f"project {project} of {label_studio}")
