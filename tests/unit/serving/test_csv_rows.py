"""CSV bodies as batches: the same strings reach the scorer as from JSON, so the same bits come out; the
header is judged as JSON keys are; pass-through ids come back as the file's strings; errors name lines."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import orjson
import pytest

from service.errors import FieldError, InputError
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.batch import ABSENT, JsonBatch
from service.serving.csv_rows import CsvBatch, CsvRows, check_csv_media_type, located_error, read_csv_batch
from service.serving.csv_table import BadCsvTable, CsvFieldError, MalformedCSV
from service.serving.formats import CsvIn
from service.serving.json_rows import JsonRows
from service.serving.passthrough import collect_ids
from service.serving.pipeline import rows_error
from service.serving.scorer import CompiledModel

ROWS: list[dict[str, Any]] = example_rows()["rows"]
JSON_CODEC = JsonRows(max_rows=10_000, max_errors=100)


def text_of(value: Any) -> str:
    """A JSON value as a CSV cell: strings as they are, numbers as repr (the same float), null empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None, lineterminator: str = "\n") -> bytes:
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=lineterminator)
    writer.writerow(columns)
    writer.writerows([text_of(row.get(c)) for c in columns] for row in rows)
    return out.getvalue().encode()


def as_strings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: text_of(v) for k, v in row.items()} for row in rows]


def read(model: CompiledModel, data: bytes, max_rows: int = 10_000) -> CsvBatch:
    return read_csv_batch(model, data, max_rows, 100)


def json_answer(model: CompiledModel, rows: list[dict[str, Any]]) -> bytes:
    batch = JSON_CODEC.decode(model, orjson.dumps(rows))
    return JSON_CODEC.encode(model, batch, model.score_batch(batch))


def csv_answer(model: CompiledModel, data: bytes) -> bytes:
    codec = CsvIn(max_rows=10_000, max_errors=100)
    batch = codec.decode(model, data)
    scored = model.score_batch(batch)
    scored.ids, _ = collect_ids(batch, model.passthrough, 128)  # as the pipeline does
    return codec.encode(model, batch, scored)


def bits(values: list[float]) -> list[str]:
    return [v.hex() for v in values]


# --- parity with JSON ------------------------------------------------------------------------------------
def test_reference_rows_give_the_json_answer_bit_for_bit(approved_compiled: CompiledModel) -> None:
    data = to_csv(ROWS)
    assert csv_answer(approved_compiled, data) == json_answer(approved_compiled, ROWS)
    phat = [r["phat"] for r in orjson.loads(csv_answer(approved_compiled, data))]
    assert bits(phat) == bits([r["phat"] for r in orjson.loads(json_answer(approved_compiled, ROWS))])


def test_cells_reach_the_scorer_as_the_same_strings_in_json(approved_compiled: CompiledModel) -> None:
    strings = as_strings(ROWS)
    batch = read(approved_compiled, to_csv(ROWS))
    same = JsonBatch(strings)
    for column in approved_compiled.used_columns:
        assert batch.column(column) == same.column(column), column
    assert csv_answer(approved_compiled, to_csv(ROWS)) == json_answer(approved_compiled, strings)


@pytest.mark.parametrize("lineterminator", ["\n", "\r\n"])
def test_synthetic_rows_as_pandas_writes_them_match_json(
    approved_compiled: CompiledModel, lineterminator: str
) -> None:
    frame = make_synthetic_frame(2_000, 11, target=False)
    rows = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
    data = frame.to_csv(index=False, lineterminator=lineterminator).encode()
    assert b'"$' in data or b'"($' in data  # money with a thousands separator is quoted
    answer = csv_answer(approved_compiled, data)
    assert answer == json_answer(approved_compiled, rows)
    assert len(orjson.loads(answer)) == 2_000


# --- value formats ------------------------------------------------------------------------------------------
MISSING = ["", "nan", "NaN", "NAN", "null", "NULL", "None", "none", " nan ", "Null "]


@pytest.mark.parametrize("spelling", MISSING)
def test_every_missing_spelling_is_missing_as_in_json(
    approved_compiled: CompiledModel, spelling: str
) -> None:
    row = dict(as_strings(ROWS[:1])[0], x44=spelling, x12=spelling, x31=spelling)
    assert csv_answer(approved_compiled, to_csv([row])) == json_answer(approved_compiled, [row])
    missing = dict(row, x44=None, x12=None, x31=None)
    assert csv_answer(approved_compiled, to_csv([row])) == json_answer(approved_compiled, [missing])


@pytest.mark.parametrize(
    "money", ["$1,234.5", "-$5", "$-5", "($5,032.58)", "$6,882.34 ", "1234.5", "$-4446.82"]
)
def test_money_cells_score_as_json_strings(approved_compiled: CompiledModel, money: str) -> None:
    row = dict(as_strings(ROWS[:1])[0], x12=money, x63="12.5%")
    assert csv_answer(approved_compiled, to_csv([row])) == json_answer(approved_compiled, [row])


def test_a_bad_value_is_the_scorers_error_as_in_json(approved_compiled: CompiledModel) -> None:
    rows = [dict(r, x44="lots") if i == 2 else r for i, r in enumerate(as_strings(ROWS))]
    batch = read(approved_compiled, to_csv(rows))
    scored = approved_compiled.score_batch(batch)
    assert scored.errors == approved_compiled.score_batch(JsonBatch(rows)).errors
    assert [(e.row, e.field) for e in scored.errors] == [(2, "x44")]


# --- the header ---------------------------------------------------------------------------------------------
def test_unknown_and_absent_columns_are_reported_for_every_row(approved_compiled: CompiledModel) -> None:
    rows = [{"x5": "monday", "x12": "$5", "note": "a", "y": "1"}, {"x5": "", "x12": "", "note": "", "y": ""}]
    report = read(approved_compiled, to_csv(rows)).inspect_keys(approved_compiled.names)
    json_report = JsonBatch(rows).inspect_keys(approved_compiled.names)
    assert report is not None and json_report is not None
    assert report.headers() == json_report.headers()
    assert list(report.unknown) == ["note", "y"] and report.unknown_rows == 2
    assert report.imputed_rows == 2 and set(report.imputed) == set(approved_compiled.used_columns) - {
        "x5",
        "x12",
    }


def test_a_full_header_reports_nothing(approved_compiled: CompiledModel) -> None:
    assert read(approved_compiled, to_csv(ROWS)).inspect_keys(approved_compiled.names) is None


@pytest.mark.parametrize(
    ("header", "says", "column"),
    [
        ("X5,x12", "resembles 'x5'", 1),
        ("x5, x12", "resembles 'x12'", 2),
        ("x5,x_12", "resembles 'x12'", 2),
    ],
)
def test_a_name_resembling_an_absent_column_is_a_422(
    approved_compiled: CompiledModel, header: str, says: str, column: int
) -> None:
    with pytest.raises(BadCsvTable) as caught:
        read(approved_compiled, f"{header}\nmonday,$5\n".encode())
    error = caught.value.errors[0]
    assert says in error.reason and error.as_dict()["line"] == 1 and error.as_dict()["column"] == column


def test_a_name_resembling_a_present_column_is_only_unknown(approved_compiled: CompiledModel) -> None:
    report = read(approved_compiled, b"x5,X5\nmonday,monday\n").inspect_keys(approved_compiled.names)
    assert report is not None and list(report.unknown) == ["X5"]


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"a,b\n1,2\n", "names none of the model's columns"),
        (b"tuesday,0.98\nmonday,0.5\n", "looks like a row of data"),
        (b"x5;x12\nmonday;$5\n", "separated by semicolons"),
        (b"x5\tx12\nmonday\t$5\n", "separated by tabs"),
    ],
)
def test_a_header_without_model_columns_is_a_422_naming_the_fix(
    approved_compiled: CompiledModel, data: bytes, hint: str
) -> None:
    with pytest.raises(BadCsvTable) as caught:
        read(approved_compiled, data)
    assert hint in caught.value.detail and "x5,x12,x31" in caught.value.detail
    assert caught.value.errors[0].as_dict()["line"] == 1


def test_a_name_twice_in_the_header_is_a_422(approved_compiled: CompiledModel) -> None:
    with pytest.raises(BadCsvTable, match="more than once") as caught:
        read(approved_compiled, b"x5,x12,x5\nmonday,$5,tuesday\n")
    assert [(e.field, e.as_dict()["column"]) for e in caught.value.errors] == [("x5", 1), ("x5", 3)]


# --- pass-through ids, rows, limits -------------------------------------------------------------------------
def test_pass_through_ids_are_the_files_strings(approved_compiled: CompiledModel) -> None:
    rows = [
        dict(r, customer_id=cid) for r, cid in zip(as_strings(ROWS[:3]), ["00123", "", "C,7"], strict=True)
    ]
    batch = read(approved_compiled, to_csv(rows))
    assert batch.passthrough("customer_id") == ["00123", ABSENT, "C,7"]
    assert batch.passthrough("order_id") == [ABSENT] * 3
    answer = orjson.loads(csv_answer(approved_compiled, to_csv(rows)))
    assert [r.get("customer_id") for r in answer] == ["00123", None, "C,7"]
    assert "customer_id" not in answer[1]


def test_rows_are_made_when_read(approved_compiled: CompiledModel) -> None:
    batch = read(approved_compiled, to_csv(ROWS))
    assert isinstance(batch.rows, CsvRows) and len(batch) == len(ROWS)
    assert batch.rows[1].get("x5") == ROWS[1]["x5"] and batch.rows[-1].get("nope") is None
    assert [row.get("x31") for row in batch.rows] == [r["x31"] for r in ROWS]
    assert [row.get("x31") for row in batch.rows[1:3]] == [r["x31"] for r in ROWS[1:3]]
    assert batch.column("x999") == [None] * len(ROWS)  # the scorer reads an absent column as missing

    key = batch.normalised_key("a" * 64)
    reordered = to_csv(ROWS, columns=[*reversed(list(ROWS[0])), "note"], lineterminator="\r\n")
    assert read(approved_compiled, reordered).normalised_key("a" * 64) == key  # the same rows
    other = [dict(r, x44="0.5") for r in ROWS]
    assert read(approved_compiled, to_csv(other)).normalised_key("a" * 64) != key


def test_too_many_rows_is_a_413(approved_compiled: CompiledModel) -> None:
    with pytest.raises(InputError) as caught:
        read(approved_compiled, to_csv(ROWS * 3), max_rows=14)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("TEXT/CSV; charset=UTF-8; header=present", True),
        ("application/csv", True),
        ("text/csv; charset=latin-1", False),
        ("text/plain", False),
        (None, False),
    ],
)
def test_csv_media_types(content_type: str | None, ok: bool) -> None:
    if ok:
        check_csv_media_type(content_type)
    else:
        with pytest.raises(InputError) as caught:
            check_csv_media_type(content_type)
        assert caught.value.status == 415


# --- errors name the line and column ------------------------------------------------------------------------
def test_the_pipelines_422_names_lines_and_columns(approved_compiled: CompiledModel) -> None:
    batch = read(approved_compiled, to_csv(ROWS))
    error = rows_error(
        [FieldError(3, "x44", "not a number", "lots"), FieldError(4, "x5", "bad")], {3, 4}, 5, 100
    )
    located = located_error(error, batch)
    assert [e.as_dict() for e in located.errors] == [
        {"row": 3, "field": "x44", "reason": "not a number", "value": "lots", "line": 5, "column": 45},
        {"row": 4, "field": "x5", "reason": "bad", "line": 6, "column": 6},
    ]
    assert "first: line 5 (row 3), field x44: not a number" in located.detail
    assert located.extra["bad_lines"] == [5, 6] and located.status == 422
    assert located_error(located, batch) is located  # named already


def test_lines_follow_quoted_line_breaks(approved_compiled: CompiledModel) -> None:
    rows = [dict(r, note=f"a\nb{i}") for i, r in enumerate(as_strings(ROWS))]
    batch = read(approved_compiled, to_csv(rows))
    assert [batch.line_of(i) for i in range(5)] == [2, 4, 6, 8, 10]
    assert batch.located([FieldError(1, "x5", "r")]) == [CsvFieldError(1, "x5", "r", line=4, column=6)]


def test_malformed_csv_is_a_400(approved_compiled: CompiledModel) -> None:
    with pytest.raises(MalformedCSV):
        read(approved_compiled, b'x5,x12\n"monday,$5\n')
