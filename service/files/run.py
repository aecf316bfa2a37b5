"""One run of the file scorer: read the input in chunks, score them in worker processes, write them in order.

At most `2 x workers` chunks are in flight, so memory stays flat whatever the file's size: the reading
process holds the chunks being scored and the results waiting their turn, never the file. The compiled
model goes to each worker process once, when it starts. One worker scores in the calling process (no
pool), which is what the tests of a chunk's bits and a cluster's tasks use too.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import blake3

from service.errors import InputError
from service.files.chunks import ChunkResult, ChunkScorer
from service.files.encoding import Encoder
from service.files.formats import FileKind, Format
from service.files.sinks import OutputSink, RejectsSink, write_manifest
from service.files.sources import CHUNK_BYTES, Chunk, ParquetChunk, chunks_of
from service.serving.scorer import CompiledModel
from service.settings import DEFAULT_PASSTHROUGH_FIELDS, PASSTHROUGH_MAX_CHARS


class Progress(Protocol):
    """Where a run reports how far it is: `start` once (the total in `unit`s, None when unknown), then
    `advance` per chunk written (units of the input done, rows done)."""

    def start(self, total: int | None, unit: str) -> None: ...

    def advance(self, units: int, rows: int) -> None: ...


class _Quiet:
    def start(self, total: int | None, unit: str) -> None:
        return None

    def advance(self, units: int, rows: int) -> None:
        return None


@dataclass(frozen=True)
class ScoreRequest:
    input: Path
    output: Path
    input_kind: FileKind
    output_kind: FileKind
    rejects: Path
    manifest: Path
    workers: int = 1
    chunk_bytes: int = CHUNK_BYTES
    reasons: int = 0
    reject_unseen: bool = False
    passthrough_max_chars: int = PASSTHROUGH_MAX_CHARS
    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH_FIELDS  # the ids (--against: no local model to ask)


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    rejected_rows: int = 0
    problems: int = 0  # reject lines (a row may have several problems)
    seconds: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    input_blake3: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: ChunkResult) -> None:
        self.rows += result.records
        self.scored += result.scored
        self.rejected_rows += result.rejected_rows
        if not self.notes:
            self.notes = result.notes
        for column, count in result.unseen.items():
            self.unseen[column] = self.unseen.get(column, 0) + count


_scorer: ChunkScorer | None = None


# glibc's mallopt parameters: allocations up to this size come from the heap, and this much free memory
# at its top is kept (not given back to the kernel).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_BYTES = 64 * 2**20


def keep_freed_memory() -> None:
    """Let a forked worker's malloc reuse the memory of the chunk before: left to glibc's own thresholds,
    each chunk's buffers of a few MB were mapped fresh and given back (about 2,000 page faults a 4 MB
    chunk, a third of the worker's time in the kernel). Its memory stays what one chunk needs. No-op
    where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _KEPT_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _KEPT_BYTES)
    except (OSError, AttributeError):
        return


def _start_worker(scorer: ChunkScorer) -> None:
    global _scorer
    _scorer = scorer
    keep_freed_memory()


def _score_in_worker(chunk: Chunk) -> ChunkResult:
    assert _scorer is not None, "the worker was started without its scorer"
    return _scorer(chunk)


def scorer_for(model: CompiledModel, request: ScoreRequest) -> ChunkScorer:
    return ChunkScorer(
        model,
        request.output_kind,
        reasons=request.reasons,
        reject_unseen=request.reject_unseen,
        passthrough_max_chars=request.passthrough_max_chars,
    )


def file_metadata(model: CompiledModel, scored_at: str) -> dict[str, str]:
    """What traces a campaign back to the model that chose it (Parquet key-value metadata, the manifest)."""
    return {
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "cutoff": repr(model.cutoff),
        "scored_at": scored_at,
    }


def score_file(model: CompiledModel, request: ScoreRequest, progress: Progress | None = None) -> Summary:
    """Score `request.input` into `request.output` (and its rejects and manifest); the run's summary."""
    scorer = scorer_for(model, request)
    scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    return run_chunks(
        request,
        Writing(scorer.encoder, file_metadata(model, scored_at), [*model.used_columns, *model.passthrough]),
        lambda chunks: _scored(scorer, chunks, request.workers),
        progress,
    )


@dataclass
class Writing:
    """How a run writes: its encoder, the metadata naming the model, the input columns it reads (None:
    all), and what else its manifest says."""

    encoder: Encoder
    metadata: dict[str, str]
    columns: list[str] | None
    extra: dict[str, Any] = field(default_factory=dict)


def run_chunks(
    request: ScoreRequest,
    writing: Writing,
    score: Callable[[Iterator[Chunk]], Iterator[tuple[Chunk, ChunkResult]]],
    progress: Progress | None = None,
) -> Summary:
    """Read, `score` (in order) and write: the part every engine that writes one file shares."""
    progress = progress or _Quiet()
    started = time.perf_counter()
    kind = request.input_kind
    encoder, metadata = writing.encoder, writing.metadata
    header = encoder.csv_header() if request.output_kind.format is Format.CSV else b""
    sink = OutputSink(request.output, request.output_kind, header, encoder.arrow_schema(), metadata)
    rejects = RejectsSink(request.rejects)
    summary = Summary()
    hasher = blake3.blake3()
    total, unit = _total(request.input, kind)
    started_bar = False
    ok = False
    try:
        chunks = chunks_of(request.input, kind, writing.columns, request.chunk_bytes, hasher)
        for chunk, result in score(chunks):
            if not started_bar:  # after the first chunk: the worker processes are forked by then
                progress.start(total, unit)
                started_bar = True
            sink.write(result.payload)
            rejects.write(result.rejects, summary.rows)
            summary.add(result)
            progress.advance(_units(chunk), result.records)
        if summary.rows == 0:
            raise InputError(f"{request.input.name} has no rows to score")
        ok = True
    finally:
        sink.close(keep=ok)
        rejects.close()
    summary.problems = rejects.count
    summary.seconds = time.perf_counter() - started
    if kind.format is not Format.PARQUET:
        summary.input_blake3 = hasher.hexdigest()
    record = manifest(request, metadata, summary, rejects.count > 0)
    write_manifest(request.manifest, {**record, **writing.extra})
    return summary


def _scored(
    scorer: ChunkScorer, chunks: Iterator[Chunk], workers: int
) -> Iterator[tuple[Chunk, ChunkResult]]:
    if workers <= 1:
        for chunk in chunks:
            yield chunk, scorer(chunk)
        return
    # fork: the workers start with the compiled model in memory (nothing to import or unpickle), all of
    # them at the first submit, before any thread of this process (the progress bar's) has started.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(scorer,)
    ) as pool:
        pending: deque[tuple[Chunk, Future[ChunkResult]]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(_score_in_worker, chunk)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _total(path: Path, kind: FileKind) -> tuple[int | None, str]:
    if kind.format is Format.PARQUET:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows, "rows"
        except Exception:  # unreadable: the reading says why
            return None, "rows"
    return (None if kind.gzip else path.stat().st_size), "bytes"


def _units(chunk: Chunk) -> int:
    if isinstance(chunk, ParquetChunk):
        return int(chunk.batch.num_rows)
    return chunk.length + (len(chunk.header) if chunk.first_line <= chunk.header_lines + 1 else 0)


def manifest(
    request: ScoreRequest, metadata: dict[str, str], summary: Summary, any_rejects: bool
) -> dict[str, Any]:
    return {
        "model": {k.removeprefix("model_"): v for k, v in metadata.items() if k != "scored_at"},
        "scored_at": metadata["scored_at"],
        "finished_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "input": {
            "path": str(request.input.resolve()),
            "format": str(request.input_kind),
            "blake3": summary.input_blake3,
        },
        "output": {"path": str(request.output.resolve()), "format": str(request.output_kind)},
        "rejects": {
            "path": str(request.rejects.resolve()) if any_rejects else None,
            "rows": summary.rejected_rows,
            "problems": summary.problems,
        },
        "rows": {"read": summary.rows, "scored": summary.scored, "rejected": summary.rejected_rows},
        "options": {
            "reasons": request.reasons,
            "reject_unseen": request.reject_unseen,
            "workers": request.workers,
        },
        "notes": summary.notes,
        "unseen_categories": summary.unseen,
        "seconds": round(summary.seconds, 3),
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
    }
