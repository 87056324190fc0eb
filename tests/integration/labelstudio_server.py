"""A real Label Studio server on loopback, for the integration tests.

Label Studio lives in its own virtual environment (``.venv-ls``, made by ``make ls-venv``; its pins
clash with ours). :func:`start_server` runs ``label-studio start`` with its data in a temporary folder
(SQLite) and local files served from ``<data>/local-files``, waits for ``/health``, signs in and
creates a personal access token (new organisations refuse legacy tokens), and
:meth:`LabelStudioServer.stop` ends the whole process group, politely then by force, within a
bounded time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
LS_VENV = Path(os.environ.get("FDPOSE_LS_VENV", REPO / ".venv-ls"))
# A data folder whose database is already migrated (`make ls-venv` makes it): a copy starts in
# seconds, where a first start spends most of its time (25 s idle, 100 s on a busy box) migrating.
DB_TEMPLATE = LS_VENV / "db-template"
USERNAME = "fdpose-tests@example.com"
PASSWORD = "fdpose-tests-Passw0rd"
START_TIMEOUT_S = 240.0  # a first start runs the database migrations (about 25 s here, more on a busy box)
STOP_TIMEOUT_S = 15.0


def executable() -> Path | None:
    """The ``label-studio`` program of the Label Studio venv, if it is installed."""
    program = LS_VENV / "bin" / "label-studio"
    return program if program.is_file() and os.access(program, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabelStudioServer:
    url: str
    api_key: str  # a personal access token; lives in memory only
    process: subprocess.Popen
    log_path: Path
    start_seconds: float
    local_files_root: Path  # served as /data/local-files/?d=<path relative to it>

    def stop(self) -> None:
        """End the server and every child it started (its process group), within a bounded time."""
        if self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _personal_access_token(url: str, email: str = USERNAME, password: str = PASSWORD) -> str:
    """Sign in through the web form (CSRF cookie first) and create a personal access token."""
    with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as web:  # loopback: no proxy
        web.get("/user/login/").raise_for_status()
        csrf = web.cookies.get("csrftoken")
        response = web.post("/user/login/", data={"email": email, "password": password,
                                                  "csrfmiddlewaretoken": csrf},
                            headers={"Referer": f"{url}/user/login/", "X-CSRFToken": csrf})
        if response.status_code != 302:
            raise RuntimeError(f"Label Studio sign-in failed (HTTP {response.status_code})")
        response = web.post("/api/token/", headers={"X-CSRFToken": web.cookies.get("csrftoken"),
                                                    "Referer": f"{url}/"})
        response.raise_for_status()
        return response.json()["token"]


def second_annotator(url: str, headers: dict[str, str], email: str, password: str) -> str:
    """Sign up another user of the server's organisation through its invite link (``headers``: an
    authenticated API client's, e.g. the SDK's), as a person would, and return their personal access
    token, so that annotations can be made by a second annotator."""
    invite = httpx.get(f"{url}/api/invite", headers=headers, timeout=30.0, trust_env=False)
    invite.raise_for_status()
    signup = invite.json()["invite_url"]
    with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as web:
        web.get(signup).raise_for_status()
        csrf = web.cookies.get("csrftoken")
        response = web.post(signup, data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                            headers={"Referer": f"{url}{signup}", "X-CSRFToken": csrf})
        if response.status_code != 302:
            raise RuntimeError(f"Label Studio sign-up failed (HTTP {response.status_code})")
    return _personal_access_token(url, email, password)


def start_server(data_dir: Path) -> LabelStudioServer:
    """Start Label Studio with its data under ``data_dir``; return once it answers and has a key."""
    program = executable()
    if program is None:
        raise RuntimeError(f"Label Studio is not installed in {LS_VENV} (run `make ls-venv`)")
    if (DB_TEMPLATE / "label_studio.sqlite3").is_file():
        shutil.copytree(DB_TEMPLATE, data_dir, dirs_exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LABEL_STUDIO", "DJANGO"))}
    local_files_root = data_dir / "local-files"
    local_files_root.mkdir(exist_ok=True)
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(local_files_root),
        "HOME": str(data_dir),  # nothing of the tests lands in the real home folder
        "PATH": f"{program.parent}{os.pathsep}{env.get('PATH', '')}",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # The serve tests connect an ML backend (and its webhook) on loopback.
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    })
    log_path = data_dir / "server.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(program), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
             "--username", USERNAME, "--password", PASSWORD],
            env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
    server = LabelStudioServer(url, "", process, log_path, 0.0, local_files_root)
    try:
        deadline = started + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {process.returncode}:\n{server.log_tail()}")
            try:
                if httpx.get(f"{url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Label Studio not ready after {START_TIMEOUT_S:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.5)
        server.start_seconds = time.monotonic() - started
        server.api_key = _personal_access_token(url)
    except BaseException:
        server.stop()
        raise
    return server
