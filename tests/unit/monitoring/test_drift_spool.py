"""The drift spool on disk: hourly files per host and process, retention, reading a time range back, and
writes that fail without raising."""

from __future__ import annotations

import calendar
import logging
import os
from pathlib import Path

import pytest

from service.monitoring.drift_spool import SpoolWriter, read_spool

HOUR = 3600.0
T0 = float(calendar.timegm((2026, 3, 1, 10, 0, 0)))  # 2026-03-01 10:00 UTC


def chunk(start: float, end: float, rows: int = 100) -> dict[str, object]:
    return {"version": "v1", "start": start, "end": end, "rows": rows}


def test_chunks_go_to_an_hourly_file_of_this_host_and_process(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "spool", retention_hours=24, host="node-1")
    assert writer.write(chunk(T0, T0 + 60), now=T0 + 60)
    assert writer.write(chunk(T0 + 60, T0 + 120), now=T0 + 120)
    assert writer.write(chunk(T0 + HOUR, T0 + HOUR + 60), now=T0 + HOUR + 60)
    pid = os.getpid()
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [
        f"drift-2026030110-node_1-{pid}.jsonl",  # "-" separates the name's fields: the host has none
        f"drift-2026030111-node_1-{pid}.jsonl",
    ]
    records = list(read_spool(tmp_path / "spool", since=0))
    assert [(r.data["start"], r.version) for r in records] == [(T0, "v1"), (T0 + 60, "v1"), (T0 + HOUR, "v1")]


def test_read_spool_keeps_the_chunks_that_overlap_the_range(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, retention_hours=24, host="h")
    for i in range(4):
        writer.write(chunk(T0 + 600 * i, T0 + 600 * (i + 1)), now=T0)
    starts = [r.data["start"] for r in read_spool(tmp_path, since=T0 + 900, until=T0 + 1500)]
    assert starts == [T0 + 600, T0 + 1200]  # [600, 1200] and [1200, 1800] overlap [900, 1500]


def test_files_last_changed_before_the_range_are_not_read(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, retention_hours=24, host="h")
    writer.write(chunk(T0, T0 + 60), now=T0)
    (path,) = tmp_path.iterdir()
    os.utime(path, (T0 - HOUR, T0 - HOUR))  # the file says it was last written an hour earlier
    assert list(read_spool(tmp_path, since=T0 - 60)) == []
    assert len(list(read_spool(tmp_path, since=T0 - 2 * HOUR))) == 1


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, retention_hours=24, host="h")
    writer.write(chunk(T0, T0 + 60), now=T0)
    (path,) = tmp_path.iterdir()
    with path.open("a") as fh:
        fh.write('{"version": "v1", "rows": 5}\n')  # no time span
        fh.write('{"start": "soon", "end": 1}\n')  # not a number
        fh.write('{"version": "v1", "start": 1, "en')  # a torn last line (a worker killed mid-write)
    assert [r.data["rows"] for r in read_spool(tmp_path, since=0)] == [100]


def test_a_missing_directory_reads_as_empty(tmp_path: Path) -> None:
    assert list(read_spool(tmp_path / "nowhere", since=0)) == []


def test_retention_prunes_this_hosts_old_files_only(tmp_path: Path) -> None:
    old_ours = tmp_path / "drift-2026030100-h-1.jsonl"
    old_theirs = tmp_path / "drift-2026030100-other-1.jsonl"
    recent_ours = tmp_path / "drift-2026030109-h-1.jsonl"
    for path, age in [(old_ours, 5 * HOUR), (old_theirs, 5 * HOUR), (recent_ours, HOUR)]:
        path.write_text("")
        os.utime(path, (T0 - age, T0 - age))
    writer = SpoolWriter(tmp_path, retention_hours=2, host="h")
    assert writer.write(chunk(T0, T0 + 60), now=T0)  # a new file: the writer prunes on opening it
    assert not old_ours.exists()
    assert old_theirs.exists() and recent_ours.exists()  # another host's files are that host's business
    assert writer.prune(T0) == 0


def test_a_failing_write_returns_false_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the directory should be")
    writer = SpoolWriter(blocker, retention_hours=24, host="h")
    with caplog.at_level(logging.WARNING, logger="propensity.drift"):
        assert not writer.write(chunk(T0, T0 + 60), now=T0)
        assert not writer.write(chunk(T0, T0 + 60), now=T0)
    assert sum("drift spool" in r.getMessage() for r in caplog.records) == 1


def test_a_record_that_is_not_json_is_refused_not_raised(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, retention_hours=24, host="h")
    assert not writer.write({"start": T0, "end": float("nan")}, now=T0)  # NaN is not JSON
    assert writer.write(chunk(T0, T0 + 60), now=T0)
    assert [r.data["end"] for r in read_spool(tmp_path, since=0)] == [T0 + 60]
