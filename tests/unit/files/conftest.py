"""What the file scorer's tests share: a request for a path pair, CSV/JSONL writers, /predict in process."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from service.files.formats import kind_of
from service.files.run import ScoreRequest
from service.files.sinks import companion


def request_for(src: Path, dst: Path, **options: Any) -> ScoreRequest:
    return ScoreRequest(
        input=src,
        output=dst,
        input_kind=kind_of(src),
        output_kind=kind_of(dst),
        rejects=companion(dst, "rejects.csv"),
        manifest=companion(dst, "manifest.json"),
        **options,
    )


def cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)


def csv_bytes(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([cell(row.get(c)) for c in columns] for row in rows)
    return out.getvalue().encode()


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def predict(client: TestClient, body: bytes, content_type: str, query: str = "") -> list[dict[str, Any]]:
    r = client.post(f"/predict{query}", content=body, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    answer: list[dict[str, Any]] = r.json()
    return answer


def same_value(file_cell: Any, answer: Any) -> bool:
    """A cell of the output (text in CSV, a value in JSON Lines and Parquet) against /predict's value: floats
    by their bits (float(text) of orjson's shortest text reads back the same double), ints and ids exactly."""
    if answer is None:
        return file_cell in ("", None)
    if isinstance(answer, float):
        value = float(file_cell)
        return value.hex() == answer.hex()
    if isinstance(answer, int):
        return int(file_cell) == answer
    return str(file_cell) == str(answer)
