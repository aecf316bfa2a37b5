"""Cutting a file into chunks of whole records: quoted line breaks, gzip, line numbers, the errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from service.files import sources
from service.files.formats import FileKind, Format
from service.files.sources import UnreadableFile, first_record_end, record_end, text_chunks

CSV = FileKind(Format.CSV)
HEADER = b'x5,"x12",note\r\n'
RECORDS = [
    b'monday,"$1,000.00",plain\r\n',
    b'friday,"$2.00","two\nlines"\r\n',
    b'sunday,3,"a ""q"""\r\n',
] * 40


def test_a_record_ends_at_a_line_end_after_an_even_number_of_quotes() -> None:
    data = b'a,"b\nc"\nd\n'
    assert first_record_end(data) == 8 and record_end(data) == len(data)
    assert record_end(b'a,"open\n') == -1 and first_record_end(b"no line end") == -1


@pytest.mark.parametrize("chunk_bytes", [1, 64, 1000, 10**6])
def test_chunks_are_whole_records_with_their_lines(tmp_path: Path, chunk_bytes: int) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(HEADER + b"".join(RECORDS))
    chunks = list(text_chunks(path, CSV, chunk_bytes))
    assert b"".join(c.body for c in chunks) == b"".join(RECORDS)
    assert {c.header for c in chunks} == {HEADER}
    line = 2
    for c in chunks:
        assert c.first_line == line and c.data is None  # a plain file: offsets, read by the worker
        assert record_end(c.body) == len(c.body)
        line += c.body.count(b"\n")


def test_a_gzipped_file_gives_the_same_records(tmp_path: Path) -> None:
    text = HEADER + b"".join(RECORDS)
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(text))
    chunks = list(text_chunks(tmp_path / "in.csv.gz", FileKind(Format.CSV, gzip=True), 200))
    assert HEADER + b"".join(c.body for c in chunks) == text and all(c.data is not None for c in chunks)


def test_the_last_record_may_lack_its_line_end(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(HEADER + b"monday,1,x")
    (chunk,) = text_chunks(tmp_path / "in.csv", CSV)
    assert chunk.body == b"monday,1,x"


def test_json_lines_are_cut_at_line_ends(tmp_path: Path) -> None:
    lines = [b'{"x5": "monday"}\n', b'{"x5": "a \\" quote"}\n'] * 50
    (tmp_path / "in.jsonl").write_bytes(b"".join(lines))
    chunks = list(text_chunks(tmp_path / "in.jsonl", FileKind(Format.JSONL), 100))
    assert b"".join(c.body for c in chunks) == b"".join(lines) and chunks[0].header == b""
    assert all(c.body.endswith(b"\n") for c in chunks)


@pytest.mark.parametrize(
    ("text", "words"), [(b"", "is empty"), (b"x5,x12", "no rows"), (b"\n\n", "is empty")]
)
def test_a_file_without_rows_is_refused(tmp_path: Path, text: bytes, words: str) -> None:
    (tmp_path / "in.csv").write_bytes(text)
    with pytest.raises(UnreadableFile, match=words):
        list(text_chunks(tmp_path / "in.csv", CSV))


def test_a_quote_never_closed_is_named_by_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in.csv").write_bytes(
        HEADER + RECORDS[0] + RECORDS[1] + b'monday,"$1.00,x\r\n' + RECORDS[0] * 3
    )
    with pytest.raises(UnreadableFile, match="line 5: a quote opened on this line is never closed"):
        list(text_chunks(tmp_path / "in.csv", CSV))
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100)
    (tmp_path / "big.csv").write_bytes(HEADER + RECORDS[0] + b'x,"' + b"y" * 300 + b"\n" + RECORDS[0] * 3)
    with pytest.raises(UnreadableFile, match=r"line 3: .*never closed"):
        list(text_chunks(tmp_path / "big.csv", CSV, 50))
