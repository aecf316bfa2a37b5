"""The chaos suite (`make chaos`): each fault of issue 12 repeated under a bounded load, its outcome
asserted. Each scenario adds a row to report.ROWS; the table is printed at the end of the run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.integration.chaos.report import ROWS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("chaos: each fault under load")
    head = f"{'scenario':<60} {'requests':>8} {'failed':>6} {'refused':>7} {'p99 ms':>8}"
    terminalreporter.write_line(head)
    for row in ROWS:
        terminalreporter.write_line(
            f"{row.scenario:<60} {row.requests:>8} {row.failed:>6} {row.refused:>7} {row.p99_ms:>8}"
        )
    report = os.environ.get("CHAOS_REPORT")
    if report:
        Path(report).write_text(json.dumps([asdict(r) for r in ROWS], indent=1) + "\n")
