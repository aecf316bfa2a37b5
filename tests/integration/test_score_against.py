"""`propensity score IN OUT --against URL`: a real `propensity serve` (2 workers) scores the file; the output
is the local scorer's, byte for byte, the rejects the same rows with the same reasons, for CSV, JSON Lines
and Parquet; a service that answers 503 for a while (stopped and started again) loses no row."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from tests.conftest import free_port
from tests.servers import Server, start_server

pytestmark = pytest.mark.slow
PROPENSITY = str(Path(sys.executable).with_name("propensity"))
GOOD: dict[str, Any] = example_rows()["rows"][0]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("against")
    with start_server(root / "artifacts", root) as server:
        yield server, root / "artifacts"


def score(artifacts: Path, src: Path, dst: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [PROPENSITY, "score", str(src), str(dst), "--artifacts-dir", str(artifacts), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def rows_file(tmp_path: Path) -> Path:
    frame = make_synthetic_frame(30_000, 5, target=False)
    frame.insert(0, "customer_id", [f"C{i}" if i % 7 else "" for i in range(len(frame))])
    frame["x44"] = frame["x44"].astype(object)
    for i in range(11, len(frame), 1_001):
        frame.loc[i, "x44"] = "lots"
    frame.loc[5, "x12"] = "12 dollars"
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    text = src.read_bytes().split(b"\n")
    text.insert(100, text[100] + b",extra")  # a ragged record
    src.write_bytes(b"\n".join(text))
    return src


def rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_csv_through_the_service_is_the_local_output(served: tuple[Server, Path], tmp_path: Path) -> None:
    server, artifacts = served
    src = rows_file(tmp_path)
    local = score(artifacts, src, tmp_path / "local.csv")
    remote = score(artifacts, src, tmp_path / "remote.csv", "--against", server.url, "--concurrency", "3")
    assert local.returncode == remote.returncode == 3, remote.stderr
    assert (tmp_path / "remote.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert rejects(tmp_path / "remote.rejects.csv") == rejects(tmp_path / "local.rejects.csv")
    assert len(rejects(tmp_path / "local.rejects.csv")) == 32  # 30 "lots", one bad money, one ragged record
    manifest = orjson.loads((tmp_path / "remote.manifest.json").read_bytes())
    assert manifest["service"]["versions"] == {"v1": manifest["rows"]["scored"]}
    assert manifest["rows"] == orjson.loads((tmp_path / "local.manifest.json").read_bytes())["rows"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_json_lines_and_parquet_through_the_service(
    served: tuple[Server, Path], tmp_path: Path, suffix: str
) -> None:
    server, artifacts = served
    rows = [dict(GOOD, customer_id=f"C{i}") for i in range(2_000)]
    rows[7] = dict(rows[7], x44="lots")
    rows = [{k: (str(v) if v is not None else None) for k, v in r.items()} for r in rows]
    src = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"[1]\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
    local = score(artifacts, src, tmp_path / f"local{suffix}")
    remote = score(artifacts, src, tmp_path / f"remote{suffix}", "--against", server.url)
    assert local.returncode == remote.returncode == 3, remote.stderr
    if suffix == ".jsonl":
        assert (tmp_path / "remote.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    else:
        assert pq.read_table(tmp_path / "remote.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    assert rejects(tmp_path / "remote.rejects.csv") == rejects(tmp_path / "local.rejects.csv")


def test_a_service_that_goes_away_and_comes_back_loses_no_row(tmp_path: Path) -> None:
    """The service is stopped mid-run and started again on the same port: the calls in between fail and
    are retried; every row ends in the output."""
    port = free_port()
    root = tmp_path / "srv"
    root.mkdir()
    server = start_server(root / "artifacts", root, port=port)
    src = rows_file(tmp_path)
    dst = tmp_path / "out.csv"
    argv = [PROPENSITY, "score", str(src), str(dst), "--against", server.url, "--chunk-mb", "0.5"]
    argv += ["--concurrency", "1", "--retries", "12", "--artifacts-dir", str(root / "artifacts")]
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    restarted: list[Server] = []
    midway: list[bool] = []
    partial = dst.with_name(dst.name + ".partial")

    def bounce() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 10**6):
            time.sleep(0.02)
        midway.append(run.poll() is None)  # stopped while the run was still sending
        server.stop()
        time.sleep(1.0)
        restarted.append(start_server(root / "artifacts", root, port=port))

    bouncer = threading.Thread(target=bounce)
    bouncer.start()
    try:
        _, err = run.communicate(timeout=600)
        bouncer.join(timeout=120)
    finally:
        for s in [server, *restarted]:
            s.stop()
    assert run.returncode == 3, err
    local = score(root / "artifacts", src, tmp_path / "local.csv")
    assert local.returncode == 3
    assert dst.read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert restarted and midway == [True], "the service was not stopped and started during the run"
