"""Start and stop a real PostgreSQL for tests: Debian's `postgresql` package, a fresh cluster in a temporary
dir, on 127.0.0.1 and a free port, stopped by its PID.

    with postgres_server() as pg:
        engine = sqlalchemy.create_engine(pg.url)     # postgresql+psycopg://propensity@127.0.0.1:<port>/propensity
        pg.pid                                        # the postmaster's pid
        pg.kill()                                     # SIGKILL it and every backend (its process group)
        pg.restart()                                  # the same port and data dir again; waits until ready

As root the server runs as the `postgres` user (PostgreSQL refuses root): the temporary dir (in the
system's temp dir, which that user can reach) is made its. initdb runs with --no-sync and the server with
fsync=off: a killed *process* loses nothing committed (the kernel keeps its writes), only a machine crash
would. The block's end stops the server (fast shutdown, then SIGKILL of its group) and removes the dir,
however it ends; so does a server that never becomes ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.servers import tail
from tools import postgres

DEFAULT_SETTINGS = {"fsync": "off"}  # `-c` settings: a test needs no durability against power loss


@dataclass
class PostgresServer:
    workdir: Path  # data/ (the cluster), socket/ (its unix socket), postgres.log
    port: int
    bin_dir: Path
    settings: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database `propensity`, as the role `propensity` that owns it."""
        return postgres.url(self.port)

    @property
    def pid(self) -> int:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("the PostgreSQL server is not running")
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def connect(self, **kwargs: Any) -> Any:
        """A psycopg connection as `propensity` to `propensity` (psycopg.connect's keyword arguments)."""
        import psycopg

        args: dict[str, Any] = {
            "host": postgres.HOST,
            "port": self.port,
            "user": postgres.ROLE,
            "dbname": postgres.DATABASE,
            "connect_timeout": 5,
            **kwargs,
        }
        return psycopg.connect(**args)

    # --- lifecycle -------------------------------------------------------------------------------------
    def initdb(self) -> None:
        postgres.make_private_dir(self.workdir)
        postgres.make_private_dir(self.socket_dir)
        argv = postgres.as_server_user(postgres.initdb_argv(self.bin_dir, self.data_dir, no_sync=True))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        postgres.write_hba(self.data_dir)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (it must not run) and wait until it answers; stop it again if it never does."""
        if self.running():
            raise RuntimeError(f"PostgreSQL already runs (pid {self.pid})")
        argv = postgres.server_argv(
            self.bin_dir, self.data_dir, self.port, socket_dir=str(self.socket_dir), **self.settings
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                postgres.as_server_user(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the postmaster and its backends, killed as one
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"postgres exited with {code}:\n{tail(self.log)}")
            if postgres.ready(self.port, self.data_dir):
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres on port {self.port} not ready after {timeout}s:\n{tail(self.log)}")

    def kill(self) -> int:
        """SIGKILL the postmaster and every backend at once (its process group); the pid that was killed."""
        pid = self.pid
        assert self.process is not None
        # not reaped yet, so the pid is still our group's id: the kill cannot reach anyone else
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        _wait_group_gone(pid, 10.0)
        return pid

    def restart(self, timeout: float = 60.0) -> None:
        """Start it again on the same port and data dir (after kill() or stop()): crash recovery if killed."""
        if self.running():
            self.stop()
        self.start(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), SIGKILL of its group after `timeout`."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        _wait_group_gone(process.pid, 10.0)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Backends outliving a killed postmaster exit as soon as they notice; SIGKILL what is left of the
    group after `timeout` (the group id is the postmaster's pid, ours until every member is gone)."""
    from tools.procs import group_members

    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(
    *, port: int | None = None, settings: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL (initdb) on 127.0.0.1:`port` (default: a free one), with the role and database
    `propensity`; `settings` replace the default `-c` settings ({"fsync": "off"}). Stopped and removed
    however the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="propensity-pg-"))
    server = PostgresServer(
        workdir=workdir,
        port=port or free_port(),
        bin_dir=postgres.bin_dir(),
        settings=dict(DEFAULT_SETTINGS if settings is None else settings),
    )
    try:
        server.initdb()
        server.start(timeout)
        postgres.ensure_database(server.port)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
