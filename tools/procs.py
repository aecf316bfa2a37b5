"""Detached server processes with PID files that identify them exactly.

A PID file holds the pid *and* the process start time (field 22 of /proc/<pid>/stat), so a pid that the
kernel has since handed to another process is never mistaken for ours. Every process starts in its own
session, so its process group (e.g. a gunicorn master and its workers) can be stopped as one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int
    argv: list[str]
    log: str

    def save(self, pids_dir: Path) -> Path:
        pids_dir.mkdir(parents=True, exist_ok=True)
        path = pids_dir / f"{self.name}.pid"
        path.write_text(json.dumps(asdict(self)) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ProcessRecord:
        data = json.loads(path.read_text())
        return cls(**data)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a pid, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


def is_running(record: ProcessRecord) -> bool:
    """True when the very process we started is alive (not a zombie, not a reused pid)."""
    stat = _stat(record.pid)
    return stat is not None and stat[1] == record.start_time and stat[0] not in ("Z", "X")


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, process group, session) of every live (non-zombie) process."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            out.append((int(entry.name), int(fields[2]), int(fields[3])))
    return out


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    return [pid for pid, group, _ in _live_processes() if group == pgid]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session is `sid`."""
    return [pid for pid, _, session in _live_processes() if session == sid]


def is_alive(pid: int) -> bool:
    """Some process (not a zombie) has this pid."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def orphaned_groups(sid: int) -> list[int]:
    """Process groups in session `sid` whose leader is dead but whose members live on: what a program that
    died left behind (e.g. the workers of a SIGKILLed gunicorn master, still holding its port).

    A pid that is still some group's id is never handed out again, so each of these groups is the dead
    leader's own."""
    groups = {group for _, group, session in _live_processes() if session == sid}
    return sorted(group for group in groups if not is_alive(group))


def record_of(name: str, pid: int, argv: Sequence[str], log: str | Path) -> ProcessRecord | None:
    """A record of a running process someone else started (e.g. supervisord), or None if it is gone."""
    stat = _stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return ProcessRecord(name=name, pid=pid, start_time=stat[1], argv=list(argv), log=str(log))


_children: dict[int, subprocess.Popen[bytes]] = {}  # ours to reap when this process started them


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def spawn(
    name: str, argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> ProcessRecord:
    """Start argv detached (own session, stdin from /dev/null, stdout+stderr to `log`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[child.pid] = child
    stat = _stat(child.pid)
    start_time = stat[1] if stat is not None else -1
    return ProcessRecord(name=name, pid=child.pid, start_time=start_time, argv=list(argv), log=str(log))


def signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Send `sig` to the record's whole process group (only if it is still the process we started)."""
    if is_running(record):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, sig)


def stop(record: ProcessRecord, *, timeout: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask the process to stop; SIGKILL its process group after `timeout`. True when it had been running."""
    _reap(record.pid)
    if not is_running(record):
        _kill_leftovers(record)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _reap(record.pid)
        if not is_running(record):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
    _kill_leftovers(record)
    wait_gone(record, 5.0)
    return True


def _orphaned_group(record: ProcessRecord) -> bool:
    """Our leader is dead (gone or a zombie) but members of its process group live on.

    A pid that is still some group's id is never handed out again, so such a group is ours.
    """
    stat = _stat(record.pid)
    leader_dead = stat is None or (stat[0] in ("Z", "X") and stat[1] == record.start_time)
    return leader_dead and bool(group_members(record.pid))


def _kill_leftovers(record: ProcessRecord) -> None:
    """Members of the group that outlived their leader (e.g. workers of a killed gunicorn master)."""
    if _orphaned_group(record):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)


def kill_session(record: ProcessRecord) -> list[int]:
    """SIGKILL whatever still runs in the session the record's process led, once that process is gone
    (a session id, like a group id, is never handed out again while a member lives). The pids it killed."""
    _reap(record.pid)
    stat = _stat(record.pid)
    if stat is not None and not (stat[0] in ("Z", "X") and stat[1] == record.start_time):
        return []  # ours still runs, or the pid is another process's now (and the session may be too)
    members = session_members(record.pid)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return members


def wait_gone(record: ProcessRecord, timeout: float) -> bool:
    """Wait until neither the process nor any member of its group is alive."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _reap(record.pid)
        if not is_running(record) and not _orphaned_group(record):
            return True
        time.sleep(0.02)
    return False


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
