"""`propensity score DATA/ OUT/ --dask local:2`: a real Dask cluster of 2 worker processes scores a Parquet
dataset of 1,000,000 rows; every row equals the local scorer's, bit for bit, and every bad row is a reject
named by its row among the whole dataset's."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.files.run import score_file
from service.model.registry import Registry
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel
from tests.unit.files.conftest import request_for

pytestmark = pytest.mark.slow
FILES = 10
ROWS = 100_000
PROPENSITY = Path(sys.executable).with_name("propensity")


def dataset(directory: Path) -> list[Path]:
    """Ten files of 100,000 rows (row groups of 25,000); a few bad values in each, at other rows."""
    frame = make_synthetic_frame(ROWS, 17, target=False)
    base = pa.Table.from_pandas(frame, preserve_index=False)
    x44 = base.column("x44").to_pylist()
    paths = []
    for k in range(FILES):
        values = [str(v) for v in x44]
        for i in range(k + 1, ROWS, 9_973):
            values[i] = "lots"
        table = base.set_column(base.schema.get_field_index("x44"), "x44", pa.array(values))
        table = table.append_column("customer_id", pa.array([f"f{k}-{i}" for i in range(ROWS)]))
        path = directory / f"part-{k}.parquet"
        pq.write_table(table, path, row_group_size=25_000)
        paths.append(path)
    return paths


def rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_million_rows_on_two_dask_workers(
    approved_registry: Registry, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    files = dataset(data)
    out = tmp_path / "out"
    run = subprocess.run(
        [
            str(PROPENSITY),
            "score",
            str(data),
            str(out),
            "--dask",
            "local:2",
            "--artifacts-dir",
            str(approved_registry.root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 3, run.stderr  # scored, some rows rejected
    assert "scored 999," in run.stdout and "of 1,000,000 rows" in run.stdout
    manifest = orjson.loads((out / "_manifest.json").read_bytes())
    assert manifest["engine"]["workers"] == 2 and manifest["model"]["version"] == "v1"
    parts = [out / name for name in manifest["parts"]]
    assert len(parts) == FILES * 4  # a piece a row group: each read by the worker that scored it
    got = pa.concat_tables([pq.read_table(p) for p in parts])

    want_tables, want_rejects = [], []
    for k, path in enumerate(files):  # the local scorer, one process, file by file
        dst = tmp_path / f"local-{k}.parquet"
        summary = score_file(approved_compiled, request_for(path, dst))
        want_tables.append(pq.read_table(dst))
        want_rejects += [
            dict(r, row=str(int(r["row"]) + k * ROWS)) for r in rejects(tmp_path / f"local-{k}.rejects.csv")
        ]
        assert summary.rejected_rows > 0
    want = pa.concat_tables(want_tables)
    assert got.num_rows == want.num_rows == manifest["rows"]["scored"]
    assert got.num_rows + len(want_rejects) == FILES * ROWS == manifest["rows"]["read"]
    phat = got.column("phat").to_numpy()
    assert np.array_equal(phat.view(np.uint64), want.column("phat").to_numpy().view(np.uint64))
    assert got.equals(want)
    assert rejects(out / "rejects.csv") == want_rejects
