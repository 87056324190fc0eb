"""``fdpose bench serve``: ``fdpose serve`` under concurrent ``/predict`` clients, on loopback only.

The server runs as its own process (``fdpose serve``, a temporary work folder). A loopback file server
in this process stands in for Label Studio's ``/data/upload/``: it serves one generated image and
checks the key the backend sends, so every request downloads, decodes, predicts and writes regions as
with a real Label Studio. After ``/setup`` and a warm-up, ``--clients`` threads post one-task
``/predict`` requests until ``--requests`` are done or ``--seconds`` have passed (the warm-up: 10 per
client). Printed: requests/s, latency p50/p95/p99, errors, and the server's resident memory (its
processes together) after the warm-up and at the end; the run fails when any request failed or
memory grew by more than ``--max-growth-mb``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import numpy as np

from pipeline.bench.timing import Timing

BENCH_KEY = "fdpose-bench-key"  # a throwaway key between two loopback processes of this benchmark
CONFIG = """<View><Image name="img" value="$image"/>
<RectangleLabels name="box" toName="img">{classes}</RectangleLabels>
<KeyPointLabels name="kp" toName="img">{keypoints}</KeyPointLabels></View>"""
WARMUP_REQUESTS = 10  # per client
START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_server(png: bytes) -> ThreadingHTTPServer:
    """A loopback server answering ``GET /data/upload/1/bench.png`` with ``png`` for the bench key."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.headers.get("Authorization") != f"Token {BENCH_KEY}":
                self.send_error(401)
            elif self.path != "/data/upload/1/bench.png":
                self.send_error(404)
            else:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


@dataclass
class ServeBench:
    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    max_growth_mb: float = 0.0
    first_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.errors == 0 and self.rss_mb["after"] - self.rss_mb["before"] <= self.max_growth_mb


def _start_server(model: Path, work: Path, workers: int, imgsz: int | None, images_url: str
                  ) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model), "--port", str(port),
               "--work-dir", str(work), "--workers", str(workers)]
    if imgsz is not None:
        command += ["--imgsz", str(imgsz)]
    # Each worker process downloads with the environment's URL and key (only one sees the /setup).
    env = {**os.environ, "LABEL_STUDIO_URL": images_url, "LABEL_STUDIO_API_KEY": BENCH_KEY}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"fdpose serve exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise click.ClickException(f"fdpose serve did not answer /health within {START_TIMEOUT_S:.0f} s")


def _client_loop(url: str, body: bytes, stop_at: float, budget: list[int], lock: threading.Lock,
                 latencies: list[float], errors: list[str]) -> None:
    import httpx

    with httpx.Client(timeout=60, trust_env=False) as client:
        while time.monotonic() < stop_at:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            started = time.perf_counter()
            try:
                response = client.post(url + "/predict", content=body,
                                       headers={"Content-Type": "application/json"})
                ok = response.status_code == 200 and len(response.json()["results"]) == 1
                reason = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as error:
                ok, reason = False, f"{type(error).__name__}: {error}"
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(reason)


def _run_clients(url: str, body: bytes, clients: int, requests: int, seconds: float
                 ) -> tuple[list[float], list[str]]:
    """``clients`` threads sharing ``requests`` requests within ``seconds``: latencies and errors."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    arguments = (url, body, time.monotonic() + seconds, [requests], lock, latencies, errors)
    threads = [threading.Thread(target=_client_loop, args=arguments) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def run_bench(model: Path, clients: int, requests: int, seconds: float, size: int, workers: int,
              max_growth_mb: float, imgsz: int | None = None) -> ServeBench:
    import cv2
    import httpx

    from pipeline.model_io import load_runner

    skeleton = load_runner(model).meta.skeleton
    image = np.full((size, size * 3 // 4, 3), 40, np.uint8)
    cv2.rectangle(image, (size // 8, size // 6), (size // 2, size // 2), (200, 180, 60), -1)
    png = cv2.imencode(".png", image)[1].tobytes()
    config = CONFIG.format(classes="".join(f'<Label value="{c}"/>' for c in skeleton.class_names),
                           keypoints="".join(f'<Label value="{k}" model_index="{i}"/>'
                                             for i, k in enumerate(skeleton.keypoint_names)))
    images = image_server(png)
    host = f"http://127.0.0.1:{images.server_address[1]}"
    bench = ServeBench(clients=clients, max_growth_mb=max_growth_mb)
    with tempfile.TemporaryDirectory(prefix="fdpose-bench-serve-") as tmp:
        process, url = _start_server(model, Path(tmp) / "work", workers, imgsz, host)
        try:
            setup = httpx.post(url + "/setup", json={"project": "1.0", "schema": config, "hostname": host,
                                                     "access_token": BENCH_KEY}, timeout=30, trust_env=False)
            if setup.status_code != 200:
                raise click.ClickException(f"/setup failed: HTTP {setup.status_code} {setup.text[:300]}")
            body = json.dumps({"tasks": [{"id": 1, "data": {"image": "/data/upload/1/bench.png"}}],
                               "project": "1.0", "label_config": config, "params": {}}).encode()
            # The warm-up runs as many clients as the run, so the server's thread pool and allocator
            # have grown to their working size before memory is first measured.
            _run_clients(url, body, clients, WARMUP_REQUESTS * clients, seconds)
            bench.rss_mb["before"] = round(_rss_mb(process.pid), 1)
            started = time.monotonic()
            latencies, errors = _run_clients(url, body, clients, requests, seconds)
            bench.seconds = round(time.monotonic() - started, 3)
            bench.rss_mb["after"] = round(_rss_mb(process.pid), 1)
        finally:
            process.terminate()
            process.wait(timeout=30)
            images.shutdown()
    bench.requests, bench.errors = len(latencies), len(errors)
    bench.first_error = errors[0] if errors else None
    bench.requests_per_s = round(bench.requests / bench.seconds, 2) if bench.seconds else 0.0
    if latencies:
        timing = Timing(tuple(seconds * 1000 for seconds in latencies))
        bench.latency_ms = {f"p{q}": round(timing.percentile(q), 2) for q in (50, 95, 99)}
    return bench


@click.command("serve")
@click.option("--model", required=True, type=click.Path(exists=True, path_type=Path),
              help="Package (or checkpoint) for fdpose serve.")
@click.option("--clients", default=8, show_default=True, help="Concurrent clients.")
@click.option("--requests", "requests_", default=1000, show_default=True, help="Requests in all.")
@click.option("--seconds", default=300.0, show_default=True, help="Time bound of the run.")
@click.option("--image-size", default=640, show_default=True, help="Width of the generated image (4:3).")
@click.option("--workers", default=1, show_default=True, help="fdpose serve --workers.")
@click.option("--imgsz", type=int, default=None, help="fdpose serve --imgsz (default: the model's).")
@click.option("--max-growth-mb", default=64.0, show_default=True,
              help="Fail when the server's memory grows more than this during the run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures here.")
def command(model: Path, clients: int, requests_: int, seconds: float, image_size: int, workers: int,
            imgsz: int | None, max_growth_mb: float, json_path: Path | None) -> None:
    """fdpose serve under N concurrent /predict clients: requests/s, latency, memory."""
    bench = run_bench(model, clients, requests_, seconds, image_size, workers, max_growth_mb, imgsz)
    latency = bench.latency_ms
    click.echo(f"fdpose serve ({workers} worker(s)), {clients} clients, {image_size}x{image_size * 3 // 4} "
               f"PNG: {bench.requests} requests in {bench.seconds:.1f} s = {bench.requests_per_s:.1f} "
               f"requests/s, {bench.errors} errors")
    if latency:
        click.echo("latency ms: " + "  ".join(f"{name} {value:.1f}" for name, value in latency.items()))
    growth = bench.rss_mb["after"] - bench.rss_mb["before"]
    click.echo(f"server RSS MB: {bench.rss_mb['before']:.1f} after warm-up -> {bench.rss_mb['after']:.1f} at "
               f"the end ({growth:+.1f}; bound {max_growth_mb:.0f})")
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(bench), indent=1) + "\n", encoding="utf-8")
    if not bench.passed:
        raise click.ClickException(f"{bench.errors} failed requests (first: {bench.first_error}) or memory "
                                   f"growth {growth:.1f} MB over the bound {max_growth_mb:.0f} MB")
