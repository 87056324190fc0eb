"""``--pretrained`` from a URL or an official name: downloads from a real HTTP server on loopback (no
mocks), each failure one clear error with nothing left in the cache; offline, an official name is one
line saying what to do."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import FdposeError
from pipeline.weights import cached_name, resolve_weights

BODY = os.urandom(300_000)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/good.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/stall.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.wfile.flush()
            time.sleep(3)  # then nothing: the client's read timeout must end it
        elif self.path == "/unsized.pt":  # no Content-Length: the limit must hold while streaming
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *_args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_with_and_without_checksum(server, tmp_path):
    digest = hashlib.sha256(BODY).hexdigest()
    path = resolve_weights(f"{server}/good.pt#sha256={digest}", tmp_path)
    assert path.read_bytes() == BODY and path.name == cached_name(f"{server}/good.pt")
    assert resolve_weights(f"{server}/good.pt", tmp_path) == path  # cached: the same file
    assert _leftovers(tmp_path) == [path.name]


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    with pytest.raises(FdposeError, match="sha256 mismatch"):
        resolve_weights(f"{server}/good.pt#sha256={'0' * 64}", tmp_path)
    assert _leftovers(tmp_path) == []
    with pytest.raises(FdposeError, match="#sha256=<64 hex digits>"):
        resolve_weights(f"{server}/good.pt#md5=abc", tmp_path)


def test_not_found(server, tmp_path):
    with pytest.raises(FdposeError, match="HTTP 404"):
        resolve_weights(f"{server}/missing.pt", tmp_path)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["good.pt", "unsized.pt"])
def test_too_large(server, tmp_path, name):
    with pytest.raises(FdposeError, match="limit of 100,000 bytes"):
        resolve_weights(f"{server}/{name}", tmp_path, max_bytes=100_000)
    assert _leftovers(tmp_path) == []


def test_stalling_server(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(FdposeError, match="stalled"):
        resolve_weights(f"{server}/stall.pt", tmp_path, timeout=1.0)
    assert time.monotonic() - start < 3
    assert _leftovers(tmp_path) == []


def test_local_file_and_unknown_name(tmp_path):
    local = tmp_path / "mine.pt"
    local.write_bytes(b"x")
    assert resolve_weights(str(local)) == local.resolve()
    with pytest.raises(FdposeError, match="not found"):
        resolve_weights("no-such-model.pt", tmp_path)


def test_official_name_offline_is_one_line(tmp_path):
    env = {**os.environ, "YOLO_OFFLINE": "1", "FDPOSE_WEIGHTS_DIR": str(tmp_path / "cache")}
    (tmp_path / "data.yaml").write_text("path: .\n")
    result = subprocess.run([str(Path(sys.executable).parent / "fdpose"), "compare", "--data", "data.yaml",
                             "--pretrained", "yolov8n-pose.pt"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "yolov8n-pose.pt" in lines[0] and "offline" in lines[0], result.stderr
    assert "pass its path to --pretrained" in lines[0]
