"""The CSV answer: the JSON answer's fields, header in alphabetical order, numbers that read back as the
JSON answer's bits, ids as sent, reasons as columns, and the rows that cannot be scored named in `errors`."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from service.errors import FieldError
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.batch import JsonBatch
from service.serving.csv_answer import ERRORS_COLUMN, encode_csv, quoted
from service.serving.formats import CsvIn, JsonToCsv
from service.serving.json_rows import JsonRows
from service.serving.passthrough import collect_ids
from service.serving.reasons import top_reasons
from service.serving.results import result_records
from service.serving.scorer import CompiledModel, Scored

ROWS: list[dict[str, Any]] = example_rows()["rows"]
JSON_CODEC = JsonRows(max_rows=10_000, max_errors=100)


def scored_of(model: CompiledModel, rows: list[dict[str, Any]], reasons: int = 0) -> Scored:
    scored = model.score_batch(JsonBatch(rows))
    scored.ids, errors = collect_ids(JsonBatch(rows), model.passthrough, 12)
    scored.errors += errors
    scored.bad_rows |= {e.row for e in errors if e.row is not None}
    if reasons:
        scored.reasons = top_reasons(model, scored, reasons)
    return scored


def read_csv(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    assert data.endswith(b"\r\n")
    reader = csv.DictReader(io.StringIO(data.decode(), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def same_bits(cell: str, value: Any) -> bool:
    if isinstance(value, float):
        return float(cell).hex() == value.hex()
    if isinstance(value, int):
        return int(cell) == value and "." not in cell
    return bool(cell == value)


def test_every_field_of_the_json_answer_with_the_same_bits(approved_compiled: CompiledModel) -> None:
    rows = [dict(r, customer_id=c) for r, c in zip(ROWS, ["A1", 7, 2.5, "x,y", 'say "hi"'], strict=True)]
    scored = scored_of(approved_compiled, rows)
    header, cells = read_csv(encode_csv(approved_compiled, scored))
    records = orjson.loads(orjson.dumps(result_records(approved_compiled, scored)))
    assert header == sorted([*records[0], ERRORS_COLUMN]) == sorted(header)
    for record, line in zip(records, cells, strict=True):
        assert line.pop(ERRORS_COLUMN) == ""
        assert set(line) == set(record)
        for name, value in record.items():
            assert same_bits(line[name], value), (name, line[name], value)


def test_phat_bits_on_many_rows(approved_compiled: CompiledModel) -> None:
    frame = make_synthetic_frame(2_000, 4, target=False)
    rows: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    scored = approved_compiled.score_batch(JsonBatch(rows))
    _, cells = read_csv(encode_csv(approved_compiled, scored))
    assert [float(c["phat"]).hex() for c in cells] == [p.hex() for p in scored.phat]
    assert [int(c["business_outcome"]) for c in cells] == scored.outcome


def test_numbers_are_written_as_the_json_answer_writes_them(approved_compiled: CompiledModel) -> None:
    scored = approved_compiled.score_batch(JsonBatch(ROWS))
    _, cells = read_csv(encode_csv(approved_compiled, scored))
    json_text = JSON_CODEC.encode(approved_compiled, JsonBatch(ROWS), scored).decode()
    for line in cells:
        assert f'"phat":{line["phat"]},' in json_text


@pytest.mark.parametrize("k", [3, 12])
def test_reasons_are_columns(approved_compiled: CompiledModel, k: int) -> None:
    scored = scored_of(approved_compiled, ROWS, reasons=k)
    header, cells = read_csv(encode_csv(approved_compiled, scored))
    assert header == sorted(header)
    for i, line in enumerate(cells):
        got = [(line[f"reason_{j}_input"], float(line[f"reason_{j}_contribution"])) for j in range(1, k + 1)]
        assert got == [(r["input"], r["contribution"]) for r in scored.reasons.row(i)]
    records = orjson.loads(orjson.dumps(result_records(approved_compiled, scored)))
    assert [[r["input"] for r in record["reasons"]] for record in records] == [
        [line[f"reason_{j}_input"] for j in range(1, k + 1)] for line in cells
    ]


def test_rows_that_cannot_be_scored_have_errors_and_no_values(approved_compiled: CompiledModel) -> None:
    rows = [dict(ROWS[0], customer_id="c0"), dict(ROWS[1], x44="lots", customer_id="c1"), dict(ROWS[2])]
    rows.append(dict(ROWS[3], customer_id="much too long an id"))
    scored = scored_of(approved_compiled, rows)
    assert scored.bad_rows == {1, 3}
    _, cells = read_csv(encode_csv(approved_compiled, scored, line_of=lambda i: i + 2))
    assert orjson.loads(cells[1][ERRORS_COLUMN]) == [
        {"field": "x44", "line": 3, "reason": "not a number", "value": "lots"}
    ]
    assert cells[1]["customer_id"] == "c1"  # a valid id still says whose row it is
    assert cells[3]["customer_id"] == ""  # an id that is the row's problem is not echoed
    assert all(v == "" for k, v in cells[1].items() if k not in (ERRORS_COLUMN, "customer_id"))
    assert cells[0][ERRORS_COLUMN] == cells[2][ERRORS_COLUMN] == "" and cells[2]["customer_id"] == ""
    assert float(cells[0]["phat"]) == scored.phat[0]


def test_json_in_and_csv_in_give_the_same_csv(approved_compiled: CompiledModel) -> None:
    data = ",".join(ROWS[0]) + "\n" + "\n".join(",".join(quoted(str(v)) for v in r.values()) for r in ROWS)
    via_csv = CsvIn(max_rows=100, max_errors=10, answer="text/csv")
    batch = via_csv.decode(approved_compiled, data.encode())
    from_csv = via_csv.encode(approved_compiled, batch, approved_compiled.score_batch(batch))
    json_batch = JSON_CODEC.decode(approved_compiled, orjson.dumps(ROWS))
    via_json = JsonToCsv(JSON_CODEC)
    assert (
        via_json.encode(approved_compiled, json_batch, approved_compiled.score_batch(json_batch)) == from_csv
    )


def test_csv_in_json_out_names_the_line_of_a_bad_row(approved_compiled: CompiledModel) -> None:
    codec = CsvIn(max_rows=100, max_errors=10)
    batch = codec.decode(approved_compiled, b"x5,x44\nmonday,1\ntuesday,lots\n")
    scored = approved_compiled.score_batch(batch)
    answer = orjson.loads(codec.encode(approved_compiled, batch, scored))
    assert answer[1] == {
        "errors": [{"field": "x44", "reason": "not a number", "value": "lots"}],
        "line": 3,
        "row": 1,
    }
    assert answer[0]["phat"] == scored.phat[0]


@pytest.mark.parametrize(
    ("cell", "field"),
    [("plain", "plain"), ("a,b", '"a,b"'), ('say "hi"', '"say ""hi"""'), ("two\nlines", '"two\nlines"')],
)
def test_cells_are_quoted_when_they_must_be(cell: str, field: str) -> None:
    assert quoted(cell) == field
    assert next(csv.reader(io.StringIO(field, newline=""))) == [cell]


def test_an_errors_cell_holds_json_text(approved_compiled: CompiledModel) -> None:
    scored = approved_compiled.score_batch(JsonBatch([dict(ROWS[0], x5=3)]))
    scored.errors = [FieldError(0, "x5", 'odd, "quoted"', "3")]
    _, cells = read_csv(encode_csv(approved_compiled, scored))
    assert orjson.loads(cells[0][ERRORS_COLUMN])[0]["reason"] == 'odd, "quoted"'
