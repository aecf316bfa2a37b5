"""The file scorer on a real Dask cluster (2 worker processes on 127.0.0.1): the local scorer's output bit
for bit, rejects with the whole input's row numbers, the model sent to each worker once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.files.distributed import score_on_cluster
from service.files.formats import kind_of
from service.files.run import ScoreRequest, score_file
from service.model.schema import example_rows
from service.serving.scorer import CompiledModel
from tests.unit.files.conftest import csv_bytes, read_csv_rows, request_for

distributed = pytest.importorskip("distributed")
ROWS: list[dict[str, Any]] = example_rows()["rows"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


def on_cluster(src: Path, out: Path, fmt: str = "parquet", **options: Any) -> ScoreRequest:
    return ScoreRequest(
        input=src,
        output=out,
        input_kind=kind_of(src if src.is_file() else src / "x.parquet"),
        output_kind=kind_of(Path(f"part.{fmt}")),
        rejects=out / "rejects.csv",
        manifest=out / "_manifest.json",
        **options,
    )


def rows_with_problems(n: int) -> list[dict[str, Any]]:
    rows = [dict(ROWS[i % len(ROWS)], customer_id=f"c{i}") for i in range(n)]
    for i in range(3, n, 97):
        rows[i]["x44"] = "lots"
    return [{k: (str(v) if v is not None else None) for k, v in r.items()} for r in rows]  # one type a column


def received(client: Any) -> dict[str, int]:
    return dict(client.run(lambda: CompiledModel.received))


def test_a_parquet_dataset_scores_as_the_local_scorer(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    rows = rows_with_problems(3_000)
    data = tmp_path / "data"
    data.mkdir()
    for k in range(3):  # a dataset: three files, row groups of 250 rows
        pq.write_table(
            pa.Table.from_pylist(rows[k * 1000 : (k + 1) * 1000]), data / f"f{k}.parquet", row_group_size=250
        )
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "all.parquet")
    local = score_file(approved_compiled, request_for(tmp_path / "all.parquet", tmp_path / "local.parquet"))
    with distributed.Client(cluster) as client:
        before = received(client)
        summary = score_on_cluster(
            cluster.scheduler_address,
            approved_compiled,
            on_cluster(data, tmp_path / "out", chunk_bytes=100_000),
        )
        after = received(client)
    assert {w: after[w] - before.get(w, 0) for w in after} == dict.fromkeys(after, 1)  # once per worker
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert len(parts) == 6  # 500 rows a piece: the pieces ran on both workers, each read its own
    got = pa.concat_tables([pq.read_table(p) for p in parts])
    assert got.equals(pq.read_table(tmp_path / "local.parquet"))
    assert pq.read_table(parts[0]).schema.metadata[b"propensity.model_version"] == b"v1"
    assert (summary.rows, summary.scored, summary.rejected_rows) == (
        local.rows,
        local.scored,
        local.rejected_rows,
    )
    assert read_csv_rows(tmp_path / "out" / "rejects.csv") == read_csv_rows(tmp_path / "local.rejects.csv")


def test_a_csv_file_is_cut_into_byte_ranges_the_workers_read(
    cluster: Any, approved_compiled: CompiledModel, tmp_path: Path
) -> None:
    rows = rows_with_problems(400)
    (tmp_path / "in.csv").write_bytes(csv_bytes(rows))
    score_file(approved_compiled, request_for(tmp_path / "in.csv", tmp_path / "local.csv"))
    score_on_cluster(
        cluster.scheduler_address,
        approved_compiled,
        on_cluster(tmp_path / "in.csv", tmp_path / "out", "csv", chunk_bytes=20_000),
    )
    parts = sorted((tmp_path / "out").glob("part-*.csv"))
    assert len(parts) > 2
    assert [r for p in parts for r in read_csv_rows(p)] == read_csv_rows(tmp_path / "local.csv")
    assert read_csv_rows(tmp_path / "out" / "rejects.csv") == read_csv_rows(tmp_path / "local.rejects.csv")
