"""/predict with CSV bodies and CSV answers, in process: the JSON answer's bits, negotiation, errors that
name the CSV line and column, headers, gzip'd bodies and the cache."""

from __future__ import annotations

import csv
import gzip
import io
from typing import Any

import orjson
from fastapi.testclient import TestClient

from service.model.registry import Registry
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from tests.conftest import app_client

ROWS: list[dict[str, Any]] = example_rows()["rows"]
CSV_TYPE = {"content-type": "text/csv"}
CSV_ANSWER = "text/csv; charset=utf-8"


def cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    return out.getvalue().encode()


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def predict_json(client: TestClient, rows: Any) -> Any:
    r = client.post("/predict", content=orjson.dumps(rows), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    return r


def test_csv_in_is_answered_like_json_in(client: TestClient) -> None:
    r = client.post("/predict", content=to_csv(ROWS), headers=CSV_TYPE)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == predict_json(client, ROWS).content  # the same bytes: the same bits
    assert r.headers["x-model-version"] == "v1"


def test_csv_answers_have_the_json_answers_bits(client: TestClient) -> None:
    want = predict_json(client, ROWS).json()
    for content, content_type in ((to_csv(ROWS), "text/csv"), (orjson.dumps(ROWS), "application/json")):
        r = client.post(
            "/predict", content=content, headers={"content-type": content_type, "accept": "text/csv"}
        )
        assert r.status_code == 200 and r.headers["content-type"] == CSV_ANSWER
        got = csv_rows(r.text)
        assert [float(g["phat"]).hex() for g in got] == [w["phat"].hex() for w in want]
        assert [{k: v for k, v in g.items() if k != "errors"} for g in got] == [
            {k: str(v) if isinstance(v, int) else repr(v) for k, v in w.items()} for w in want
        ]


def test_negotiation_errors_are_problems(client: TestClient) -> None:
    r = client.post("/predict", content=to_csv(ROWS), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.headers["content-type"] == "application/problem+json"
    assert "text/csv" in r.json()["detail"] and "application/json" in r.json()["detail"]
    r = client.post("/predict", content=to_csv(ROWS), headers={**CSV_TYPE, "accept": "application/xml"})
    assert r.status_code == 406 and r.json()["type"].endswith("/not-acceptable")


def test_a_bad_cell_is_a_422_naming_its_line_and_column(client: TestClient) -> None:
    rows = [dict(r, x44="lots") if i == 3 else r for i, r in enumerate(ROWS)]
    r = client.post("/predict", content=to_csv(rows), headers=CSV_TYPE)
    assert r.status_code == 422
    problem = r.json()
    assert problem["errors"] == [
        {"row": 3, "field": "x44", "reason": "not a number", "value": "lots", "line": 5, "column": 45}
    ]
    assert "first: line 5 (row 3), field x44" in problem["detail"] and problem["bad_lines"] == [5]


def test_header_and_table_errors(client: TestClient) -> None:
    cases = [
        (b"x5,x12\nmonday,$5\ntuesday\n", 422, "bad-csv-table", 3),
        (b"X5,x12\nmonday,$5\n", 422, "bad-csv-table", 1),
        (b'x5,x12\nmonday,"$5\n', 400, "malformed-csv", None),
        (b"x5,x12\n", 422, "bad-csv-table", 1),
        (b"", 400, "malformed-csv", None),
        (b"x5,x12\n\xff,1\n", 400, "malformed-csv", 2),
    ]
    for body, status, kind, line in cases:
        r = client.post("/predict", content=body, headers=CSV_TYPE)
        assert (r.status_code, r.json()["type"].rsplit("/", 1)[1]) == (status, kind), body
        if line is not None:
            assert r.json()["errors"][0]["line"] == line, body


def test_unknown_and_absent_columns_are_named_in_headers(client: TestClient) -> None:
    r = client.post("/predict", content=b'x5,x12,note\nmonday,"$1,234.5",a\ntuesday,,b\n', headers=CSV_TYPE)
    assert r.status_code == 200
    assert r.headers["x-unknown-keys"] == "1; note"
    assert r.headers["x-imputed-columns"].startswith("2; x31=2,x44=2")
    json_rows = [{"x5": "monday", "x12": "$1,234.5", "note": "a"}, {"x5": "tuesday", "x12": "", "note": "b"}]
    assert r.content == predict_json(client, json_rows).content


def test_pass_through_ids_come_back_as_the_files_strings(client: TestClient) -> None:
    rows = [dict(r, customer_id=f"00{i}") for i, r in enumerate(ROWS)]
    r = client.post("/predict", content=to_csv(rows), headers={**CSV_TYPE, "accept": "text/csv"})
    assert [g["customer_id"] for g in csv_rows(r.text)] == ["000", "001", "002", "003", "004"]
    r = client.post("/predict", content=to_csv(rows), headers=CSV_TYPE)
    assert [g["customer_id"] for g in r.json()] == ["000", "001", "002", "003", "004"]


def test_reason_codes_as_columns(client: TestClient) -> None:
    want = client.post(
        "/predict?reasons=2", content=orjson.dumps(ROWS), headers={"content-type": "application/json"}
    )
    r = client.post("/predict?reasons=2", content=to_csv(ROWS), headers={**CSV_TYPE, "accept": "text/csv"})
    got = csv_rows(r.text)
    for g, w in zip(got, want.json(), strict=True):
        assert [(g[f"reason_{k}_input"], float(g[f"reason_{k}_contribution"])) for k in (1, 2)] == [
            (x["input"], x["contribution"]) for x in w["reasons"]
        ]


def test_score_valid_rows_name_their_line(approved_registry: Registry) -> None:
    rows = [dict(r, x44="lots") if i == 1 else r for i, r in enumerate(ROWS)]
    with app_client(approved_registry, batch_error_policy="score-valid") as client:
        as_json = client.post("/predict", content=to_csv(rows), headers=CSV_TYPE)
        as_csv = client.post("/predict", content=to_csv(rows), headers={**CSV_TYPE, "accept": "text/csv"})
    assert as_json.headers["x-rejected-rows"] == as_csv.headers["x-rejected-rows"] == "1"
    assert as_json.json()[1] == {
        "errors": [{"field": "x44", "reason": "not a number", "value": "lots"}],
        "line": 3,
        "row": 1,
    }
    got = csv_rows(as_csv.text)
    assert orjson.loads(got[1]["errors"]) == [
        {"field": "x44", "line": 3, "reason": "not a number", "value": "lots"}
    ]
    assert (
        got[1]["phat"] == "" and got[0]["errors"] == "" and float(got[0]["phat"]) == as_json.json()[0]["phat"]
    )


def test_gzip_csv_bodies_and_the_cache_keep_formats_apart(approved_registry: Registry) -> None:
    frame = make_synthetic_frame(400, 8, target=False)
    data = frame.to_csv(index=False).encode()  # above the cache's minimum body size
    assert len(data) > 64 * 1024
    with app_client(approved_registry) as client:
        first = client.post("/predict", content=data, headers=CSV_TYPE)
        again = client.post("/predict", content=data, headers=CSV_TYPE)
        as_csv = client.post("/predict", content=data, headers={**CSV_TYPE, "accept": "text/csv"})
        zipped = client.post(
            "/predict", content=gzip.compress(data), headers={**CSV_TYPE, "content-encoding": "gzip"}
        )
    assert first.status_code == 200 and "x-cache" not in first.headers
    assert again.headers["x-cache"] == "hit" and again.content == first.content
    assert as_csv.headers.get("x-cache") != "hit" and as_csv.headers["content-type"] == CSV_ANSWER
    assert [float(g["phat"]) for g in csv_rows(as_csv.text)] == [r["phat"] for r in first.json()]
    assert zipped.status_code == 200 and zipped.json() == first.json()
