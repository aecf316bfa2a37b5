"""The file scorer on a Dask cluster: the same ChunkScorer, run by the cluster's workers on pieces they read.

`--dask tcp://scheduler:8786` names a running cluster; `--dask local:N` starts one of N worker processes on
this machine (127.0.0.1, one thread each, no dashboard) for the run. The ChunkScorer, which holds the
compiled model, is scattered to every worker once (broadcast) and every task names that one copy, so the
model is never sent or unpickled again, whatever the number of tasks.

Input: a Parquet file or a directory of Parquet files (a dataset as Spark, Dask or pandas write it: the
files in natural name order, names starting with `_` or `.` skipped), cut into pieces of whole row groups;
or a plain CSV or JSON Lines file, cut at record boundaries into byte ranges (the driver finds them, as the
local scorer does). Each worker reads its own pieces, so the input and the output must be where the driver
and every worker see them under the same path (a shared filesystem such as NFS).

Into a directory: one part file per piece, `part-00000.parquet` (`.csv`, `.jsonl`), in the input's order
by name, each written by the worker that scored it, into `_staging-<run>/` first; when every piece is
scored the driver moves them into place (removing an earlier run's parts), then writes `_manifest.json`.
The rejects come back to the driver, which writes them in order, each row numbered among the whole input's
rows, to one rejects file (the local scorer's). Into a file: the driver reads the input and writes the one
file with the local scorer's run_chunks, the workers scoring its chunks.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import blake3

from service.errors import InputError, PropensityError
from service.files.chunks import ChunkResult, ChunkScorer
from service.files.formats import SUFFIXES, FileKind, Format
from service.files.run import (
    Progress,
    ScoreRequest,
    Summary,
    Writing,
    file_metadata,
    manifest,
    run_chunks,
    scorer_for,
)
from service.files.sinks import OutputSink, RejectsSink, write_manifest
from service.files.sources import Chunk, ParquetChunk, TextChunk, UnreadableFile, text_chunks
from service.serving.scorer import CompiledModel

LOCAL = "local:"
CONNECT_SECONDS = 30.0  # Dask's own default for reaching a scheduler
WORKERS_SECONDS = 60.0  # a scheduler with no worker yet: how long the first may take to join
PARTS_IN_FLIGHT = 4  # per worker thread; a part's result is counts and rejects, the rows stay on disk
CHUNKS_IN_FLIGHT = 2  # per worker thread; a chunk's result is its output, held by the driver till written
STAGING = "_staging-"  # readers of a dataset (pyarrow, Dask, Spark) skip names starting with "_"
STAGED_REJECTS = "rejects.csv"
PART = re.compile(r"part-\d{5,}\.(parquet|csv|jsonl)(\.gz)?(\.partial)?")
PARQUET_SUFFIXES = tuple(s for s, f in SUFFIXES.items() if f is Format.PARQUET)
# What must be the same on the driver and every worker for a row to get the same bits everywhere.
SAME_VERSIONS = ("propensity-service", "numpy", "pyarrow", "orjson")
T = TypeVar("T")


class ClusterError(PropensityError):
    status = 502
    kind = "cluster-failed"
    title = "The Dask cluster did not score the file"
    public = True


@dataclass(frozen=True)
class ParquetPiece:
    """Row groups of one Parquet file, `rows` rows in all by its footer: what one task reads."""

    path: str
    row_groups: tuple[int, ...]
    rows: int


Piece = ParquetPiece | TextChunk


# --- on a worker ------------------------------------------------------------------------------------------
def part_name(index: int, kind: FileKind) -> str:
    return f"part-{index:05d}.{kind.format}{'.gz' if kind.gzip else ''}"


def score_piece(
    scorer: ChunkScorer, piece: Piece, part: str, metadata: dict[str, str], rows: int
) -> ChunkResult:
    """Read the piece, score it `rows` rows at a time (a row group may be large), write its part; the
    counts and rejects (rows numbered among the piece's) come back, the scored rows stay in the part."""
    path = Path(part)
    if not path.parent.is_dir():  # OUTPUT is not on storage this worker shares, or the run was stopped
        raise ClusterError(
            f"{path.parent} is not a directory on worker {socket.gethostname()}: the output must be on "
            "storage the driver and every worker share"
        )
    header = scorer.csv_header() if scorer.output.format is Format.CSV else b""
    total = ChunkResult(0, 0, 0, None)
    try:
        sink = OutputSink(path, scorer.output, header, scorer.arrow_schema(), metadata)
        try:
            for chunk in _chunks_of(piece, scorer, rows):
                result = scorer(chunk)
                sink.write(result.payload)
                _add(total, result)
            _check_whole(piece, total)
        except BaseException:
            sink.close(keep=False)
            raise
        sink.close(keep=True)
    except OSError as exc:  # reading raises UnreadableFile, so this is the part's writing
        raise ClusterError(f"cannot write {path} on worker {socket.gethostname()}: {exc}") from None
    except InputError as exc:
        raise _naming(exc, piece) from None
    return total


def score_chunk(scorer: ChunkScorer, chunk: Chunk) -> ChunkResult:
    """One chunk of a run into one file: scored here, its output sent back to the driver."""
    return scorer(_read(chunk) if isinstance(chunk, TextChunk) else chunk)


def _chunks_of(piece: Piece, scorer: ChunkScorer, rows: int) -> Iterator[Chunk]:
    if isinstance(piece, TextChunk):
        yield _read(piece)
        return
    yield from _parquet_slices(piece, [*scorer.model.used_columns, *scorer.model.passthrough], rows)


def _read(chunk: TextChunk) -> TextChunk:
    """The chunk with its bytes, read here (a plain file's chunk says only where they are)."""
    if chunk.data is not None:
        return chunk
    try:
        return dataclasses.replace(chunk, data=chunk.body)
    except OSError as exc:
        raise UnreadableFile(
            f"{chunk.path}: cannot read it on worker {socket.gethostname()}: {exc}"
        ) from None


def _parquet_slices(piece: ParquetPiece, columns: list[str], rows: int) -> Iterator[ParquetChunk]:
    """The piece's row groups only, only `columns` (those the file has), `rows` rows a batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(piece.path) as file:
            names = tuple(file.schema_arrow.names)
            wanted = [c for c in names if c in set(columns)]
            for batch in file.iter_batches(
                batch_size=rows, row_groups=list(piece.row_groups), columns=wanted
            ):
                yield ParquetChunk(batch, names)
    except (OSError, pa.ArrowException) as exc:
        raise UnreadableFile(f"{piece.path}: {exc}") from None


def _add(total: ChunkResult, result: ChunkResult) -> None:
    total.rejects += [dataclasses.replace(r, row=r.row + total.records) for r in result.rejects]
    total.records += result.records
    total.scored += result.scored
    total.rejected_rows += result.rejected_rows
    total.notes = total.notes or result.notes
    for column, count in result.unseen.items():
        total.unseen[column] = total.unseen.get(column, 0) + count


def _check_whole(piece: Piece, total: ChunkResult) -> None:
    """A Parquet piece read as many rows as the driver planned with: else the file changed meanwhile, and
    the rows of every later piece would be numbered wrong."""
    if isinstance(piece, ParquetPiece) and total.records != piece.rows:
        raise UnreadableFile(
            f"{piece.path} changed while it was scored: its row groups {list(piece.row_groups)} had "
            f"{piece.rows:,} rows, {total.records:,} were read"
        )


def _naming(exc: InputError, piece: Piece) -> InputError:
    """A problem with a dataset's file (a schema with no model column) says which file."""
    if isinstance(piece, ParquetPiece) and piece.path not in exc.detail:
        exc.detail = f"{piece.path}: {exc.detail}"
        exc.args = (exc.detail,)
    return exc


def versions() -> dict[str, str]:
    found = {}
    for name in SAME_VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "(not installed)"
    return found


# --- on the driver ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    client: Any  # distributed.Client
    shipped: Any  # the future of the ChunkScorer scattered to every worker
    address: str
    workers: int
    threads: int
    started: float  # perf_counter before the scatter: a run's seconds count from there

    @property
    def engine(self) -> dict[str, Any]:
        return {"dask": self.address, "workers": self.workers, "threads": self.threads}


class _NoProgress:
    def start(self, total: int | None, unit: str) -> None:
        return None

    def advance(self, units: int, rows: int) -> None:
        return None


def score_on_cluster(
    address: str, model: CompiledModel, request: ScoreRequest, progress: Progress | None = None
) -> Summary:
    """Score `request.input` on the Dask cluster at `address` (or `local:N`): into a directory of parts, or
    into one file when `request.output` names one (writes_parts)."""
    request = absolute(request)
    planned = None
    if writes_parts(request):  # a bad input is told before a cluster is started or reached
        check_paths(request)
        planned = plan(request)
    scorer = scorer_for(model, request)
    with connected(address) as client:
        cluster = ship(client, address, scorer)
        if planned is not None:
            return _into_parts(cluster, model, scorer, request, planned, progress or _NoProgress())
        return _into_file(cluster, model, scorer, request, progress)


def ship(client: Any, address: str, scorer: ChunkScorer) -> Cluster:
    """The scorer scattered to every worker once, after checking they run the driver's wheels."""
    try:
        theirs = client.run(versions)
    except ImportError as exc:  # the worker has no `service`, or another one
        raise ClusterError(f"a worker cannot run the scorer ({exc}): install the driver's wheels") from None
    check_versions(versions(), theirs)
    info = client.scheduler_info(n_workers=-1)["workers"]
    threads = max(1, sum(int(w["nthreads"]) for w in info.values()))
    started = time.perf_counter()
    shipped = client.scatter(scorer, broadcast=True, hash=False)
    return Cluster(client, shipped, address, len(info), threads, started)


def absolute(request: ScoreRequest) -> ScoreRequest:
    """The request's paths anchored at the driver's working directory: a worker's is not the same."""

    def anchored(path: Path) -> Path:
        return Path(os.path.normpath(path.absolute()))

    return dataclasses.replace(
        request,
        input=anchored(request.input),
        output=anchored(request.output),
        rejects=anchored(request.rejects),
        manifest=anchored(request.manifest),
    )


def writes_parts(request: ScoreRequest) -> bool:
    """A directory of parts: OUTPUT is a directory, has no suffix, or holds the manifest (as the CLI's
    --dask requests have it, `scores.parquet/` being a dataset's name as often as a file's)."""
    out = request.output
    return out.is_dir() or not out.suffix or request.manifest.parent == out


def check_paths(request: ScoreRequest) -> None:
    """The run replaces OUTPUT's parts: never the input's own files."""
    src, out = request.input, request.output
    if src.is_dir() and src == out:
        raise InputError(f"{src} is both INPUT and OUTPUT: write the scores to another directory")
    if src.parent == out and PART.fullmatch(src.name):
        raise InputError(f"{src} is a part of OUTPUT, which the run replaces: write the scores elsewhere")


def local_workers(address: str) -> int:
    count = address.removeprefix(LOCAL)
    if not count.isdigit() or int(count) < 1:
        raise ClusterError(f"{address!r}: say local:N with N worker processes (local:4), or tcp://host:8786")
    return int(count)


def local_cluster(workers: int, silence_logs: int = logging.CRITICAL) -> Any:
    """A cluster of `workers` processes on 127.0.0.1, one thread each, no dashboard. The scheduler's HTTP
    server (health, metrics) still starts: on a free port, not on 8787, which another cluster may hold.
    Its logs are silenced: the driver reports a task's error itself (`error: ...`)."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=silence_logs,
    )


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """A client of the cluster at `address` with at least one worker; `local:N` starts one for the run."""
    from distributed import Client

    if address.startswith(LOCAL):
        with local_cluster(local_workers(address)) as local, Client(local) as client:
            yield client
        return
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_SECONDS)
        except TimeoutError:
            raise ClusterError(
                f"no Dask worker joined the scheduler at {address} in {WORKERS_SECONDS:.0f} s "
                f"(start them with `dask worker {address}`)"
            ) from None
        yield client


def check_versions(mine: dict[str, str], theirs: dict[str, dict[str, str]]) -> None:
    """Every worker runs the driver's versions of what a row's bits depend on (the same wheels)."""
    odd = [
        f"{worker} has {name} {found.get(name)}"
        for worker, found in sorted(theirs.items())
        for name in SAME_VERSIONS
        if found.get(name) != mine[name]
    ]
    if odd:
        wanted = ", ".join(f"{name} {mine[name]}" for name in SAME_VERSIONS)
        raise ClusterError(f"install the driver's wheels on every worker ({wanted}): {'; '.join(odd)}")


def _into_parts(
    cluster: Cluster,
    model: CompiledModel,
    scorer: ChunkScorer,
    request: ScoreRequest,
    planned: Planned,
    progress: Progress,
) -> Summary:
    staging = request.output / f"{STAGING}{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    metadata = file_metadata(model, datetime.now(UTC).isoformat(timespec="milliseconds"))
    summary = Summary()
    rejects = RejectsSink(staging / STAGED_REJECTS)
    names: list[str] = []

    def submit(index: int, piece: Piece) -> Any:
        part = str(staging / part_name(index, scorer.output))
        return cluster.client.submit(
            score_piece, cluster.shipped, piece, part, metadata, planned.rows, pure=False
        )

    progress.start(planned.total, planned.unit)
    try:
        limit = PARTS_IN_FLIGHT * cluster.threads
        with closing(in_order(cluster.client, submit, planned.pieces, limit)) as results:
            for index, (piece, result) in enumerate(results):
                rejects.write(result.rejects, summary.rows)
                summary.add(result)
                names.append(part_name(index, scorer.output))
                progress.advance(_units(index, piece), result.records)
        if summary.rows == 0:
            raise InputError(f"{request.input.name} has no rows to score")
    except BaseException:
        rejects.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rejects.close()
    commit(staging, names, request)
    summary.problems = rejects.count
    summary.seconds = time.perf_counter() - cluster.started
    if request.input_kind.format is not Format.PARQUET:
        summary.input_blake3 = planned.hasher.hexdigest()
    record = manifest(
        dataclasses.replace(request, workers=cluster.workers), metadata, summary, rejects.count > 0
    )
    write_manifest(request.manifest, {**record, "parts": names, "engine": cluster.engine})
    return summary


def _units(index: int, piece: Piece) -> int:
    if isinstance(piece, ParquetPiece):
        return piece.rows
    return piece.length + (len(piece.header) if index == 0 else 0)  # the bytes before the first record too


def _into_file(
    cluster: Cluster,
    model: CompiledModel,
    scorer: ChunkScorer,
    request: ScoreRequest,
    progress: Progress | None,
) -> Summary:
    if request.input.is_dir():
        raise InputError(
            f"{request.input} is a directory: its scores are a directory of parts (OUTPUT without a suffix)"
        )
    scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    columns = [*model.used_columns, *model.passthrough]
    writing = Writing(scorer.encoder, file_metadata(model, scored_at), columns, {"engine": cluster.engine})

    def submit(index: int, chunk: Chunk) -> Any:
        return cluster.client.submit(score_chunk, cluster.shipped, chunk, pure=False)

    def score(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, ChunkResult]]:
        with closing(in_order(cluster.client, submit, chunks, CHUNKS_IN_FLIGHT * cluster.threads)) as results:
            yield from results

    return run_chunks(dataclasses.replace(request, workers=cluster.workers), writing, score, progress)


def in_order(
    client: Any, submit: Callable[[int, T], Any], items: Iterable[T], limit: int
) -> Generator[tuple[T, Any], None, None]:
    """Each item with its task's result, in the items' order, at most `limit` tasks submitted and not yet
    taken (the ones behind the first keep running meanwhile); the rest cancelled if the caller stops."""
    pending: deque[tuple[T, Any]] = deque()
    try:
        for index, item in enumerate(items):
            pending.append((item, submit(index, item)))
            if len(pending) >= limit:
                first, future = pending.popleft()
                yield first, result_of(future)
        while pending:
            first, future = pending.popleft()
            yield first, result_of(future)
    finally:
        if pending:
            client.cancel([future for _, future in pending])


def result_of(future: Any) -> Any:
    """A task's result, or its error: the task's own (a PropensityError says what is wrong with the input
    or the output), or the cluster's, as a ClusterError."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    try:
        return future.result()
    except (KilledWorker, FutureCancelledError, OSError, TimeoutError) as exc:
        raise ClusterError(f"the Dask cluster failed: {type(exc).__name__}: {exc}") from exc


@dataclass
class Planned:
    """The input's pieces in order (a text file is cut as they are submitted), their total in `unit`s for a
    progress bar, the rows a task scores at a time, and the hash of the bytes read (a text input's)."""

    pieces: Iterator[Piece]
    total: int | None
    unit: str
    rows: int
    hasher: Any


def plan(request: ScoreRequest) -> Planned:
    """A dataset's footers are read first: its pieces and their rows are known before any is submitted."""
    kind = request.input_kind
    rows = max(1, request.chunk_bytes // 200)  # what the local scorer reads of a Parquet file at a time
    hasher = blake3.blake3()
    if kind.format is Format.PARQUET:
        pieces = list(parquet_pieces(parquet_files(request.input, skip=request.output), rows))
        return Planned(iter(pieces), sum(p.rows for p in pieces), "rows", rows, hasher)
    if kind.gzip:
        raise InputError(
            f"{request.input.name}: a gzip file cannot be cut into pieces for a cluster; decompress it, or "
            "write it as Parquet"
        )
    chunks = text_chunks(request.input, kind, request.chunk_bytes, hasher)
    return Planned(chunks, request.input.stat().st_size, "bytes", rows, hasher)


def parquet_files(root: Path, skip: Path | None = None) -> list[Path]:
    """A dataset's files in natural name order (`part.2` before `part.10`, as Dask writes and reads them).
    Names starting with `_` or `.` are not data (Spark's `_SUCCESS` and `_temporary/`, hidden files), nor is
    `skip` (the output, when it is inside the input)."""
    if not root.is_dir():
        return [root]
    found: list[Path] = []
    for top, dirs, files in os.walk(root):
        here = Path(top)
        dirs[:] = [d for d in dirs if not d.startswith(("_", ".")) and here / d != skip]
        found += [
            here / f for f in files if not f.startswith(("_", ".")) and f.lower().endswith(PARQUET_SUFFIXES)
        ]
    if not found:
        raise InputError(f"{root} holds no Parquet file (*.parquet, *.pq)")
    return sorted(found, key=lambda p: [natural_key(part) for part in p.relative_to(root).parts])


def natural_key(name: str) -> list[tuple[int, str]]:
    """`part.10` after `part.2`: runs of digits compare as numbers."""
    return [(int(run), "") if run.isdigit() else (-1, run) for run in re.split(r"(\d+)", name) if run]


def parquet_pieces(files: list[Path], rows: int) -> Iterator[ParquetPiece]:
    """Consecutive row groups of each file, about `rows` rows a piece (a larger row group is a piece of its
    own, which its task scores `rows` at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for file in files:
        try:
            with pq.ParquetFile(file) as opened:
                meta = opened.metadata
        except (OSError, pa.ArrowException) as exc:
            raise UnreadableFile(f"{file} is not a Parquet file: {exc}") from None
        groups: list[int] = []
        count = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if groups and count + n > rows:
                yield ParquetPiece(str(file), tuple(groups), count)
                groups, count = [], 0
            if n:
                groups.append(g)
                count += n
        if groups:
            yield ParquetPiece(str(file), tuple(groups), count)


def commit(staging: Path, names: list[str], request: ScoreRequest) -> None:
    """This run's parts in place of an earlier run's (whose extra parts would read as rows of this run),
    its rejects in place of theirs; the manifest, written after, says the directory is whole."""
    out = request.output
    request.manifest.unlink(missing_ok=True)
    for old in out.iterdir():
        if PART.fullmatch(old.name) and old.is_file():
            old.unlink()
        elif old.name.startswith(STAGING) and old != staging and old.is_dir():  # a run that was killed
            shutil.rmtree(old, ignore_errors=True)
    for name in names:
        os.replace(staging / name, out / name)
    staged = staging / STAGED_REJECTS
    if staged.exists():
        request.rejects.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, request.rejects)
    else:
        request.rejects.unlink(missing_ok=True)
    staging.rmdir()
