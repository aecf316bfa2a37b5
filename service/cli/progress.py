"""The progress bar of long commands (rich): done/total, rows, rows/s and the time left, on stderr."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class RichProgress:
    """A `service.files.run.Progress` drawn by rich; a context manager (the bar ends with the block)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("scoring"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("{task.fields[rate]:,.0f} rows/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None
        self._rows = 0

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._bar.stop()

    def start(self, total: int | None, unit: str) -> None:
        """The bar appears (and its refresh thread starts) here, not on entering: the file scorer forks its
        workers first."""
        self._task = self._bar.add_task("score", total=total, rows=0, rate=0.0)
        self._bar.start()

    def advance(self, units: int, rows: int) -> None:
        self._rows += rows
        task = self._bar.tasks[self._task]
        elapsed = task.elapsed or 0.0
        rate = self._rows / elapsed if elapsed > 0 else 0.0
        self._bar.update(self._task, advance=units, rows=self._rows, rate=rate)


class _Quiet:
    def start(self, total: int | None, unit: str) -> None:
        return None

    def advance(self, units: int, rows: int) -> None:
        return None


@contextlib.contextmanager
def no_progress() -> Iterator[_Quiet]:
    yield _Quiet()
