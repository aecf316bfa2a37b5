"""Writing a run's output, its rejects and its manifest.

The output is written to `<output>.partial` and renamed when the run ends well, so a file under the
output's name is always whole. CSV and JSON Lines payloads arrive as bytes (gzip members when gzipped: a
gzip file may be a series of members, and each worker compresses its own chunk); Parquet ones as pyarrow
tables, one row group each, the model's version and the scoring time in the file's key-value metadata.

Rejects are a CSV file, one line per problem: `row` (0-based among the file's data rows), `line` (the
input's line, CSV and JSON Lines), `field`, `reason`, `value`. The manifest (JSON) says which model scored
the file, when, from which input, and how many rows were scored and rejected.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from service.files.chunks import Reject
from service.files.formats import FileKind, Format

REJECT_COLUMNS = ("row", "line", "field", "reason", "value")
METADATA_PREFIX = "propensity."


def companion(output: Path, what: str) -> Path:
    """`scores.csv.gz` -> `scores.<what>`, beside it."""
    name = output.name
    for suffix in reversed(output.suffixes):
        name = name.removesuffix(suffix)
    return output.with_name(f"{name or output.name}.{what}")


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class OutputSink:
    def __init__(
        self, path: Path, kind: FileKind, header: bytes, arrow_schema: Any, metadata: dict[str, str]
    ) -> None:
        self.path = path
        self.kind = kind
        self.partial = partial_path(path)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self._writer: Any = None
        self._file: Any = None
        if kind.format is Format.PARQUET:
            import pyarrow.parquet as pq

            schema = arrow_schema.with_metadata({METADATA_PREFIX + k: v for k, v in metadata.items()})
            self._writer = pq.ParquetWriter(self.partial, schema)
        else:
            self._file = self.partial.open("wb")
            if header:
                self._file.write(gzip.compress(header, 6) if kind.gzip else header)

    def write(self, payload: Any) -> None:
        if self._writer is not None:
            if payload.num_rows:
                self._writer.write_table(payload)
        elif payload:
            self._file.write(payload)

    def close(self, keep: bool) -> None:
        """Finish the file and give it its name (keep), or remove what was written."""
        if self._writer is not None:
            self._writer.close()
        else:
            if self.kind.gzip and self._file.tell() == 0:
                self._file.write(gzip.compress(b""))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if keep:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


class RejectsSink:
    """Opened at the first reject: a run without any leaves no rejects file (and removes a stale one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: Any = None
        self._writer: Any = None
        path.unlink(missing_ok=True)

    def write(self, rejects: Iterable[Reject], row_offset: int) -> None:
        for r in rejects:
            if self._writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("w", newline="", encoding="utf-8")
                self._writer = csv.writer(self._file)
                self._writer.writerow(REJECT_COLUMNS)
            line = "" if r.line is None else r.line
            self._writer.writerow([r.row + row_offset, line, r.field or "", r.reason, r.value or ""])
            self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = partial_path(path)
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    os.replace(tmp, path)
