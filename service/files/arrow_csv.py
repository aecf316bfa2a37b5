"""A CSV chunk read by pyarrow's tokenizer: only the columns the model and the ids read are kept, as
Arrow strings, and the model's columns are parsed by Arrow's kernels (service/files/arrow_columns.py).

It reads only what it reads exactly as the /predict CSV door's fast path would (service/serving/csv_table.py:
the same cells, the same rows on the same lines), and says so before any row is scored; any other chunk
gives None and is read the door's way, which reads it or names its bad records. Taken here:

- a header of one line, without quotes, of two columns or more (after a UTF-8 byte order mark);
- a body that is UTF-8, whose quotes come in pairs that each wrap a whole cell (`quotes_wrap_cells`), and
  whose every CR is the first half of a CRLF;
- every record as many cells as the header (pyarrow refuses any other: ArrowInvalid) and one line each:
  as many records as line ends, so no blank line (the door's fast path refuses those too) and no quoted
  line break; row i is then on line `first_line + i`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from service.files.arrow_columns import parse_categories, parse_numbers
from service.files.sources import TextChunk, count_byte
from service.serving.csv_rows import CsvBatch
from service.serving.csv_table import BOM, Table, quotes_wrap_cells

_QUOTE, _LF, _CR = 34, 10, 13
_PARSE = pcsv.ParseOptions(newlines_in_values=True)  # a quoted line break is counted, below, not guessed


class ArrowTable(Table):
    """A Table whose kept columns are Arrow string arrays (column number -> array); a column's cells are
    made Python strings only when something reads them so (ids, an error's echo)."""

    def __init__(self, header: list[str], arrays: dict[int, pa.Array]) -> None:
        rows = len(next(iter(arrays.values()))) if arrays else 0
        super().__init__(header=header, rows=rows, _cells=self._strings)
        self.arrays = arrays
        self.numbers = {name: j for j, name in enumerate(header)}

    def _strings(self, j: int) -> list[str]:
        return self.arrays[j].to_pylist()

    def array(self, name: str) -> pa.Array | None:
        j = self.numbers.get(name)
        return None if j is None else self.arrays.get(j)


class ArrowCsvBatch(CsvBatch):
    """A CsvBatch whose model columns are parsed from their Arrow arrays."""

    __slots__ = ()
    table: ArrowTable

    def parsed_numbers(self, name: str, fmt: str) -> Any:
        raw = self.table.array(name)
        return None if raw is None else parse_numbers(raw, fmt)

    def parsed_categories(self, name: str, lookup: dict[str, int]) -> Any:
        raw = self.table.array(name)
        return None if raw is None else parse_categories(raw, lookup)


def header_names(header: bytes) -> list[str] | None:
    """The header's cells, when it is one line without quotes or a stray CR, of two cells or more."""
    if header.count(b"\n") != 1 or not header.endswith(b"\n") or b'"' in header:
        return None
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.removeprefix(BOM).removesuffix("\n").removesuffix("\r")
    names = text.split(",")
    return None if "\r" in text or len(names) < 2 else names


def _body_is_plain(body: bytes) -> bool:
    """UTF-8, quotes wrapping whole cells, CR only before LF."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
    codes = np.frombuffer(body, dtype=np.uint8)
    if b'"' in body and not quotes_wrap_cells(codes, np.flatnonzero(codes == _QUOTE), 0):
        return False
    if b"\r" in body:
        crs = np.flatnonzero(codes == _CR)
        if crs[-1] == codes.size - 1 or not (codes[crs + 1] == _LF).all():
            return False
    return True


def read_arrow_chunk(chunk: TextChunk, wanted: set[str]) -> ArrowTable | None:
    """The chunk's rows with the `wanted` columns (those its header has) as Arrow strings; None when the
    chunk is not one this reading reads exactly as the door does (see the module's doc)."""
    names = header_names(chunk.header)
    if names is None or chunk.header_lines != 1:
        return None
    body = chunk.body
    if not body or not _body_is_plain(body):
        return None
    keep = [j for j, name in enumerate(names) if name in wanted]
    columns = [f"c{j}" for j in range(len(names))]
    try:
        table = pcsv.read_csv(
            pa.py_buffer(body),
            read_options=pcsv.ReadOptions(column_names=columns, use_threads=False, block_size=len(body) + 1),
            parse_options=_PARSE,
            convert_options=pcsv.ConvertOptions(
                include_columns=[columns[j] for j in keep],
                column_types={columns[j]: pa.string() for j in keep},
                strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:  # a record with more or fewer cells than the header, most likely
        return None
    line_ends = count_byte(body, _LF)
    if table.num_rows != line_ends + (0 if body.endswith(b"\n") else 1) or not keep:
        return None  # a blank line or a quoted line break: the door's reading counts the lines
    arrays = {j: table.column(columns[j]).combine_chunks() for j in keep}
    return ArrowTable(names, arrays)
