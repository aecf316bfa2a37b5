"""Start and stop real `propensity serve` processes for tests (127.0.0.1, free ports, cleaned up by PID).

`with start_server(...) as server:` stops the server however the block ends; `start_server` itself stops
what it started when the server never becomes ready. Each server runs in its own session, so a master that
will not stop is killed together with its workers (its process group), and nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from tests.conftest import free_port

PROPENSITY = str(Path(sys.executable).with_name("propensity"))
# A worker writes its request-path metric updates at least every PROPENSITY_METRICS_FLUSH_SECONDS (0.25 s):
# wait this long after the last request before reading counts that must be exact.
METRICS_SETTLE_SECONDS = 0.6


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then SIGKILL to the process's group after `timeout` (it leads its own session, so the group
    is the process and its children). Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # not reaped yet, so its pid is still our group's id: the kill cannot reach anyone else
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode


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

    def stop(self) -> int:
        """Stop the master (it stops its workers); the exit code."""
        return stop_process(self.process, timeout=30)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def launch_server(
    artifacts: Path,
    log_dir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Server:
    """A `propensity serve` on `port` (default: a free one), in its own session, its output in `log_dir`;
    not waited for."""
    port = port or free_port()
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
            start_new_session=True,
        )
    return Server(process, port, log)


def start_server(
    artifacts: Path,
    log_dir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    port: int | None = None,
) -> Server:
    """A `propensity serve` whose every worker answers /health/ready; stopped again if it never does."""
    server = launch_server(artifacts, log_dir, workers=workers, env=env, port=port)
    try:
        _wait_ready(server, workers, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: Server, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{tail(server.log)}")
        try:
            # every worker must be ready: require a run of consecutive ready answers
            answer = httpx.get(server.url + "/health/ready", timeout=2)
            ready = ready + 1 if answer.status_code == 200 else 0
        except httpx.HTTPError:
            ready = 0
        if ready >= 4 * workers:
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {server.port} not ready after {timeout}s:\n{tail(server.log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]
