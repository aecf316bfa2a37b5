"""One gunicorn serving tools.bench.bench_app with the production config, on a free loopback port."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import orjson

from tools.paths import REPO

HOST = "127.0.0.1"
APP = "tools.bench.bench_app:app"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_pids(parent: int) -> list[int]:
    """Direct children of `parent` (the gunicorn workers of a master), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of the established TCP connections whose local port is `port` (IPv4 loopback)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def connections_per_worker(port: int, pids: list[int]) -> list[int]:
    """How many established client connections each worker holds right now (from /proc)."""
    inodes = _established_inodes(port)
    counts = []
    for pid in pids:
        n = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    link = os.readlink(fd)
                except OSError:
                    continue
                n += link.startswith("socket:[") and link[8:-1] in inodes
        except OSError:
            pass
        counts.append(n)
    return counts


class BenchServer:
    """`python -m gunicorn -c python:service.api.gunicorn_conf tools.bench.bench_app:app`, env-configured.

    Use as a context manager: started and ready (every worker answered /bench/worker with its model
    loaded) on entry, stopped (SIGTERM to the master, then SIGKILL after a grace period) on exit.
    """

    def __init__(self, env: Mapping[str, str], *, workers: int, log_path: Path, root: Path = REPO) -> None:
        self.port = free_port()
        self.root = root  # the checkout whose `service` and `tools.bench` are served
        self.workers = workers
        self.env = {
            **os.environ,
            **env,
            "PROPENSITY_HOST": HOST,
            "PROPENSITY_PORT": str(self.port),
            "PROPENSITY_WORKERS": str(workers),
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the gunicorn config makes a fresh one
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> BenchServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "gunicorn", "-c", "python:service.api.gunicorn_conf", APP]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def worker_pids(self) -> list[int]:
        return child_pids(self.proc.pid) if self.proc else []

    def worker_cpu(self) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in self.worker_pids()}

    def connections(self) -> list[int]:
        return connections_per_worker(self.port, self.worker_pids())

    def _ask_worker(self) -> tuple[int, bool] | None:
        """GET /bench/worker on a fresh connection (so successive asks can land on different workers)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            conn.request("GET", "/bench/worker")
            reply = conn.getresponse()
            data = orjson.loads(reply.read())
            return int(data["pid"]), bool(data["ready"])
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
            return None
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every one of the `workers` workers has answered with its model loaded."""
        deadline = time.monotonic() + timeout
        ready: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early; see {self.log_path}")
            answer = self._ask_worker()
            if answer and answer[1]:
                ready.add(answer[0])
            pids = set(self.worker_pids())
            ready &= pids
            if len(pids) == self.workers and ready == pids:
                return
            time.sleep(0.02 if answer else 0.2)
        raise RuntimeError(f"not every worker became ready in {timeout:.0f}s; see {self.log_path}")

    def stop(self, grace: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
