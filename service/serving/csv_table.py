"""A CSV body as a table: its header, the cells of any column, and the line each row starts on.

The reading is Python's csv module's (the excel dialect with `strict=True`: RFC 4180 quoting, "" for a
quote inside a quoted field, CRLF or LF line ends), blank lines skipped. A cell is the text between its
commas with its quotes removed; nothing is trimmed or converted here (the scorer reads the strings as it
reads the same strings in JSON). Lines are counted from 1, the header's included, as an editor counts
them: a quoted cell that holds line breaks takes more than one.

Two ways to the same cells. Most bodies take the fast path: numpy finds every comma, line end and quote
at once, and only the cells of the columns asked for are cut out of the text (a 10,000-row file of 100
columns holds a million cells; the model reads ten of its columns). It takes only what it reads exactly
as the csv module would: every row as many cells as the header, quotes only around whole cells and never
doubled inside one, CR only before LF, no blank line before the last row, more than one column. Anything
else is read by the csv module, row by row, which reads it or says what is wrong and on which line (a
test holds the two to each other on generated tables).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import FieldError, InputError, PayloadTooLarge
from service.serving.turns import no_pause

BOM = "\ufeff"
_COMMA, _LF, _CR, _QUOTE = 44, 10, 13, 34
CELLS_NAMED = 5  # header cells quoted in an error


class MalformedCSV(InputError):
    """Bytes that are not a CSV table in UTF-8 (a quote left open, text after a closing quote, ...)."""

    status = 400
    kind = "malformed-csv"
    title = "Malformed CSV"


class BadCsvTable(InputError):
    """A CSV that reads, but not as rows to score: no rows, ragged rows, a header that names no column."""

    status = 422
    kind = "bad-csv-table"
    title = "CSV table cannot be scored as rows"


@dataclass(frozen=True)
class CsvFieldError(FieldError):
    """A FieldError that also names where it is in the CSV: its line (1-based, the header is line 1) and
    its column (1-based). `row` stays the row's index among the data rows, as on every door."""

    line: int | None = None
    column: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        if self.line is not None:
            out["line"] = self.line
        if self.column is not None:
            out["column"] = self.column
        return out


@dataclass
class Table:
    """The header, the data rows (`rows` of them) and the line each starts on: row i is on line i + 2
    unless `lines` says otherwise (blank lines, quoted line breaks)."""

    header: list[str]
    rows: int
    _cells: Callable[[int], list[str]]
    lines: list[int] | None = None
    header_line: int = 1
    _done: dict[int, list[str]] = field(default_factory=dict)

    def cells(self, j: int) -> list[str]:
        """The cells of column j (0-based), row by row."""
        out = self._done.get(j)
        if out is None:
            out = self._done[j] = self._cells(j)
        return out

    def line_of(self, row: int) -> int:
        return self.lines[row] if self.lines is not None else row + self.header_line + 1


def decode_text(data: bytes) -> str:
    """The body as text (UTF-8, a byte order mark kept); 400 for anything else, naming the line."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise MalformedCSV(
            "the body is UTF-16 (it starts with a UTF-16 byte order mark); send the CSV as UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MalformedCSV(
            f"the body is not UTF-8 (line {line}, byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "send the CSV as UTF-8",
            errors=[CsvFieldError(None, None, "not UTF-8", line=line)],
        ) from None


def _end(text: str) -> int:
    """Where the text ends without its line ends at the end (no copy of a big body for that)."""
    end = len(text)
    while end and text[end - 1] in "\r\n":
        end -= 1
    return end


def read_table(data: bytes, *, max_rows: int, max_errors: int, pause: Callable[[], None] = no_pause) -> Table:
    """The table a CSV body holds. 400 when it is not CSV in UTF-8 (or empty), 413 past `max_rows` data
    rows, 422 for no data rows or a row whose number of cells is not the header's (every such row named,
    up to `max_errors`)."""
    text = decode_text(data)
    start = 1 if text.startswith(BOM) else 0
    end = _end(text)
    if end <= start or (text[start].isspace() and text[start:end].isspace()):
        raise MalformedCSV("the body is empty; send a header line naming the columns, then one line per row")
    table = _fast_table(text, _codes(text, data, start, end), start, max_rows, pause)
    if table is None:
        pause()
        table = _module_table(text[start:end], max_rows, max_errors)
    if table.rows == 0:
        raise BadCsvTable(
            f"the CSV has a header (line {table.header_line}) but no rows; send 1 to {max_rows} rows "
            "after the header",
            errors=[CsvFieldError(None, None, "no rows after the header", line=table.header_line)],
        )
    return table


def too_many_rows(rows: int, max_rows: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{rows} rows exceed the limit of {max_rows} rows per request; split the file", max_rows=max_rows
    )


# --- the fast path --------------------------------------------------------------------------------------
def _codes(text: str, data: bytes, start: int, end: int) -> np.ndarray:
    """One number per character of text[:end], so that array offsets are string offsets: the body's own
    bytes when it is ASCII after its byte order mark (whose 3 bytes are 1 character: the first 2 are
    skipped, the last stands for it), else the text in UTF-32."""
    if text.isascii():
        return np.frombuffer(data, dtype=np.uint8, count=end)
    if start and text[start:end].isascii():
        return np.frombuffer(data, dtype=np.uint8, count=end + 2)[2:]
    return np.frombuffer(text[:end].encode("utf-32-le"), dtype=np.uint32)


def quotes_wrap_cells(codes: np.ndarray, quotes: np.ndarray, start: int) -> bool:
    """Quotes come in pairs, each pair one whole cell: an opening quote starts a cell (at the start, or
    after a comma or LF), its closing quote ends one (at the end, or before a comma, LF or CR); so no
    doubled quote inside a cell, no quote inside an unquoted cell, nothing after a closing quote."""
    if quotes.size % 2:
        return False
    opens, closes = quotes[0::2], quotes[1::2]
    before = codes[np.maximum(opens - 1, 0)]
    opened = (opens == start) | (before == _COMMA) | (before == _LF)
    last = codes.size - 1
    after = codes[np.minimum(closes + 1, last)]
    closed = (closes == last) | (after == _COMMA) | (after == _LF) | (after == _CR)
    return bool(opened.all() and closed.all())


def _outside_quotes(positions: np.ndarray, opens: np.ndarray, closes: np.ndarray) -> tuple[np.ndarray, int]:
    """The positions that are not inside a quoted cell, and how many were (positions[lo:hi] are inside
    the pair of quotes lo and hi were found for: few, the comma of "$6,882.34")."""
    lo, hi = np.searchsorted(positions, opens), np.searchsorted(positions, closes)
    inside = int((hi - lo).sum())
    if not inside:
        return positions, 0
    size = positions.size + 1
    marks = np.bincount(lo, minlength=size) - np.bincount(hi, minlength=size)
    return positions[np.cumsum(marks[:-1]) == 0], inside


@dataclass(frozen=True)
class _Grid:
    """Where the cells are: commas (rows x columns - 1) and row ends (the LF of each row, the text's
    end for the last), the header's row first; `line_ends`: every LF, for rows with quoted line breaks."""

    commas: np.ndarray
    row_ends: np.ndarray
    line_ends: np.ndarray | None

    def bounds(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and end offsets of column j's cells in the data rows."""
        last = self.commas.shape[1]
        starts = (self.commas[1:, j - 1] if j else self.row_ends[:-1]) + 1
        return starts, self.row_ends[1:] if j == last else self.commas[1:, j]


def _grid(codes: np.ndarray, start: int, has_cr: bool) -> _Grid | None:
    """The cells' grid, or None when the quotes, CRs or rows are not as the fast path reads them."""
    commas = np.flatnonzero(codes == _COMMA)
    line_ends = np.flatnonzero(codes == _LF)
    quotes = np.flatnonzero(codes == _QUOTE)
    lfs, inner_breaks = line_ends, 0
    if quotes.size:
        if not quotes_wrap_cells(codes, quotes, start):
            return None
        opens, closes = quotes[0::2], quotes[1::2]
        commas, _ = _outside_quotes(commas, opens, closes)
        lfs, inner_breaks = _outside_quotes(line_ends, opens, closes)
    if has_cr:
        crs = np.flatnonzero(codes == _CR)
        if crs.size and (crs[-1] == codes.size - 1 or not (codes[crs + 1] == _LF).all()):
            return None
    row_ends = np.append(lfs, codes.size)
    per_row = np.diff(np.searchsorted(commas, row_ends), prepend=0)
    ncols = int(per_row[0]) + 1
    if ncols < 2 or not (per_row == ncols - 1).all():
        return None  # a row with more or fewer cells than the header, or a blank line: the csv module says
    return _Grid(commas.reshape(row_ends.size, ncols - 1), row_ends, line_ends if inner_breaks else None)


def _fast_table(
    text: str, codes: np.ndarray, start: int, max_rows: int, pause: Callable[[], None]
) -> Table | None:
    """The table of text[start:codes.size], or None when it is not one the fast path reads exactly (see
    the module's doc)."""
    grid = _grid(codes, start, "\r" in text)
    if grid is None:
        return None
    rows = grid.row_ends.size - 1
    if rows > max_rows:
        raise too_many_rows(rows, max_rows)
    pause()
    lines = None
    if grid.line_ends is not None:  # a row starts on line 1 + the LFs before it, quoted ones included
        lines = (np.searchsorted(grid.line_ends, grid.row_ends[:-1], side="right") + 1).tolist()
    head = grid.commas[0]
    ncols = head.size + 1
    header = _cells_between(
        text,
        codes,
        np.append(start, head + 1),
        np.append(head, grid.row_ends[0]),
        np.arange(ncols) == ncols - 1,
    )
    return Table(
        header=header,
        rows=rows,
        _cells=lambda j: _cells_between(text, codes, *grid.bounds(j), j == ncols - 1),
        lines=lines,
    )


def _cells_between(
    text: str, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray, last: Any
) -> list[str]:
    """text[start:end] of each cell, without the quotes around a quoted one and, where `last` (the row's
    last cell), without the CR of a CRLF line end."""
    top = codes.size - 1
    ends = ends - (last & (ends > starts) & (codes[np.clip(ends - 1, 0, top)] == _CR))
    quoted = (ends > starts) & (codes[np.clip(starts, 0, top)] == _QUOTE)
    starts, ends = starts + quoted, ends - quoted
    # All the cells' characters gathered at once, a NUL after each, then split: twice as fast as slicing
    # the text cell by cell. A NUL inside a cell would split it: such a column is sliced.
    lengths = ends - starts
    spans = lengths + 1
    placed = np.cumsum(spans) - spans  # where each cell starts in the gathered text
    gaps = placed + lengths
    offsets = np.arange(int(spans.sum())) + np.repeat(starts - placed, spans)
    offsets[gaps] = 0
    chars = codes[offsets]
    chars[gaps] = 0
    if np.count_nonzero(chars == 0) == spans.size:
        encoding = "latin-1" if codes.dtype == np.uint8 else "utf-32-le"
        return chars.tobytes().decode(encoding).split("\x00")[:-1]
    return [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


# --- the csv module: everything else, and the errors -------------------------------------------------------
def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its cells) for each record that is not a blank line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    done = 0  # lines read so far
    try:
        for record in reader:
            start, done = done + 1, reader.line_num
            if record:
                yield start, record
    except csv.Error as exc:
        line = reader.line_num
        raise MalformedCSV(
            f"the body is not valid CSV at line {line} ({exc}); quote a cell that holds a comma, a quote or "
            'a line break ("$1,234.50"), and double a quote inside one ("a ""b"" c")',
            errors=[CsvFieldError(None, None, f"not valid CSV: {exc}", line=line)],
        ) from None


def _module_table(text: str, max_rows: int, max_errors: int) -> Table:
    records = _records(text)
    header_line, header = next(records)
    ncols = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    ragged: list[FieldError] = []
    ragged_count = 0
    for line, record in records:
        if len(record) != ncols:
            ragged_count += 1
            if len(ragged) < max_errors:
                reason = f"{len(record)} cell(s) where the header (line {header_line}) has {ncols}"
                ragged.append(CsvFieldError(len(rows), None, reason, line=line))
        rows.append(record)
        lines.append(line)
        if len(rows) > max_rows:
            raise PayloadTooLarge(
                f"more than {max_rows} rows, the limit per request; split the file", max_rows=max_rows
            )
    if ragged:
        first = ragged[0]
        raise BadCsvTable(
            f"{ragged_count} row(s) have a different number of cells than the header; first: line "
            f"{getattr(first, 'line', None)}: {first.reason}; every row needs one cell per header column "
            "(an empty cell for a missing value)",
            errors=ragged,
            error_count=ragged_count,
        )
    regular = all(line == i + header_line + 1 for i, line in enumerate(lines))
    return Table(
        header=header,
        rows=len(rows),
        _cells=lambda j: [record[j] for record in rows],
        lines=None if regular else lines,
        header_line=header_line,
    )
