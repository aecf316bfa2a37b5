"""The file scorer's output is /predict's answer for the same rows, bit for bit: the reference rows, 100,000
synthetic rows, and every kind of bad row (which goes to the rejects file with /predict's reason)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from service.files.run import score_file
from service.model.registry import Registry
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel
from tests.conftest import app_client
from tests.unit.files.conftest import (
    csv_bytes,
    jsonl_bytes,
    predict,
    read_csv_rows,
    request_for,
    same_value,
)

ROWS: list[dict[str, Any]] = [dict(row, customer_id=f"c-{i}") for i, row in enumerate(example_rows()["rows"])]


@pytest.fixture(scope="module")
def lenient(approved_registry: Registry) -> Iterator[TestClient]:
    """/predict answering a batch with bad rows: the good ones scored, each bad one with its errors."""
    with app_client(approved_registry, batch_error_policy="score-valid") as client:
        yield client


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        keys = set(w) - {"customer_id"} if "customer_id" not in g else set(w)
        assert {k for k in g if g[k] not in ("", None)} >= keys - {k for k in w if w[k] is None}, i
        for key in keys:
            assert same_value(g[key], w[key]), (i, key, g[key], w[key])


def test_reference_rows_as_csv(approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path) -> None:
    body = csv_bytes(ROWS)
    (tmp_path / "in.csv").write_bytes(body)
    summary = score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "out.csv"))
    assert (summary.rows, summary.scored, summary.rejected_rows) == (len(ROWS), len(ROWS), 0)
    assert_rows_equal(read_csv_rows(tmp_path / "out.csv"), predict(lenient, body, "text/csv"))
    assert not (tmp_path / "out.rejects.csv").exists()


def test_reference_rows_as_json_lines_are_the_answers_records(
    approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(ROWS))
    score_file(approved_compiled, request_for(tmp_path / "in.jsonl", tmp_path / "out.jsonl"))
    answer = lenient.post(
        "/predict", content=orjson.dumps(ROWS), headers={"content-type": "application/json"}
    )
    want = b"".join(orjson.dumps(record) + b"\n" for record in orjson.loads(answer.content))
    assert (tmp_path / "out.jsonl").read_bytes() == want  # the very bytes of each answered record


def typed_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with one type a column, as a Parquet column has: a column of numbers and strings as text."""
    mixed = {k for k in rows[0] if len({type(r[k]) for r in rows if r[k] is not None}) > 1}
    return [{k: repr(v) if k in mixed and isinstance(v, float) else v for k, v in r.items()} for r in rows]


def test_reference_rows_as_parquet(
    approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path
) -> None:
    rows = typed_columns(ROWS)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    score_file(approved_compiled, request_for(tmp_path / "in.parquet", tmp_path / "out.parquet"))
    table = pq.read_table(tmp_path / "out.parquet")
    assert_rows_equal(table.to_pylist(), predict(lenient, orjson.dumps(rows), "application/json"))
    metadata = table.schema.metadata
    assert metadata[b"propensity.model_version"] == b"v1"
    assert metadata[b"propensity.model_sha256"].decode() == approved_compiled.sha256


def test_gzipped_csv_in_and_out(approved_compiled: CompiledModel, tmp_path: Path) -> None:
    body = csv_bytes(ROWS * 50)
    (tmp_path / "in.csv").write_bytes(body)
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(body))
    score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "out.csv", chunk_bytes=4096))
    score_file(
        approved_compiled, request_for(tmp_path / "in.csv.gz", tmp_path / "out.csv.gz", chunk_bytes=4096)
    )
    plain = (tmp_path / "out.csv").read_bytes()
    assert gzip.decompress((tmp_path / "out.csv.gz").read_bytes()) == plain  # one gzip member per chunk
    assert plain.count(b"\r\n") == len(ROWS) * 50 + 1


def test_100000_synthetic_rows_in_worker_processes(
    approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path
) -> None:
    frame = make_synthetic_frame(100_000, 26, target=False)
    frame.insert(0, "customer_id", [f"id{i}" for i in range(len(frame))])
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    summary = score_file(
        approved_compiled, request_for(src, tmp_path / "out.csv", workers=2, chunk_bytes=2 * 2**20)
    )
    assert (summary.rows, summary.scored) == (100_000, 100_000)
    got = read_csv_rows(tmp_path / "out.csv")
    lines = src.read_bytes().split(b"\n")
    header = lines[0] + b"\n"
    for start in range(0, 100_000, 10_000):
        body = header + b"\n".join(lines[1 + start : 1 + start + 10_000])
        assert_rows_equal(got[start : start + 10_000], predict(lenient, body, "text/csv"))


def test_reason_codes_are_the_answers(
    approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(ROWS))
    score_file(approved_compiled, request_for(tmp_path / "in.jsonl", tmp_path / "out.jsonl", reasons=3))
    (tmp_path / "in.csv").write_bytes(csv_bytes(ROWS))
    score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "out.csv", reasons=3))
    answer = predict(lenient, orjson.dumps(ROWS), "application/json", "?reasons=3")
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == answer
    for row, want in zip(read_csv_rows(tmp_path / "out.csv"), answer, strict=True):
        for k, reason in enumerate(want["reasons"], start=1):
            assert row[f"reason_{k}_input"] == reason["input"]
            assert same_value(row[f"reason_{k}_contribution"], reason["contribution"])


# --- bad rows -------------------------------------------------------------------------------------------
GOOD = ROWS[0]
VALUE_PROBLEMS: list[dict[str, Any]] = [
    {"x12": "$12,34,5.00"},  # money that is not money
    {"x44": "lots"},  # not a number
    {"x5": "someday"},  # a weekday the model has not seen (scored as missing unless rejected)
    {"x44": 1e308},  # past the range the model can score
    {"customer_id": "x" * 400},  # an id longer than the service echoes
]


def test_every_bad_value_is_rejected_with_the_answers_reason(
    approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path
) -> None:
    rows = [GOOD, *(dict(GOOD, **bad) for bad in VALUE_PROBLEMS), GOOD]
    body = csv_bytes(rows)
    (tmp_path / "in.csv").write_bytes(body)
    summary = score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "out.csv"))
    answer = predict(lenient, body, "text/csv")
    bad = [a for a in answer if "errors" in a]
    rejects = read_csv_rows(tmp_path / "out.rejects.csv")
    assert summary.rejected_rows == len(bad) == len({r["row"] for r in rejects})
    want = [
        (a["row"], a["line"], e["field"], e["reason"], e.get("value") or "") for a in bad for e in a["errors"]
    ]
    got = [(int(r["row"]), int(r["line"]), r["field"], r["reason"], r["value"]) for r in rejects]
    assert got == want
    scored = read_csv_rows(tmp_path / "out.csv")
    assert len(scored) + summary.rejected_rows == len(rows)  # nothing dropped
    assert_rows_equal(scored, [a for a in answer if "errors" not in a])


def test_unseen_categories_rejected_when_the_policy_says_so(
    approved_compiled: CompiledModel, approved_registry: Registry, tmp_path: Path
) -> None:
    rows = [GOOD, dict(GOOD, x5="someday")]
    (tmp_path / "in.csv").write_bytes(csv_bytes(rows))
    impute = score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "a.csv"))
    assert (impute.scored, impute.unseen) == (2, {"x5": 1})
    strict = score_file(
        approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "b.csv", reject_unseen=True)
    )
    with app_client(
        approved_registry, batch_error_policy="score-valid", unseen_category_policy="reject"
    ) as c:
        answer = predict(c, csv_bytes(rows), "text/csv")
    (reject,) = read_csv_rows(tmp_path / "b.rejects.csv")
    assert strict.scored == 1 and (reject["field"], reject["reason"]) == (
        answer[1]["errors"][0]["field"],
        answer[1]["errors"][0]["reason"],
    )


def test_records_that_are_not_rows_are_rejected_by_line(
    approved_compiled: CompiledModel, lenient: TestClient, tmp_path: Path
) -> None:
    """A ragged record, bytes that are not UTF-8, a record that is not CSV, a blank line (no record): each
    named by its line; every other row scored as in a body without them."""
    body = csv_bytes([GOOD, GOOD, GOOD, GOOD])
    header, r1, r2, r3, r4, _ = body.split(b"\r\n")
    ragged = r1 + b",extra"
    not_utf8 = r2.replace(b"friday", b"fr\xffday") if b"friday" in r2 else r2 + b"\xff"
    not_csv = b'"a"b,' + r3.split(b",", 1)[1]
    text = b"\r\n".join([header, ragged, r1, not_utf8, b"", not_csv, r4, b""])
    (tmp_path / "in.csv").write_bytes(text)
    summary = score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "out.csv"))
    rejects = read_csv_rows(tmp_path / "out.rejects.csv")
    assert [(r["row"], r["line"]) for r in rejects] == [("0", "2"), ("2", "4"), ("3", "6")]
    ragged_answer = lenient.post(
        "/predict", content=header + b"\r\n" + ragged, headers={"content-type": "text/csv"}
    )
    assert ragged_answer.json()["errors"][0]["reason"] == rejects[0]["reason"]
    assert "not UTF-8" in rejects[1]["reason"] and "not valid CSV" in rejects[2]["reason"]
    assert (summary.rows, summary.scored, summary.rejected_rows) == (5, 2, 3)
    assert_rows_equal(
        read_csv_rows(tmp_path / "out.csv"), predict(lenient, b"\r\n".join([header, r1, r4]), "text/csv")
    )


def test_json_lines_that_are_not_objects_are_rejected(
    approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    text = jsonl_bytes([GOOD]) + b"[1, 2]\n{not json\n\n" + jsonl_bytes([GOOD])
    (tmp_path / "in.jsonl").write_bytes(text)
    summary = score_file(approved_compiled, request_for(tmp_path / "in.jsonl", tmp_path / "out.jsonl"))
    rejects = read_csv_rows(tmp_path / "out.rejects.csv")
    assert [(r["row"], r["line"]) for r in rejects] == [("1", "2"), ("2", "3")]
    assert "one JSON object" in rejects[0]["reason"] and "not JSON" in rejects[1]["reason"]
    assert (summary.rows, summary.scored) == (4, 2)
