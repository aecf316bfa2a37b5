"""The file scorer on a Dask cluster (2 worker processes on 127.0.0.1): the local scorer's output bit for bit
(Parquet columns by their bits, CSV and JSON Lines by their bytes), rejects numbered among the whole
input's rows, the model sent to each worker once, and a directory that holds one whole run."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.errors import InputError
from service.files import distributed as engine
from service.files.distributed import ClusterError, ParquetPiece, score_on_cluster
from service.files.formats import kind_of
from service.files.run import ScoreRequest, score_file
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel
from tests.conftest import free_port
from tests.unit.files.conftest import csv_bytes, jsonl_bytes, read_csv_rows, request_for

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with engine.local_cluster(2, silence_logs=logging.WARNING) as local:
        yield local


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as c:
        yield c


def into_parts(src: Path, out: Path, fmt: str = "parquet", **options: Any) -> ScoreRequest:
    """A request as `propensity score SRC OUT --dask ...` makes it: OUT a directory of parts."""
    return ScoreRequest(
        input=src,
        output=out,
        input_kind=kind_of(src if src.is_file() else src / "x.parquet"),
        output_kind=kind_of(Path(f"part.{fmt}")),
        rejects=out / "rejects.csv",
        manifest=out / "_manifest.json",
        **options,
    )


def rows_table(n: int, seed: int, bad_every: int = 211) -> pa.Table:
    """Synthetic rows as typed columns, an id each, and x12 = "abc" (not money: a reject) now and then."""
    table = pa.Table.from_pandas(make_synthetic_frame(n, seed, target=False), preserve_index=False)
    x12 = table.column("x12").to_pylist()
    for i in range(5, n, bad_every) if bad_every else ():
        x12[i] = "abc"
    table = table.set_column(table.schema.get_field_index("x12"), "x12", pa.array(x12))
    return table.append_column("customer_id", pa.array([f"c{seed}-{i}" for i in range(n)]))


def received(client: Any) -> dict[str, int]:
    """How many models each worker process has unpickled (CompiledModel.__setstate__ counts them)."""
    return dict(client.run(lambda: CompiledModel.received))


def assert_same_bits(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name), want.column(name)
        if pa.types.is_floating(a.type):
            assert np.array_equal(a.to_numpy().view(np.uint64), b.to_numpy().view(np.uint64)), name
        else:
            assert a.to_pylist() == b.to_pylist(), name


def parts_of(out: Path, suffix: str) -> list[Path]:
    return sorted(out.glob(f"part-*{suffix}"))


def dataset(directory: Path, tables: list[pa.Table], row_group_size: int) -> Path:
    directory.mkdir()
    for k, table in enumerate(tables):
        pq.write_table(table, directory / f"f{k}.parquet", row_group_size=row_group_size)
    return directory


def test_a_parquet_dataset_scores_as_the_local_scorer(
    cluster: Any, client: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    tables = [rows_table(1000, seed) for seed in (1, 2, 3)]
    data = dataset(tmp_path / "data", tables, 250)  # row groups of 250: pieces of two
    pq.write_table(pa.concat_tables(tables), tmp_path / "all.parquet")
    local = score_file(approved_compiled, request_for(tmp_path / "all.parquet", tmp_path / "local.parquet"))
    before = received(client)
    out = tmp_path / "out"
    summary = score_on_cluster(
        cluster.scheduler_address, approved_compiled, into_parts(data, out, chunk_bytes=100_000)
    )
    after = received(client)
    parts = parts_of(out, ".parquet")
    assert len(parts) == 6  # more tasks than workers, and still one model a worker:
    assert {w: after[w] - before[w] for w in after} == dict.fromkeys(after, 1)
    assert_same_bits(
        pa.concat_tables([pq.read_table(p) for p in parts]), pq.read_table(tmp_path / "local.parquet")
    )
    assert pq.read_table(parts[0]).schema.metadata[b"propensity.model_version"] == b"v1"
    assert read_csv_rows(out / "rejects.csv") == read_csv_rows(tmp_path / "local.rejects.csv")
    assert local.rejected_rows > 0
    assert (summary.rows, summary.scored, summary.rejected_rows, summary.problems) == (
        3000,
        local.scored,
        local.rejected_rows,
        local.problems,
    )
    record = orjson.loads((out / "_manifest.json").read_bytes())
    assert record["parts"] == [p.name for p in parts]
    assert record["rows"] == {"read": 3000, "scored": local.scored, "rejected": local.rejected_rows}
    assert record["rejects"]["problems"] == local.problems
    assert record["engine"]["workers"] == record["options"]["workers"] == 2
    assert record["model"]["version"] == "v1" and record["input"]["path"] == str(data)
    assert not list(out.glob("_staging-*"))


def test_a_row_group_larger_than_a_piece_is_scored_in_slices(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    """One row group of 2,000 rows is one task, which scores it 500 rows at a time: its rejects are
    numbered among the file's rows, past the first slice too."""
    pq.write_table(rows_table(2000, 4, bad_every=97), tmp_path / "one.parquet")
    score_file(approved_compiled, request_for(tmp_path / "one.parquet", tmp_path / "local.parquet"))
    out = tmp_path / "out"
    score_on_cluster(
        cluster.scheduler_address,
        approved_compiled,
        into_parts(tmp_path / "one.parquet", out, chunk_bytes=100_000),
    )
    [part] = parts_of(out, ".parquet")
    assert pq.ParquetFile(part).metadata.num_row_groups == 4
    assert_same_bits(pq.read_table(part), pq.read_table(tmp_path / "local.parquet"))
    rejects = read_csv_rows(out / "rejects.csv")
    assert rejects == read_csv_rows(tmp_path / "local.rejects.csv")
    assert max(int(r["row"]) for r in rejects) > 1500


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_text_file_is_cut_into_byte_ranges_the_workers_read(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path, fmt: str
) -> None:
    rows = rows_table(600, 5, bad_every=53).to_pylist()
    rows[10]["x44"] = "lots"
    src = tmp_path / f"in.{fmt}"
    src.write_bytes(csv_bytes(rows) if fmt == "csv" else jsonl_bytes(rows))
    score_file(approved_compiled, request_for(src, tmp_path / f"local.{fmt}"))
    out = tmp_path / "out"
    score_on_cluster(
        cluster.scheduler_address, approved_compiled, into_parts(src, out, fmt, chunk_bytes=40_000)
    )
    parts = [p.read_bytes() for p in parts_of(out, f".{fmt}")]
    assert len(parts) > 2
    want = (tmp_path / f"local.{fmt}").read_bytes()
    if fmt == "csv":  # each part is a CSV file of its own: the header, then its rows
        header = want[: want.index(b"\r\n") + 2]
        assert all(p.startswith(header) for p in parts)
        parts = [header] + [p.removeprefix(header) for p in parts]
    assert b"".join(parts) == want
    assert read_csv_rows(out / "rejects.csv") == read_csv_rows(tmp_path / "local.rejects.csv")
    record = orjson.loads((out / "_manifest.json").read_bytes())
    assert (
        record["input"]["blake3"]
        == orjson.loads((tmp_path / "local.manifest.json").read_bytes())["input"]["blake3"]
    )


def test_a_rerun_replaces_the_parts_of_an_earlier_run(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    """Parts left from a run with more pieces would read as rows of the next run: they are removed, and
    so is a rejects file the new run has no reason for."""
    data = dataset(tmp_path / "data", [rows_table(1000, 6)], 100)
    out = tmp_path / "out"
    score_on_cluster(cluster.scheduler_address, approved_compiled, into_parts(data, out, chunk_bytes=40_000))
    assert len(parts_of(out, ".parquet")) == 5 and (out / "rejects.csv").exists()
    pq.write_table(rows_table(1000, 6, bad_every=0), data / "f0.parquet", row_group_size=1000)
    (out / "_staging-0123456789ab").mkdir()  # what a run that was killed leaves
    (out / "_staging-0123456789ab" / "part-00000.parquet").touch()
    summary = score_on_cluster(cluster.scheduler_address, approved_compiled, into_parts(data, out))
    assert summary.rejected_rows == 0
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "part-00000.parquet"]
    assert pq.read_table(out / "part-00000.parquet").num_rows == 1000


def test_an_output_inside_the_input_is_not_read_as_input(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    data = dataset(tmp_path / "data", [rows_table(400, 13)], 100)
    for _ in range(2):
        summary = score_on_cluster(
            cluster.scheduler_address,
            approved_compiled,
            into_parts(data, data / "scores", chunk_bytes=40_000),
        )
        assert summary.rows == 400


def test_a_cluster_that_fails_is_a_cluster_error() -> None:
    class Lost:
        def result(self) -> None:
            worker = SimpleNamespace(address="tcp://127.0.0.1:1")  # the scheduler's WorkerState, as shown
            raise distributed.KilledWorker("score_piece-1", worker, 3)

    with pytest.raises(ClusterError, match="the Dask cluster failed: KilledWorker"):
        engine.result_of(Lost())


def test_a_bad_file_stops_the_run_and_leaves_the_earlier_output_whole(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    data = dataset(tmp_path / "data", [rows_table(500, 7), rows_table(500, 8)], 100)
    out = tmp_path / "out"
    score_on_cluster(cluster.scheduler_address, approved_compiled, into_parts(data, out, chunk_bytes=40_000))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    pq.write_table(
        pa.table({"a": [1, 2], "b": ["x", "y"]}), data / "f1.parquet"
    )  # none of the model's columns
    with pytest.raises(InputError, match=r"f1\.parquet: .*none of the model's columns"):
        score_on_cluster(
            cluster.scheduler_address, approved_compiled, into_parts(data, out, chunk_bytes=40_000)
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left, nothing replaced


def test_into_one_file_the_driver_writes_the_local_scorers_bytes(
    cluster: Any, client: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    pq.write_table(rows_table(1500, 9), tmp_path / "in.parquet", row_group_size=300)
    score_file(
        approved_compiled, request_for(tmp_path / "in.parquet", tmp_path / "local.csv", chunk_bytes=60_000)
    )
    before = received(client)
    summary = score_on_cluster(
        cluster.scheduler_address,
        approved_compiled,
        request_for(tmp_path / "in.parquet", tmp_path / "dask.csv", chunk_bytes=60_000),
    )
    after = received(client)
    assert {w: after[w] - before[w] for w in after} == dict.fromkeys(after, 1)
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert read_csv_rows(tmp_path / "dask.rejects.csv") == read_csv_rows(tmp_path / "local.rejects.csv")
    record = orjson.loads((tmp_path / "dask.manifest.json").read_bytes())
    assert record["engine"]["workers"] == 2 and record["rows"]["read"] == summary.rows == 1500
    a_dataset = dataclasses.replace(request_for(tmp_path / "in.parquet", tmp_path / "x.csv"), input=tmp_path)
    with pytest.raises(InputError, match="directory of parts"):
        score_on_cluster(cluster.scheduler_address, approved_compiled, a_dataset)


def test_local_n_starts_a_cluster_for_the_run(approved_compiled: CompiledModel, tmp_path: Path) -> None:
    pq.write_table(rows_table(300, 10), tmp_path / "in.parquet")
    summary = score_on_cluster(
        "local:1", approved_compiled, into_parts(tmp_path / "in.parquet", tmp_path / "out")
    )
    record = orjson.loads((tmp_path / "out" / "_manifest.json").read_bytes())
    assert record["engine"] == {"dask": "local:1", "workers": 1, "threads": 1}
    assert summary.rows == 300


@pytest.mark.parametrize("address", ["local:", "local:0", "local:two"])
def test_a_local_address_needs_a_number_of_workers(
    address: str, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    pq.write_table(rows_table(10, 11), tmp_path / "in.parquet")
    with pytest.raises(ClusterError, match="local:N"):
        score_on_cluster(address, approved_compiled, into_parts(tmp_path / "in.parquet", tmp_path / "out"))


def test_an_unreachable_scheduler_is_an_error_that_names_it(
    approved_compiled: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "CONNECT_SECONDS", 0.5)
    pq.write_table(rows_table(10, 12), tmp_path / "in.parquet")
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address}"):
        score_on_cluster(address, approved_compiled, into_parts(tmp_path / "in.parquet", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_dataset_is_read_in_natural_name_order_without_its_underscore_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ["part.10.parquet", "part.2.parquet", "part.0.parquet", "_SUCCESS", ".part.1.parquet.crc"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    for name in [
        "_temporary/0/part.1.parquet",
        "year=2024/b.pq",
        "year=2024/a.PARQUET",
        "out/part-00000.parquet",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    found = engine.parquet_files(root, skip=root / "out")
    assert [str(p.relative_to(root)) for p in found] == [
        "part.0.parquet",
        "part.2.parquet",
        "part.10.parquet",
        "year=2024/a.PARQUET",
        "year=2024/b.pq",
    ]
    (tmp_path / "empty" / "_temporary").mkdir(parents=True)
    (tmp_path / "empty" / "_temporary" / "part.0.parquet").touch()
    (tmp_path / "empty" / ".hidden.parquet").touch()
    with pytest.raises(InputError, match="holds no Parquet file"):
        engine.parquet_files(tmp_path / "empty")


def test_pieces_are_whole_row_groups_of_about_the_rows_asked(tmp_path: Path) -> None:
    table = pa.table({"x": list(range(1000))})
    pq.write_table(table, tmp_path / "small.parquet", row_group_size=150)  # 6 x 150 + 100
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1000)
    pieces = list(engine.parquet_pieces([tmp_path / "small.parquet", tmp_path / "big.parquet"], 400))
    small, big = str(tmp_path / "small.parquet"), str(tmp_path / "big.parquet")
    assert pieces == [
        ParquetPiece(small, (0, 1), 300),
        ParquetPiece(small, (2, 3), 300),
        ParquetPiece(small, (4, 5, 6), 400),
        ParquetPiece(big, (0,), 1000),  # larger than a piece: its task scores it 400 rows at a time
    ]


def test_which_requests_write_parts_and_which_one_file(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    assert engine.writes_parts(into_parts(src, tmp_path / "scores"))
    assert engine.writes_parts(into_parts(src, tmp_path / "scores.parquet"))  # the CLI's --dask: a directory
    assert not engine.writes_parts(request_for(src, tmp_path / "scores.parquet"))
    (tmp_path / "existing.csv").mkdir()
    assert engine.writes_parts(request_for(src, tmp_path / "existing.csv"))


def test_the_run_never_replaces_its_own_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="both INPUT and OUTPUT"):
        engine.check_paths(into_parts(tmp_path, tmp_path))
    (tmp_path / "part-00003.parquet").touch()
    with pytest.raises(InputError, match="a part of OUTPUT"):
        engine.check_paths(into_parts(tmp_path / "part-00003.parquet", tmp_path))


def test_every_worker_must_run_the_drivers_versions() -> None:
    mine = engine.versions()
    engine.check_versions(mine, {"tcp://a:1": dict(mine), "tcp://b:1": dict(mine)})
    with pytest.raises(ClusterError, match=r"tcp://b:1 has numpy 1\.0"):
        engine.check_versions(mine, {"tcp://a:1": dict(mine), "tcp://b:1": {**mine, "numpy": "1.0"}})


def test_a_gzip_text_file_cannot_be_cut_for_a_cluster(
    approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    (tmp_path / "in.csv.gz").write_bytes(b"")
    with pytest.raises(InputError, match="gzip file cannot be cut"):
        score_on_cluster("local:1", approved_compiled, into_parts(tmp_path / "in.csv.gz", tmp_path / "out"))
