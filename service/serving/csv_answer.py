"""A scored batch as a CSV answer (text/csv): one header line, then one line per row in the request's order.

The columns are the fields of the JSON answer (service/serving/results.py): the model inputs as the GLM
saw them, `business_outcome`, `phat`, the pass-through ids some row sent; with reason codes asked for,
`reason_<k>_input` and `reason_<k>_contribution` for k = 1, 2, ... (largest |contribution| first); and
always `errors`. The header is in alphabetical order, as the JSON keys are. A number is written as the
JSON answer writes it (orjson: the shortest text that reads back as the same float), so float(cell) has
the bits of the JSON answer's number. A row that could not be scored (the score-valid
policy) has its problems in `errors`, as JSON text, and every other cell empty but its valid ids; the
`errors` cell of every other row is empty. Lines end with CRLF (RFC 4180); a cell that holds a comma, a
quote or a line break is quoted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service.errors import FieldError
from service.serving.batch import ABSENT
from service.serving.reasons import Reasons
from service.serving.scorer import CompiledModel, Scored
from service.serving.turns import no_pause

CSV_ANSWER_TYPE = "text/csv; charset=utf-8"
ERRORS_COLUMN = "errors"
_NEEDS_QUOTES = (",", '"', "\r", "\n")
SLICE_ROWS = 1000  # rows written between two pauses
_EMPTY = orjson.Fragment(b"")


def quoted(cell: str) -> str:
    """The cell as a CSV field: in quotes (a quote doubled) when it holds a comma, a quote or a line break."""
    if any(c in cell for c in _NEEDS_QUOTES):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def text_cell(text: str) -> orjson.Fragment:
    """A text cell as orjson writes it into a line: the CSV field itself, as is."""
    return orjson.Fragment(quoted(text).encode())


def id_cell(value: Any) -> Any:
    """A pass-through id as it was sent: a string as is, a number as the JSON answer writes it, null or
    absent an empty cell."""
    if value is None or value is ABSENT:
        return _EMPTY
    if type(value) is str:
        return text_cell(value)
    return value


def reason_columns(reasons: Reasons) -> dict[str, list[Any]]:
    """reason_<k>_input and reason_<k>_contribution, per row."""
    out: dict[str, list[Any]] = {}
    names = [text_cell(name) for name in reasons.names]
    for j in range(reasons.inputs.shape[1]):
        out[f"reason_{j + 1}_input"] = [names[i] for i in reasons.inputs[:, j].tolist()]
        out[f"reason_{j + 1}_contribution"] = reasons.contributions[:, j].tolist()
    return out


def error_items(errors: list[FieldError], line: int | None) -> list[dict[str, Any]]:
    """A row's problems as JSON objects (keys in alphabetical order), with its CSV line when it had one."""
    items = []
    for e in errors:
        item: dict[str, Any] = {"field": e.field}
        if line is not None:
            item["line"] = line
        item |= {"reason": e.reason, "value": e.value}
        items.append(item)
    return items


def errors_by_row(scored: Scored) -> dict[int, list[FieldError]]:
    by_row: dict[int, list[FieldError]] = {}
    for e in scored.errors:
        by_row.setdefault(e.row or 0, []).append(e)
    return by_row


def _answer_columns(
    model: CompiledModel, scored: Scored, line_of: Callable[[int], int] | None
) -> dict[str, list[Any]]:
    """Column name -> its cells: numbers as they are (orjson writes them as the JSON answer does), text
    as the CSV field it is written as."""
    n = len(scored.phat)
    values: dict[str, list[Any]] = {**scored.columns, "business_outcome": scored.outcome, "phat": scored.phat}
    columns = {name: values[name] for name in model.output_keys}
    if scored.reasons is not None:
        columns |= reason_columns(scored.reasons)
    errors: list[Any] = [_EMPTY] * n
    by_row = errors_by_row(scored) if scored.bad_rows else {}
    if by_row:
        columns = {name: list(cells) for name, cells in columns.items()}  # the scored lists stay as they are
        for cells in columns.values():
            for i in scored.bad_rows:
                cells[i] = _EMPTY
        for i in scored.bad_rows:
            line = None if line_of is None else line_of(i)
            errors[i] = text_cell(orjson.dumps(error_items(by_row.get(i, []), line)).decode())
    columns[ERRORS_COLUMN] = errors
    for name, ids in scored.ids.items():
        cells = list(map(id_cell, ids))
        for i in scored.bad_rows:  # an id that is itself the row's problem is not echoed
            if any(e.field == name for e in by_row.get(i, ())):
                cells[i] = _EMPTY
        columns[name] = cells
    return columns


def encode_csv(
    model: CompiledModel,
    scored: Scored,
    *,
    line_of: Callable[[int], int] | None = None,
    pause: Callable[[], None] = no_pause,
) -> bytes:
    """The CSV answer. `line_of(row)`: the CSV line the row came from (named in its errors), if any.

    Each line is orjson's array of the row's cells without its brackets: numbers in orjson's shortest
    round-trip form (the JSON answer's very text), text cells as orjson.Fragment of their CSV field."""
    columns = _answer_columns(model, scored, line_of)
    header = sorted(columns)
    rows = list(zip(*(columns[h] for h in header), strict=True))
    dumps = orjson.dumps
    lines: list[bytes] = [",".join(map(quoted, header)).encode()]
    for start in range(0, len(rows), SLICE_ROWS):
        if start:
            pause()
        lines += [dumps(row)[1:-1] for row in rows[start : start + SLICE_ROWS]]
    lines.append(b"")
    return b"\r\n".join(lines)
