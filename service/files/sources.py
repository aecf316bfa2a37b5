"""Reading a file in chunks: whole records at a time, whatever the file's size.

CSV and JSON Lines are cut into chunks of about `chunk_bytes` bytes at record boundaries, without being
parsed here: a line end ends a CSV record when the number of quotes before it is even (a quoted cell may
hold a line break, RFC 4180), so the only work of the reading process is to find that line end and count
lines. The chunks are parsed and scored in the worker processes. Parquet is read by record batch
(pyarrow), only the columns the model and the pass-through ids read.

A chunk knows the line its records start on (the header is line 1, as an editor counts), so that a row
that cannot be scored is named by its line in the input file.
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.errors import InputError
from service.files.formats import FileKind, Format

CHUNK_BYTES = 4 * 1024 * 1024
PARQUET_ROWS = 20_000
# A record may be long, but not this long: a quote opened and never closed makes the rest of the file one
# record; past this, reading stops with the line the open quote is on.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_READ = 1024 * 1024
_QUOTE, _LF = 34, 10


class UnreadableFile(InputError):
    status = 400
    kind = "unreadable-file"
    title = "File cannot be read as rows"


@dataclass(frozen=True)
class TextChunk:
    """Whole records of a CSV (after its header) or a JSON Lines file: their bytes, or where they are in
    a plain file (`path`, `offset`, `size`), which the worker reads itself (no copy of the file's bytes
    through the reading process and a pipe)."""

    format: Format
    header: bytes  # the CSV header record with its line end (b"" for JSON Lines)
    data: bytes | None
    first_line: int  # the file line the body starts on
    header_lines: int = 1
    path: str | None = None
    offset: int = 0
    size: int = 0

    @property
    def body(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, self.size, self.offset)
        finally:
            os.close(fd)

    @property
    def length(self) -> int:
        return self.size if self.data is None else len(self.data)


@dataclass(frozen=True)
class ParquetChunk:
    batch: Any  # pyarrow.RecordBatch
    names: tuple[str, ...]  # every column of the file's schema (read or not)


Chunk = TextChunk | ParquetChunk


def open_binary(path: Path, gz: bool) -> IO[bytes]:
    if gz:
        return gzip.open(path, "rb")  # type: ignore[return-value]  # a GzipFile reads bytes as IO does
    return path.open("rb")


def count_byte(data: bytes | bytearray, byte: int, start: int = 0, end: int | None = None) -> int:
    """How many times `byte` occurs in data[start:end]: numpy's compare-and-count reads a few GB/s, four
    times bytes.count's speed for one byte (the reading process counts every quote and line end)."""
    view = np.frombuffer(data, dtype=np.uint8)[start:end]
    return int(np.count_nonzero(view == byte))


def record_end(data: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    """The offset just after the last line end in data[start:end] that ends a CSV record (an even number
    of quotes since `start`, which is a record boundary); -1 when there is none."""
    end = len(data) if end is None else end
    quotes_before = count_byte(data, _QUOTE, start, end)
    while True:
        lf = data.rfind(b"\n", start, end)
        if lf < 0:
            return -1
        quotes_before -= count_byte(data, _QUOTE, lf, end)
        if quotes_before % 2 == 0:
            return lf + 1
        end = lf


def _blocks(f: IO[bytes], chunk_bytes: int, hasher: Any) -> Iterator[bytes]:
    while block := f.read(max(chunk_bytes, _READ)):
        if hasher is not None:
            hasher.update(block)
        yield block


def text_chunks(
    path: Path, kind: FileKind, chunk_bytes: int = CHUNK_BYTES, hasher: Any = None
) -> Iterator[TextChunk]:
    """The file's records in chunks of about `chunk_bytes` (a last record without a line end included).
    A plain file's chunks say where their bytes are; a gzipped file's hold them. `hasher` is fed every
    byte read (of the file, or of what it decompresses to)."""
    csv = kind.format is Format.CSV
    where = None if kind.gzip else str(path)
    with open_binary(path, kind.gzip) as f:
        pending = bytearray()
        header = b""
        line = 1
        blocks = _blocks(f, chunk_bytes, hasher)
        if csv:
            header, pending = _header(blocks, path)
            line = 1 + header.count(b"\n")
        header_lines = max(1, header.count(b"\n"))
        offset = len(header)

        def chunk(body: bytes | bytearray | memoryview) -> TextChunk:
            data = None if where is not None else bytes(body)
            return TextChunk(kind.format, header, data, line, header_lines, where, offset, len(body))

        for block in itertools.chain([b""], blocks):  # what the header's reading read after it first
            pending += block
            while len(pending) >= chunk_bytes:
                cut = _cut(pending, chunk_bytes, csv)
                if cut <= 0:
                    _check_record_size(pending, line)
                    break
                body = memoryview(pending)[:cut]
                yield chunk(body)
                line += count_byte(pending, _LF, 0, cut)
                offset += cut
                body.release()
                del pending[:cut]
        if pending:
            if csv:
                _check_quotes_closed(pending, line)
            yield chunk(pending)


def _cut(pending: bytearray, chunk_bytes: int, csv: bool) -> int:
    """Where the next chunk ends: after the last whole record within its first `chunk_bytes`, or after the
    first record when that one alone is longer; 0 when no record ends in what was read."""
    if not csv:
        cut = pending.rfind(b"\n", 0, chunk_bytes) + 1
        return cut or pending.find(b"\n") + 1
    cut = record_end(pending, 0, chunk_bytes)
    return cut if cut > 0 else max(first_record_end(pending), 0)


def first_record_end(data: bytes | bytearray, start: int = 0) -> int:
    """The offset just after the first line end in data[start:] that ends a CSV record (`start` is a
    record boundary); -1 when there is none."""
    pos, quotes = start, 0
    while True:
        lf = data.find(b"\n", pos)
        if lf < 0:
            return -1
        quotes += count_byte(data, _QUOTE, pos, lf)
        if quotes % 2 == 0:
            return lf + 1
        pos = lf + 1


def _header(blocks: Iterator[bytes], path: Path) -> tuple[bytes, bytearray]:
    """The CSV header record with its line end (and any blank lines before it, which are no record), and
    what was read after it."""
    pending = bytearray()
    start = 0
    for block in blocks:
        pending += block
        while (cut := first_record_end(pending, start)) > 0:
            if pending[start:cut].strip():
                return bytes(pending[:cut]), pending[cut:]
            start = cut
        _check_record_size(pending, 1)
    if not pending.strip():
        raise UnreadableFile(f"{path.name} is empty: a CSV file starts with a header line naming the columns")
    raise UnreadableFile(f"{path.name} has a header line but no rows")


def _check_record_size(pending: bytearray, line: int) -> None:
    if len(pending) > MAX_RECORD_BYTES:
        raise _never_closed(pending, line, f"a record longer than {MAX_RECORD_BYTES // 2**20} MiB: ")


def _check_quotes_closed(pending: bytearray, line: int) -> None:
    """The end of the file: a quote still open there was opened and never closed."""
    if count_byte(pending, _QUOTE) % 2:
        raise _never_closed(pending, line, "")


def _never_closed(pending: bytearray, line: int, what: str) -> UnreadableFile:
    """The error naming the line of the first record of `pending` (which starts on `line`) that does not
    end: the open quote is in it."""
    pos = 0
    while (end := first_record_end(pending, pos)) > 0:
        line += count_byte(pending, _LF, pos, end)
        pos = end
    return UnreadableFile(
        f"line {line}: {what}a quote opened on this line is never closed; close it, or double a quote "
        'inside a quoted cell ("a ""b"" c")'
    )


def parquet_chunks(path: Path, columns: list[str] | None, rows: int = PARQUET_ROWS) -> Iterator[ParquetChunk]:
    """Record batches of at most `rows` rows, only `columns` among the file's (those it has; None: all)."""
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's errors: ArrowInvalid, OSError
        raise UnreadableFile(f"{path.name} is not a Parquet file: {exc}") from None
    names = tuple(file.schema_arrow.names)
    wanted = list(names) if columns is None else [c for c in names if c in set(columns)]
    with file:
        for batch in file.iter_batches(batch_size=rows, columns=wanted):
            yield ParquetChunk(batch, names)


def chunks_of(
    path: Path, kind: FileKind, columns: list[str] | None, chunk_bytes: int = CHUNK_BYTES, hasher: Any = None
) -> Iterator[Chunk]:
    if kind.format is Format.PARQUET:
        return parquet_chunks(path, columns, max(1, chunk_bytes // 200))
    return text_chunks(path, kind, chunk_bytes, hasher)
