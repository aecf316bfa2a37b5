"""CSV files POSTed with real curl to a real gunicorn: answered as JSON and as CSV with the phat bits of
/predict JSON for the same rows, gzip'd too; a bad file is a 4xx naming its line, and no worker dies."""

from __future__ import annotations

import csv
import gzip
import io
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from tests.servers import Server, start_server

ROWS: list[dict[str, Any]] = example_rows()["rows"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("csv-served")
    with start_server(root / "artifacts", root) as srv:  # empty registry: serve imports the approved model
        yield srv


def cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(value)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    """name -> (a CSV file, the same rows as JSON objects)."""
    root = tmp_path_factory.mktemp("csv-files")
    reference = root / "reference.csv"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(ROWS[0]))
    writer.writerows([cell(v) for v in r.values()] for r in ROWS)
    reference.write_text(out.getvalue())
    frame = make_synthetic_frame(2_000, 13, target=False)
    synthetic = root / "synthetic.csv"
    frame.to_csv(synthetic, index=False)  # what pandas writes: quoted money, empty cells for missing values
    rows = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]
    zipped = root / "synthetic.csv.gz"
    zipped.write_bytes(gzip.compress(synthetic.read_bytes()))
    return {"reference": (reference, ROWS), "synthetic": (synthetic, rows), "gzip": (zipped, rows)}


def curl(server: Server, path: Path, *headers: str) -> tuple[int, dict[str, str], bytes]:
    """curl --data-binary @file to /predict: (status, headers in lower case, body)."""
    args = ["curl", "-sS", "-D", "-", "--data-binary", f"@{path}", "-H", "Content-Type: text/csv"]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run([*args, server.url + "/predict"], capture_output=True, check=True, timeout=60)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # curl sends Expect: 100-continue with a big file
        head, _, body = body.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body


def json_phat(server: Server, rows: list[dict[str, Any]]) -> list[str]:
    r = httpx.post(
        server.url + "/predict",
        content=orjson.dumps(rows),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return [row["phat"].hex() for row in r.json()]


@pytest.mark.parametrize("name", ["reference", "synthetic", "gzip"])
def test_curl_csv_answered_as_json(server: Server, files: dict[str, Any], name: str) -> None:
    path, rows = files[name]
    headers = ["Content-Encoding: gzip"] if name == "gzip" else []
    status, head, body = curl(server, path, *headers)
    assert status == 200, body[:500]
    assert head["content-type"] == "application/json" and head["x-model-version"] == "v1"
    assert [row["phat"].hex() for row in orjson.loads(body)] == json_phat(server, rows)


@pytest.mark.parametrize("name", ["reference", "synthetic", "gzip"])
def test_curl_csv_answered_as_csv(server: Server, files: dict[str, Any], name: str) -> None:
    path, rows = files[name]
    headers = ["Accept: text/csv", *(["Content-Encoding: gzip"] if name == "gzip" else [])]
    status, head, body = curl(server, path, *headers)
    assert status == 200, body[:500]
    assert head["content-type"] == "text/csv; charset=utf-8"
    answer = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    assert [float(row["phat"]).hex() for row in answer] == json_phat(server, rows)
    assert all(row["errors"] == "" for row in answer)


def test_a_bad_file_is_a_422_naming_its_line_and_no_worker_dies(server: Server, tmp_path: Path) -> None:
    before = server.worker_pids()
    bad = tmp_path / "bad.csv"
    bad.write_text('x5,x12,x44\nmonday,"$1,234.5",0.5\ntuesday,$5,lots\n')
    status, head, body = curl(server, bad)
    assert status == 422 and head["content-type"] == "application/problem+json"
    problem = orjson.loads(body)
    assert problem["errors"] == [
        {"row": 1, "field": "x44", "reason": "not a number", "value": "lots", "line": 3, "column": 3}
    ]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("x5,x12\nmonday,$5\ntuesday\n")
    status, _, body = curl(server, ragged, "Accept: text/csv")
    assert status == 422 and orjson.loads(body)["errors"][0]["line"] == 3
    status, _, body = curl(server, ragged, "Accept: application/xml")
    assert status == 406
    assert server.worker_pids() == before and server.process.poll() is None
