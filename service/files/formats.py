"""File formats the scorer reads and writes: CSV, JSON Lines and Parquet; CSV and JSON Lines also gzipped."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from service.errors import InputError


class Format(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


SUFFIXES = {".csv": Format.CSV, ".jsonl": Format.JSONL, ".ndjson": Format.JSONL, ".parquet": Format.PARQUET}
SUFFIXES[".pq"] = Format.PARQUET
GZIP_MAGIC = b"\x1f\x8b"


class UnknownFormat(InputError):
    status = 400
    kind = "unknown-file-format"
    title = "File format not known"


@dataclass(frozen=True)
class FileKind:
    format: Format
    gzip: bool = False

    def __str__(self) -> str:
        return f"{self.format}{' (gzip)' if self.gzip else ''}"


def kind_of(path: Path, given: Format | None = None) -> FileKind:
    """The format a path's name says (`data.csv`, `data.csv.gz`, `scores.parquet`, `rows.jsonl.gz`), or
    `given`; gzip by the `.gz` suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    found = SUFFIXES.get(suffixes[-1]) if suffixes else None
    fmt = given or found
    if fmt is None:
        raise UnknownFormat(
            f"cannot tell the format of {path.name!r} from its name; name it .csv, .csv.gz, .jsonl, "
            ".jsonl.gz or .parquet, or say --input-format / --output-format"
        )
    if gz and fmt is Format.PARQUET:
        raise UnknownFormat(f"{path.name!r}: Parquet compresses its own pages; do not gzip a Parquet file")
    return FileKind(fmt, gz)


def is_gzip_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC
