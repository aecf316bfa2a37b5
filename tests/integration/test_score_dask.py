"""A real Dask cluster of 2 worker processes scores a Parquet dataset of 1,000,000 rows (10 files): every
output row equals the local single-process scorer's, bit for bit, every bad row is a reject numbered among
the whole dataset's rows, and each worker received the model once. `propensity score DATA/ OUT/ --dask
tcp://...` does the same on a cluster started as the docs start one (`dask scheduler`, `dask worker`)."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from service.files.distributed import local_cluster, score_on_cluster
from service.files.formats import kind_of
from service.files.run import ScoreRequest, score_file
from service.model.registry import Registry
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel
from tests.conftest import free_port
from tests.unit.files.conftest import request_for

distributed = pytest.importorskip("distributed")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
FILES = 10
ROWS = 100_000
PROPENSITY = Path(sys.executable).with_name("propensity")


def column(table: pa.Table, name: str, values: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values))


def write_dataset(directory: Path) -> list[Path]:
    """Ten files of 100,000 rows (row groups of 25,000) from one synthetic frame, an id a row, and bad
    values at other rows in each: x12 = "abc" (not money); file 4 has x44 as text (a few "lots"), file 7
    x44 as whole numbers (int64, scored as numbers)."""
    base = pa.Table.from_pandas(make_synthetic_frame(ROWS, 17, target=False), preserve_index=False)
    x12, x44 = base.column("x12").to_pylist(), base.column("x44").to_pylist()
    paths = []
    for k in range(FILES):
        money = list(x12)
        for i in range(k + 1, ROWS, 9_973):
            money[i] = "abc"
        table = column(base, "x12", money)
        if k == 4:
            text = [None if v is None else repr(v) for v in x44]
            table = column(table, "x44", ["lots" if i % 7_919 == 3 else v for i, v in enumerate(text)])
        if k == 7:
            whole = pc.cast(pc.round(pc.multiply(base.column("x44"), 1000)), pa.int64())  # nulls stay null
            table = column(table, "x44", whole.combine_chunks())
        table = table.append_column("customer_id", pa.array([f"f{k}-{i}" for i in range(ROWS)]))
        path = directory / f"part-{k}.parquet"
        pq.write_table(table, path, row_group_size=25_000)
        paths.append(path)
    return paths


def read_rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class Local:
    table: pa.Table
    rejects: list[dict[str, str]]
    seconds: float


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dataset")
    write_dataset(directory)
    return directory


@pytest.fixture(scope="module")
def local(data: Path, approved_compiled: CompiledModel, tmp_path_factory: pytest.TempPathFactory) -> Local:
    """The local scorer, one process, file by file; its rejects renumbered among the whole dataset's rows."""
    work = tmp_path_factory.mktemp("local")
    tables, rejects, seconds = [], [], 0.0
    for k, path in enumerate(sorted(data.glob("*.parquet"))):
        dst = work / f"local-{k}.parquet"
        summary = score_file(approved_compiled, request_for(path, dst))
        assert summary.rejected_rows > 0
        seconds += summary.seconds
        tables.append(pq.read_table(dst))
        rows = read_rejects(work / f"local-{k}.rejects.csv")
        rejects += [dict(r, row=str(int(r["row"]) + k * ROWS)) for r in rows]
    return Local(pa.concat_tables(tables), rejects, seconds)


def assert_same_bits(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name), want.column(name)
        if pa.types.is_floating(a.type):
            assert np.array_equal(a.to_numpy().view(np.uint64), b.to_numpy().view(np.uint64)), name
        else:
            assert a.to_pylist() == b.to_pylist(), name


def read_parts(out: Path) -> pa.Table:
    record = orjson.loads((out / "_manifest.json").read_bytes())
    names = sorted(p.name for p in out.glob("part-*.parquet"))
    assert record["parts"] == names
    return pa.concat_tables([pq.read_table(out / name) for name in names])


def test_a_million_rows_on_two_dask_workers_equal_the_local_scorer(
    data: Path,
    local: Local,
    approved_compiled: CompiledModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    request = ScoreRequest(
        input=data,
        output=out,
        input_kind=kind_of(data / "x.parquet"),
        output_kind=kind_of(Path("part.parquet")),
        rejects=out / "rejects.csv",
        manifest=out / "_manifest.json",
    )
    with local_cluster(2, silence_logs=logging.WARNING) as cluster, distributed.Client(cluster) as client:
        before = dict(client.run(lambda: CompiledModel.received))
        started = time.perf_counter()
        summary = score_on_cluster(cluster.scheduler_address, approved_compiled, request)
        seconds = time.perf_counter() - started
        after = dict(client.run(lambda: CompiledModel.received))
    assert len(after) == 2 and {w: after[w] - before[w] for w in after} == {w: 1 for w in after}
    got = read_parts(out)
    assert len(list(out.glob("part-*.parquet"))) == FILES * 4  # a task a row group: 40 tasks, 2 models sent
    assert summary.rows == FILES * ROWS == got.num_rows + len(local.rejects)
    phat = got.column("phat").to_numpy()
    assert np.array_equal(phat.view(np.uint64), local.table.column("phat").to_numpy().view(np.uint64))
    assert_same_bits(got, local.table)
    assert read_rejects(out / "rejects.csv") == local.rejects
    assert summary.rejected_rows == len({r["row"] for r in local.rejects})
    with capsys.disabled():  # the figures the docs quote: rows / seconds of score_on_cluster, and locally
        print(
            f"\n  score_on_cluster, 2 workers: {summary.rows / seconds:,.0f} rows/s ({seconds:.1f} s); "
            f"local scorer, 1 process: {summary.rows / local.seconds:,.0f} rows/s ({local.seconds:.1f} s)"
        )


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    """A cluster as the docs start one: `dask scheduler`, then `dask worker` with 2 processes of 1 thread,
    every server on 127.0.0.1; its address once both workers have joined."""
    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    local = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    commands = [
        [dask, "scheduler", "--port", port, *local],
        [dask, "worker", address, "--nworkers", "2", "--nthreads", "1", *local],
    ]
    log = (tmp_path / "dask.log").open("wb")
    processes = [subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path) for c in commands]
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def test_the_command_line_scores_the_dataset_on_a_running_cluster(
    data: Path,
    local: Local,
    approved_registry: Registry,
    scheduler: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "scores"
    argv = [str(PROPENSITY), "score", str(data), str(out), "--dask", scheduler]
    artifacts = ["--artifacts-dir", str(approved_registry.root)]
    run = subprocess.run([*argv, *artifacts], capture_output=True, text=True, timeout=240)
    assert run.returncode == 3, run.stderr  # scored, some rows rejected
    assert f"scored {local.table.num_rows:,} of 1,000,000 rows" in run.stdout
    assert f"rejected {len({r['row'] for r in local.rejects}):,} rows" in run.stderr
    record = orjson.loads((out / "_manifest.json").read_bytes())
    assert record["engine"] == {"dask": scheduler, "workers": 2, "threads": 2}
    assert record["model"]["version"] == "v1"
    assert_same_bits(read_parts(out), local.table)
    assert read_rejects(out / "rejects.csv") == local.rejects
    with capsys.disabled():  # its summary line: rows/s of a cluster already running
        print(f"\n  propensity score --dask {scheduler}: {run.stdout.splitlines()[0]}")

    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), bad / "part-0.parquet")
    failed = subprocess.run(
        [str(PROPENSITY), "score", str(bad), str(tmp_path / "none"), "--dask", scheduler, *artifacts],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {bad / 'part-0.parquet'}: ")
    assert not list((tmp_path / "none").glob("*"))
