"""A throwaway redis-server on a free loopback port (no persistence) for the benchmark, always stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

from tools import procs
from tools.bench.server import HOST, free_port


class RedisServer:
    """`with RedisServer(workdir) as redis:` started and answering PING on entry; stopped on exit (resumed
    first if `pause()` left it stopped)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.record: procs.ProcessRecord | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def __enter__(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: `apt-get install -y redis-server`")
        argv = [
            exe,
            *("--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir), "--logfile", ""),
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record = procs.spawn("redis", argv, env=os.environ, log=self.workdir / "redis.log")
        try:
            self._wait_ready(10.0)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{procs.tail(self.workdir / 'redis.log')}")

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis, not a dead one)."""
        assert self.record is not None
        os.kill(self.record.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.record is not None and procs.is_running(self.record):
            os.kill(self.record.pid, signal.SIGCONT)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.record is not None:
            self.resume()
            procs.stop(self.record, timeout=5)
            self.record = None
