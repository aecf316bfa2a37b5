"""Start and stop real `propensity serve` processes for tests (127.0.0.1, free ports, cleaned up by PID)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

PROPENSITY = str(Path(sys.executable).with_name("propensity"))
# A worker writes its request-path metric updates at least every PROPENSITY_METRICS_FLUSH_SECONDS (0.25 s):
# wait this long after the last request before reading counts that must be exact.
METRICS_SETTLE_SECONDS = 0.6


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return {int(p) for p in out.stdout.split()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(
    artifacts: Path,
    log_dir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Server:
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    full_env = {
        **os.environ,
        "PROPENSITY_ARTIFACTS_DIR": str(artifacts),
        "PROPENSITY_HOST": "127.0.0.1",
        **(env or {}),
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as fh:
        process = subprocess.Popen(
            [PROPENSITY, "serve", "--port", str(port), "--workers", str(workers)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # every worker must be ready: require a run of consecutive ready answers
            ready = ready + 1 if httpx.get(server.url + "/health/ready", timeout=2).status_code == 200 else 0
        except httpx.HTTPError:
            ready = 0
        if ready >= 4 * workers:
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server on port {port} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
