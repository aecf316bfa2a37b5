"""A spool of closed drift-window chunks on disk, so `propensity drift-report --since 2h` can see what the
running service scored.

Each worker appends one JSON line per closed chunk to `<dir>/drift-<YYYYmmddHH>-<host>-<pid>.jsonl`
(append-only, one writer per file, so no locking; a new file every hour). A line holds the chunk's bucket
counts, its time span, the model version and the input layout, so it can be read back with only the
version's metadata. Workers delete their spool files older than the retention when they open a new one.
Writing never raises into a request: a full or missing disk is logged once and the chunk is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("propensity.drift")
PREFIX = "drift-"
SUFFIX = ".jsonl"


class SpoolWriter:
    def __init__(self, directory: Path, retention_hours: float, *, host: str | None = None) -> None:
        self.directory = Path(directory)
        self.retention_seconds = retention_hours * 3600.0
        self.host = (host or socket.gethostname()).replace("-", "_")[:64]
        self._path: Path | None = None
        self._warned = False

    def _file(self, now: float) -> Path:
        stamp = time.strftime("%Y%m%d%H", time.gmtime(now))
        path = self.directory / f"{PREFIX}{stamp}-{self.host}-{os.getpid()}{SUFFIX}"
        if path != self._path:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path = path
            self.prune(now)
        return path

    def prune(self, now: float) -> int:
        """Delete this host's spool files older than the retention; returns how many."""
        removed = 0
        for path in self.directory.glob(f"{PREFIX}*-{self.host}-*{SUFFIX}"):
            try:
                if now - path.stat().st_mtime > self.retention_seconds:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def write(self, record: dict[str, Any], now: float | None = None) -> bool:
        now = time.time() if now is None else now
        try:
            line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
            with self._file(now).open("a") as fh:
                fh.write(line)
        except (OSError, ValueError) as exc:
            if not self._warned:
                log.warning(
                    "drift spool %s not written (further failures are not logged): %s", self.directory, exc
                )
                self._warned = True
            return False
        return True


@dataclass(frozen=True)
class SpoolRecord:
    path: Path
    data: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.data.get("version", "?"))


def read_spool(directory: Path, since: float, until: float | None = None) -> Iterator[SpoolRecord]:
    """Records whose chunk overlaps [since, until]; unreadable lines are skipped (a torn last line)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        try:
            if path.stat().st_mtime < since:
                continue
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                data = json.loads(line)
                end, start = float(data["end"]), float(data["start"])
            except (ValueError, KeyError, TypeError):
                continue
            if end >= since and (until is None or start <= until):
                yield SpoolRecord(path, data)
