"""The file scorer on a Dask cluster: the same chunks, the same ChunkScorer, on the cluster's workers.

`--dask tcp://scheduler:8786` (a running cluster) or `--dask local:N` (a cluster of N worker processes on
this machine, for the run). The ChunkScorer, which holds the compiled model, is scattered to every worker
once (broadcast); each task names it, so the scheduler never sends it again. The input is cut into pieces
the workers read themselves, so the files must be where every worker can read them (a shared filesystem):
a Parquet file or a directory of Parquet files by row group, a plain CSV or JSON Lines file by byte
range (the driver finds the record boundaries, as the local scorer does).

The output is a directory of part files, one per piece, written by the worker that scored it
(`part-00000.parquet`, ...; reading them in name order gives the input's order), and `_manifest.json`.
The rejects, few, come back to the driver, which writes them in order with their row among the whole
input's rows (`rejects.csv` in the output directory).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.errors import InputError
from service.files.chunks import ChunkScorer, Reject
from service.files.formats import Format
from service.files.run import ScoreRequest, Summary, file_metadata, manifest, scorer_for
from service.files.sinks import METADATA_PREFIX, RejectsSink, write_manifest
from service.files.sources import Chunk, ParquetChunk, text_chunks
from service.serving.scorer import CompiledModel

LOCAL = "local:"
IN_FLIGHT_PER_WORKER = 4


@dataclass(frozen=True)
class ParquetPiece:
    """Row groups of one Parquet file: what one task reads."""

    path: str
    row_groups: tuple[int, ...]


Piece = ParquetPiece | Chunk


@dataclass
class PieceResult:
    records: int
    scored: int
    rejected_rows: int
    rejects: list[Reject] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)


def part_name(index: int, scorer: ChunkScorer) -> str:
    suffix = {Format.PARQUET: ".parquet", Format.CSV: ".csv", Format.JSONL: ".jsonl"}[scorer.output.format]
    return f"part-{index:05d}{suffix}{'.gz' if scorer.output.gzip else ''}"


def score_piece(
    scorer: ChunkScorer, piece: Piece, index: int, out_dir: str, metadata: dict[str, str]
) -> PieceResult:
    """On a worker: read the piece, score it, write its part file; the rejects come back."""
    chunk = (
        _read(piece, [*scorer.model.used_columns, *scorer.model.passthrough])
        if isinstance(piece, ParquetPiece)
        else piece
    )
    result = scorer(chunk)
    path = Path(out_dir) / part_name(index, scorer)
    partial = path.with_name(path.name + ".partial")
    if scorer.output.format is Format.PARQUET:
        import pyarrow.parquet as pq

        table = result.payload
        schema = table.schema.with_metadata({METADATA_PREFIX + k: v for k, v in metadata.items()})
        pq.write_table(table.cast(schema), partial)
    else:
        header = scorer.csv_header() if scorer.output.format is Format.CSV else b""
        if header and scorer.output.gzip:
            import gzip

            header = gzip.compress(header, 6)
        partial.write_bytes(header + result.payload)
    os.replace(partial, path)
    return PieceResult(
        result.records, result.scored, result.rejected_rows, result.rejects, result.notes, result.unseen
    )


def _read(piece: ParquetPiece, columns: list[str]) -> ParquetChunk:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(piece.path)
    names = tuple(file.schema_arrow.names)
    wanted = [c for c in names if c in set(columns)]
    return ParquetChunk(file.read_row_groups(list(piece.row_groups), columns=wanted), names)


def pieces_of(request: ScoreRequest, rows_per_piece: int) -> Iterator[Piece]:
    """The input's pieces in order: row groups of each Parquet file (files in name order), or chunks."""
    path = request.input
    if request.input_kind.format is not Format.PARQUET:
        if request.input_kind.gzip:
            raise InputError(
                "a gzip file cannot be cut into pieces for a cluster; decompress it, or use Parquet"
            )
        yield from text_chunks(path, request.input_kind, request.chunk_bytes)
        return
    import pyarrow.parquet as pq

    files = sorted(p for p in path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{path} holds no .parquet file")
    for file in files:
        meta = pq.ParquetFile(file).metadata
        group: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= rows_per_piece:
                yield ParquetPiece(str(file.resolve()), tuple(group))
                group, rows = [], 0
        if group:
            yield ParquetPiece(str(file.resolve()), tuple(group))


def _client(address: str) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if address.startswith(LOCAL):
        workers = int(address.removeprefix(LOCAL) or "2")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        return Client(cluster), cluster
    return Client(address), None


def score_on_cluster(address: str, model: CompiledModel, request: ScoreRequest) -> Summary:
    """Score `request.input` on the cluster at `address` into the directory `request.output`."""
    started = time.perf_counter()
    scorer = scorer_for(model, request)
    out_dir = request.output
    out_dir.mkdir(parents=True, exist_ok=True)
    scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    metadata = file_metadata(model, scored_at)
    client, cluster = _client(address)
    summary = Summary()
    rejects = RejectsSink(request.rejects)
    try:
        workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        shipped = client.scatter(scorer, broadcast=True, hash=False)
        parts = 0
        for result in _in_order(
            client,
            shipped,
            pieces_of(request, max(1, request.chunk_bytes // 200)),
            str(out_dir),
            metadata,
            workers,
        ):
            rejects.write(result.rejects, summary.rows)
            summary.rows += result.records
            summary.scored += result.scored
            summary.rejected_rows += result.rejected_rows
            summary.notes = summary.notes or result.notes
            for column, count in result.unseen.items():
                summary.unseen[column] = summary.unseen.get(column, 0) + count
            parts += 1
    finally:
        rejects.close()
        client.close()
        if cluster is not None:
            cluster.close()
    summary.problems = rejects.count
    summary.seconds = time.perf_counter() - started
    record = manifest(request, metadata, summary, rejects.count > 0)
    record["parts"] = [part_name(i, scorer) for i in range(parts)]
    record["engine"] = {"dask": address, "workers": workers}
    write_manifest(request.manifest, record)
    return summary


def _in_order(
    client: Any, shipped: Any, pieces: Iterator[Piece], out_dir: str, metadata: dict[str, str], workers: int
) -> Iterator[PieceResult]:
    """Each piece's result in input order, with at most IN_FLIGHT_PER_WORKER pieces per worker submitted."""
    pending: deque[Any] = deque()
    try:
        for index, piece in enumerate(pieces):
            pending.append(client.submit(score_piece, shipped, piece, index, out_dir, metadata, pure=False))
            if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
