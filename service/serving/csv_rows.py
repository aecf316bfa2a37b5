"""CSV bodies (text/csv) as a batch of rows: a header line naming the columns, then one line per row.

A cell reaches the scorer as the very string it would be in a JSON body, so a CSV row scores to the
same bits as the JSON row that holds the same strings: money ("$6,882.34", "($5,032.58)"), percent
("62.59%"), categories in any case or spacing, and every spelling of missing the JSON path reads ("",
"nan", "NaN", "null", "None", ...); an empty cell is missing. Header names are matched exactly, as JSON
keys are (service/serving/row_keys.py): a header without any model column, or with a name that only
resembles one ("X5", " x12") where that column is absent, is a 422 naming the fix; a model column the
header lacks is imputed and named in X-Imputed-Columns; any other column is ignored and named in
X-Unknown-Keys. A name twice in the header is a 422.

Pass-through ids (settings.passthrough_fields) are echoed as the strings they were in the file; an empty
cell is a missing id (the row's result has no such key). Every error names the CSV line (1-based, the
header is line 1) and the column, beside the row's index among the data rows (`CsvFieldError`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, SupportsIndex, overload

from service.errors import FieldError, InputError, UnsupportedMediaType
from service.model.parsing import parse_number, truncate
from service.serving.batch import ABSENT, Batch, Missing
from service.serving.cache import columns_key
from service.serving.csv_table import CELLS_NAMED, BadCsvTable, CsvFieldError, Table, read_table
from service.serving.row_keys import ColumnNames, KeyReport, inspect_rows
from service.serving.scorer import CompiledModel
from service.serving.turns import no_pause

CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv", "text/x-csv"})
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def media_type_of(content_type: str | None) -> tuple[str, dict[str, str]]:
    """(the media type, lower case; its parameters, names lower case)."""
    media, _, rest = (content_type or "").partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            params[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def check_csv_media_type(content_type: str | None) -> None:
    media, params = media_type_of(content_type)
    if media not in CSV_MEDIA_TYPES:
        shown = media or "none"
        raise UnsupportedMediaType(f"Content-Type must be text/csv, got {shown[:60]!r}")
    charset = params.get("charset", "utf-8").lower()
    if charset not in UTF8_CHARSETS:
        raise UnsupportedMediaType(
            f"a CSV body is read as UTF-8, not {charset[:40]!r}; send it as UTF-8 (charset=utf-8)"
        )


class CsvRow:
    """One row, as the few-rows scorer and error echoes read it: `.get(column)` like a JSON object, for
    the model's columns and the pass-through ids (the other cells are never read)."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: Mapping[str, list[str]], i: int) -> None:
        self._columns = columns
        self._i = i

    def get(self, name: str, default: Any = None) -> Any:
        cells = self._columns.get(name)
        return default if cells is None else cells[self._i]


class CsvRows(list[Any]):
    """The rows of a CsvBatch, each made as it is read: the scorer reads rows one at a time only in a
    batch of a few rows, or to echo a value in an error, so a big batch makes none. (The list holds
    None; `len()`, indexing and iteration are what a batch's rows are used for.)"""

    def __init__(self, columns: Mapping[str, list[str]], n: int) -> None:
        super().__init__(repeat(None, n))
        self.columns = columns

    @overload
    def __getitem__(self, i: SupportsIndex) -> CsvRow: ...

    @overload
    def __getitem__(self, i: slice) -> list[CsvRow]: ...

    def __getitem__(self, i: SupportsIndex | slice) -> CsvRow | list[CsvRow]:
        indices = range(len(self))
        if isinstance(i, slice):
            return [CsvRow(self.columns, j) for j in indices[i]]
        return CsvRow(self.columns, indices[i])

    def __iter__(self) -> Iterator[CsvRow]:
        columns = self.columns
        return (CsvRow(columns, i) for i in range(len(self)))


class CsvBatch(Batch):
    """The rows of a CSV body: the cells of the model's columns and of the pass-through ids, column by
    column as the file held them; the header says what every row's keys are."""

    __slots__ = ("_columns", "_numbers", "_report", "table")

    def __init__(self, table: Table, columns: Mapping[str, list[str]], report: KeyReport | None) -> None:
        super().__init__(CsvRows(columns, table.rows))
        self.table = table
        self._columns = columns
        self._numbers = {name: j + 1 for j, name in enumerate(table.header)}
        self._report = report

    def column(self, name: str) -> list[Any]:
        cells = self._columns.get(name)
        return list(cells) if cells is not None else [None] * len(self.rows)

    def passthrough(self, name: str) -> list[Any]:
        cells = self._columns.get(name)
        if cells is None:
            return [ABSENT] * len(self.rows)
        return [ABSENT if cell == "" else cell for cell in cells]

    def inspect_keys(self, names: ColumnNames, missing: Missing | None = None) -> KeyReport | None:
        return self._report  # every row has the header's keys: worked out once, when the body was read

    def normalised_key(self, model_sha: str) -> str:
        """Only the cells of the model's columns and the ids, whatever the file's other columns, column
        order, quoting or line ends: all that the answer depends on (an answer that reports the header's
        unknown or absent columns is not stored)."""
        return columns_key(model_sha, [{name: self._columns[name] for name in sorted(self._columns)}])

    def line_of(self, row: int) -> int:
        return self.table.line_of(row)

    def column_number(self, name: str | None) -> int | None:
        return None if name is None else self._numbers.get(name)

    def located(self, errors: Iterable[FieldError]) -> list[FieldError]:
        """The errors with the CSV line and column of each (those that name them already stay)."""
        return [
            e
            if isinstance(e, CsvFieldError)
            else CsvFieldError(
                e.row,
                e.field,
                e.reason,
                e.value,
                line=None if e.row is None else self.line_of(e.row),
                column=self.column_number(e.field),
            )
            for e in errors
        ]


def read_csv_batch(
    model: CompiledModel, data: bytes, max_rows: int, max_errors: int, pause: Callable[[], None] = no_pause
) -> CsvBatch:
    """A CSV body as the batch `model` scores. 400 for bytes that are not CSV in UTF-8, 413 past
    `max_rows` rows, 422 for a table that cannot be read as rows (see the module's doc)."""
    return csv_batch_of(model, read_table(data, max_rows=max_rows, max_errors=max_errors, pause=pause))


def csv_batch_of(model: CompiledModel, table: Table, batch_type: type[CsvBatch] | None = None) -> CsvBatch:
    """A table's rows as the batch `model` scores (a `batch_type`, CsvBatch unless given): 422 for a header
    that names a column twice, names no model column, or has a name that only resembles one (see the
    module's doc)."""
    header = table.header
    _check_unique(header, table.header_line)
    report = _header_report(header, model.names, table)
    wanted = {*model.used_columns, *model.passthrough}
    columns = _Cells(table, {name: j for j, name in enumerate(header) if name in wanted})
    return (batch_type or CsvBatch)(table, columns, report)


class _Cells(Mapping[str, list[str]]):
    """The cells of the model's columns and the ids, column name -> cells, each column cut out of the
    table when it is first read (a batch whose scorer reads a column another way never cuts it)."""

    def __init__(self, table: Table, numbers: dict[str, int]) -> None:
        self._table = table
        self._numbers = numbers

    def __getitem__(self, name: str) -> list[str]:
        return self._table.cells(self._numbers[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._numbers)

    def __len__(self) -> int:
        return len(self._numbers)


def _check_unique(header: list[str], line: int) -> None:
    twice = [name for name, count in Counter(header).items() if count > 1]
    if not twice:
        return
    errors: list[FieldError] = [
        CsvFieldError(None, truncate(name), "named more than once in the header", line=line, column=j + 1)
        for j, name in enumerate(header)
        if name in twice
    ]
    shown = ", ".join(repr(truncate(name)) for name in twice[:CELLS_NAMED])
    raise BadCsvTable(
        f"the header (line {line}) names {shown} more than once; name each column once",
        errors=errors,
        error_count=len(errors),
    )


def _header_report(header: list[str], names: ColumnNames, table: Table) -> KeyReport | None:
    """What the header's names say for every row (row_keys' rules, applied once); a 422 for a header
    that names no model column or a name that resembles an absent one."""
    if set(header) <= names.known and names.used_set <= set(header):
        return None
    keys = dict.fromkeys(header, "")
    once = inspect_rows([(0, keys)], names)
    if once.errors:
        raise _header_error(header, names, once, table.header_line)
    n = table.rows
    return KeyReport(
        unknown=once.unknown,
        unknown_rows=n if once.unknown else 0,
        imputed={column: n for column in once.imputed},
        imputed_rows=n if once.imputed else 0,
    )


def _header_error(header: list[str], names: ColumnNames, once: KeyReport, line: int) -> InputError:
    numbers = {name: j + 1 for j, name in reversed(list(enumerate(header)))}
    near = [e for e in once.errors if e.field is not None]
    if near:
        errors: list[FieldError] = [
            CsvFieldError(None, e.field, e.reason, line=line, column=numbers.get(e.field or "")) for e in near
        ]
        first = near[0]
        return BadCsvTable(
            f"the header (line {line}) has {len(near)} column name(s) that only resemble a model column; "
            f"first: {first.field!r}: {first.reason}",
            errors=errors,
            error_count=len(errors),
        )
    reason = no_model_column_reason(header, names)
    return BadCsvTable(
        f"line {line} is not a header naming the model's columns: {reason}",
        errors=[CsvFieldError(None, None, reason, line=line)],
    )


def no_model_column_reason(header: Sequence[str], names: ColumnNames) -> str:
    cells = ", ".join(repr(truncate(c)) for c in header[:CELLS_NAMED])
    more = f" and {len(header) - CELLS_NAMED} more" if len(header) > CELLS_NAMED else ""
    return (
        f"it names none of the model's columns (its cells: {cells}{more}){_header_hint(header)}; the first "
        f"line names the columns, for example: {','.join(names.ordered)}"
    )


def _looks_like_a_number(cell: str) -> bool:
    try:
        return parse_number(cell, "money") == parse_number(cell, "money")  # not missing
    except ValueError:
        return False


def _header_hint(header: Sequence[str]) -> str:
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        sep = "semicolons" if ";" in header[0] else "tabs"
        return f"; the columns seem to be separated by {sep}: send them separated by commas"
    if any(_looks_like_a_number(cell) for cell in header):
        return "; it looks like a row of data: a CSV body starts with a header line"
    return ""


def located_error(error: InputError, batch: CsvBatch) -> InputError:
    """The scoring pipeline's 422 for rows that cannot be scored, with the CSV line and column of each
    error (its detail names the first one's line too). Other errors are returned as they are."""
    if not error.errors or all(isinstance(e, CsvFieldError) for e in error.errors):
        return error
    errors = batch.located(error.errors)
    first = errors[0]
    detail = error.detail
    line = getattr(first, "line", None)
    if first.row is not None and line is not None:
        named = f"first: row {first.row}"
        where = f"first: line {line} (row {first.row})"
        detail = detail.replace(named, where, 1) if named in detail else f"{detail}; first on line {line}"
    extra = dict(error.extra)
    if "bad_rows" in extra:
        extra["bad_lines"] = [batch.line_of(i) for i in extra["bad_rows"]]
    located = type(error)(detail, errors=errors, headers=error.headers, **extra)
    return located
