"""A real supervisord with the local cluster's config (tools/supervisor_config.py) over small Python programs:
a program that dies is started again and what it left behind is stopped by the orphan reaper, logs rotate
at the configured size, and a supervisord that was SIGKILLed leaves nothing that `down` cannot find (its
session). The whole cluster under it: tests/integration/test_cluster.py."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import wait_until
from tools import procs, supervisor_config
from tools.procs import ProcessRecord
from tools.supervisor_config import Program

MAX_BYTES = 16 * 1024
BACKUPS = 2
# forks a child, which stays in its process group (as gunicorn's workers stay in the master's); both sleep
PARENT = "import os, time; os.fork(); time.sleep(600)"
CHATTY = (
    "import itertools, time; [print('x' * 99, flush=True) or time.sleep(0.001) for _ in itertools.count()]"
)


@dataclass
class Supervisord:
    run_dir: Path
    record: ProcessRecord

    def call(self, method: str, *args: Any) -> Any:
        return supervisor_config.call(self.run_dir / supervisor_config.SOCKET_NAME, method, *args)

    def pid(self, name: str) -> int:
        info = self.call("getProcessInfo", name)
        return int(info["pid"]) if info["statename"] == "RUNNING" else 0


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Supervisord]:
    logs = tmp_path / "logs"
    logs.mkdir()
    programs = [
        Program("parent", [sys.executable, "-c", PARENT], logs / "parent.log"),
        Program("chatty", [sys.executable, "-c", CHATTY], logs / "chatty.log"),
    ]
    conf = tmp_path / supervisor_config.CONF_NAME
    conf.write_text(
        supervisor_config.supervisord_conf(tmp_path, programs, log_max_bytes=MAX_BYTES, log_backups=BACKUPS)
    )
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    record = procs.spawn("supervisord", argv, env=os.environ, log=logs / "supervisord.out", cwd=tmp_path)
    sup = Supervisord(tmp_path, record)
    try:

        def answers() -> bool:
            try:
                return bool(sup.call("getState")["statename"] == "RUNNING")
            except OSError:
                return False

        assert wait_until(answers, 20.0), procs.tail(logs / "supervisord.out")
        yield sup
    finally:
        procs.stop(record, timeout=20)
        procs.kill_session(record)


def test_a_killed_program_is_restarted_and_its_orphans_stopped(supervisord: Supervisord) -> None:
    supervisord.call("startProcess", "parent", True)
    parent = supervisord.pid("parent")
    assert wait_until(lambda: len(procs.group_members(parent)) == 2, 10.0)
    (child,) = [pid for pid in procs.group_members(parent) if pid != parent]
    os.kill(parent, signal.SIGKILL)  # the child lives on in the dead parent's group
    restarted = wait_until(lambda: supervisord.pid("parent") not in (0, parent), 15.0)
    assert restarted and wait_until(lambda: not procs.is_alive(child), 15.0)
    log = (supervisord.run_dir / "logs" / f"{supervisor_config.REAPER}.log").read_text()
    assert f"stopping [{child}], left behind by process {parent}" in log
    assert procs.orphaned_groups(supervisord.record.pid) == []


def test_logs_rotate_at_the_configured_size_keeping_the_configured_backups(supervisord: Supervisord) -> None:
    supervisord.call("startProcess", "chatty", True)
    log = supervisord.run_dir / "logs" / "chatty.log"
    backups = [log.with_name(f"chatty.log.{n}") for n in range(1, BACKUPS + 2)]
    # three rotations at least: the oldest backup was rotated away once
    assert wait_until(lambda: (supervisord.run_dir / "logs" / "chatty.log.2").exists(), 30.0)
    time.sleep(0.5)
    supervisord.call("stopProcess", "chatty", True)
    assert backups[0].exists() and backups[1].exists() and not backups[2].exists()
    for path in [log, *backups[:2]]:
        assert path.stat().st_size < MAX_BYTES + (2 << 16), path  # + one read of supervisord's
    assert backups[0].stat().st_size >= MAX_BYTES and backups[1].stat().st_size >= MAX_BYTES


def test_a_killed_supervisord_leaves_nothing_its_session_does_not_find(supervisord: Supervisord) -> None:
    supervisord.call("startProcess", "parent", True)
    parent = supervisord.pid("parent")
    assert wait_until(lambda: len(procs.group_members(parent)) == 2, 10.0)
    os.kill(supervisord.record.pid, signal.SIGKILL)  # its programs run on, reparented
    assert wait_until(lambda: not procs.is_running(supervisord.record), 10.0)
    family = set(procs.group_members(parent))
    # the program and its child run on (the reaper does not: its stdin ended with supervisord)
    assert wait_until(lambda: set(procs.session_members(supervisord.record.pid)) == family, 10.0)
    assert set(procs.kill_session(supervisord.record)) == family
    assert wait_until(lambda: procs.session_members(supervisord.record.pid) == [], 10.0)
