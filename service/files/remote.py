"""`propensity score IN OUT --against URL`: the file scored by a running service, for teams that may only
call the API. The file is read in the same chunks; each chunk's rows go to `POST /predict` as JSON arrays
of at most `max_rows` rows (a CSV cell is sent as the very string it is, which /predict scores as it
scores the same CSV cell; an empty id cell is no id, as in a CSV body), `concurrency` calls at a time.
The answers are written with the local scorer's Encoder, so the output is the bytes the local scorer
writes for the same rows.

A call the service refuses for some of its rows (422 naming them) has those rows' problems written as
rejects and the other rows sent again, until the call is answered; a 422 for the whole call (or any other
4xx) stops the run, since every call would get it. Calls that fail on the way (connection errors, 429,
502, 503, 504) are retried with exponential backoff and jitter, `Retry-After` honoured, up to `retries`
times. The manifest lists the model version(s) that answered, with how many rows each scored.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from service.errors import InputError, PropensityError
from service.files.chunks import ChunkResult, Reject, read_csv_chunk, read_jsonl_chunk
from service.files.encoding import Encoder, output_columns
from service.files.formats import Format
from service.files.run import Progress, ScoreRequest, Summary, Writing, run_chunks
from service.files.sources import Chunk, ParquetChunk

MAX_ROWS = 10_000
RETRYABLE = frozenset({429, 502, 503, 504})
BACKOFF_BASE, BACKOFF_CAP = 0.2, 10.0


class ServiceError(PropensityError):
    status = 502
    kind = "service-failed"
    title = "The service did not score the file"
    public = True


@dataclass
class _Rows:
    """A chunk's rows as JSON objects, each with its line and its index among the chunk's records."""

    rows: list[dict[str, Any]]
    lines: list[int | None]
    records: list[int]
    count: int
    rejects: list[Reject]


@dataclass
class _Answered:
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)


class Service:
    """The service's /predict, called with retries."""

    def __init__(self, url: str, retries: int, reasons: int) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(120.0, connect=10.0))
        self.retries = retries
        self.query = f"?reasons={reasons}" if reasons else ""

    def get(self, path: str) -> httpx.Response:
        return self._call(lambda: self.client.get(path))

    def predict(self, rows: list[dict[str, Any]]) -> httpx.Response:
        body = orjson.dumps(rows)
        headers = {"content-type": "application/json"}
        return self._call(lambda: self.client.post("/predict" + self.query, content=body, headers=headers))

    def _call(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        for attempt in range(self.retries + 1):
            wait = None
            try:
                answer = send()
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code not in RETRYABLE:
                    return answer
                failure = f"HTTP {answer.status_code}"
                wait = _retry_after(answer)
            if attempt == self.retries:
                raise ServiceError(f"{self.client.base_url}: {failure} after {self.retries} retries")
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
            time.sleep(wait if wait is not None else random.uniform(delay / 2, delay))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


def _retry_after(answer: httpx.Response) -> float | None:
    try:
        return min(BACKOFF_CAP, float(answer.headers.get("retry-after", "")))
    except ValueError:
        return None


def rows_of(chunk: Chunk) -> _Rows:
    if isinstance(chunk, ParquetChunk):
        rows = chunk.batch.to_pylist()
        return _Rows(rows, [None] * len(rows), list(range(len(rows))), len(rows), [])
    if chunk.format is Format.JSONL:
        read = read_jsonl_chunk(chunk)
        rows = read.rows
    else:
        read = read_csv_chunk(chunk)
        table = read.rows
        columns = [table.cells(j) for j in range(len(table.header))]
        rows = [
            {name: cells[i] for name, cells in zip(table.header, columns, strict=True)}
            for i in range(table.rows)
        ]
    n = len(rows)
    return _Rows(
        rows,
        [read.line_of(i) for i in range(n)],
        [read.record_of(i) for i in range(n)],
        read.records,
        read.rejects,
    )


def _without_empty_ids(rows: list[dict[str, Any]], ids: tuple[str, ...], csv: bool) -> list[dict[str, Any]]:
    """A CSV body's empty id cell is no id: the JSON row then has no such key."""
    if not csv:
        return rows
    return [{k: v for k, v in row.items() if not (k in ids and v == "")} for row in rows]


def answer_chunk(service: Service, rows: _Rows, ids: tuple[str, ...], csv: bool) -> _Answered:
    """Every row of the chunk answered or rejected, in calls of at most MAX_ROWS rows."""
    out = _Answered(rejects=list(rows.rejects))
    sendable = _without_empty_ids(rows.rows, ids, csv)
    for start in range(0, len(sendable), MAX_ROWS):
        indices = list(range(start, min(start + MAX_ROWS, len(sendable))))
        _answer_call(service, sendable, indices, rows, out)
    out.rejects.sort(key=lambda r: r.row)
    return out


def _answer_call(
    service: Service, sendable: list[dict[str, Any]], indices: list[int], rows: _Rows, out: _Answered
) -> None:
    while indices:
        answer = service.predict([sendable[i] for i in indices])
        if answer.status_code == 200:
            out.records += answer.json()
            out.versions[answer.headers.get("x-model-version", "?")] += len(indices)
            return
        problem = _problem(answer)
        bad = problem.get("bad_rows") or []
        if answer.status_code != 422 or not bad:
            raise InputError(f"the service refused the call ({answer.status_code}): {problem.get('detail')}")
        listed = set(bad)
        for e in problem.get("errors") or []:
            if e.get("row") in listed:
                i = indices[e["row"]]
                out.rejects.append(
                    Reject(rows.records[i], rows.lines[i], e.get("field"), e["reason"], e.get("value"))
                )
        indices = [i for k, i in enumerate(indices) if k not in listed]


def _problem(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {"detail": answer.text[:200]}
    return body if isinstance(body, dict) else {"detail": str(body)[:200]}


def values_of(
    records: list[dict[str, Any]], columns: list[str], ids: tuple[str, ...]
) -> dict[str, list[Any]]:
    """The answer's records as the Encoder's columns (reason codes flattened to reason_<k>_*)."""
    values: dict[str, list[Any]] = {c: [] for c in columns}
    for record in records:
        reasons = record.get("reasons") or []
        for c in columns:
            if c.startswith("reason_") and c not in record:
                k, _, what = c.removeprefix("reason_").partition("_")
                values[c].append(reasons[int(k) - 1]["contribution" if what == "contribution" else "input"])
            else:
                values[c].append(record.get(c) if c not in ids else record.get(c, None))
    return values


def score_via_service(
    url: str, request: ScoreRequest, *, concurrency: int, retries: int, progress: Progress
) -> Summary:
    service = Service(url, retries, request.reasons)
    try:
        info = service.get("/model")
        if info.status_code != 200:
            raise ServiceError(f"{url}/model answered {info.status_code}: {info.text[:200]}")
        return _run(service, info.json(), request, concurrency, progress)
    finally:
        service.close()


def _encoder(model: dict[str, Any], request: ScoreRequest) -> Encoder:
    features = [str(f) for f in model.get("selected_features") or []]
    raw = {str(c) for c in (model.get("input_schema") or {}).get("columns", [])}
    ints = {f for f in features if f not in raw and "*" not in f} | {"business_outcome"}
    keys = sorted([*features, "business_outcome", "phat"])
    columns = output_columns(keys, request.passthrough, request.reasons)
    return Encoder(request.output_kind, columns, request.passthrough, ints)


def _run(
    service: Service, model: dict[str, Any], request: ScoreRequest, concurrency: int, progress: Progress
) -> Summary:
    encoder = _encoder(model, request)
    metadata = {
        "model_name": str(model.get("name")),
        "model_version": str(model.get("version")),
        "model_sha256": str(model.get("sha256")),
        "cutoff": repr(model.get("cutoff")),
        "scored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    versions: Counter[str] = Counter()
    writing = Writing(encoder, metadata, None)  # every column: the service says which it reads
    writing.extra["service"] = {"url": str(service.client.base_url), "versions": versions}
    csv = request.input_kind.format is Format.CSV

    def score(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, ChunkResult]]:
        for chunk, rows, answered in _answered(service, chunks, request.passthrough, csv, concurrency):
            versions.update(answered.versions)
            yield chunk, _result(encoder, request, rows, answered)

    summary = run_chunks(request, writing, score, progress)
    if len(versions) > 1:
        print(f"warning: the service changed versions during the run: {dict(versions)}", file=sys.stderr)
    return summary


def _result(encoder: Encoder, request: ScoreRequest, rows: _Rows, answered: _Answered) -> ChunkResult:
    records = answered.records
    values = values_of(records, encoder.columns, request.passthrough) if records else None
    jsonl = request.output_kind.format is Format.JSONL
    return ChunkResult(
        records=rows.count,
        scored=len(records),
        rejected_rows=len({r.row for r in answered.rejects}),
        payload=encoder.encode(values, records if jsonl else ()),
        rejects=answered.rejects,
    )


def _answered(
    service: Service, chunks: Iterator[Chunk], ids: tuple[str, ...], csv: bool, concurrency: int
) -> Iterator[tuple[Chunk, _Rows, _Answered]]:
    """Each chunk's answers in the input's order, `concurrency` chunks in flight."""
    with ThreadPoolExecutor(concurrency) as pool:
        pending: deque[tuple[Chunk, _Rows, Future[_Answered]]] = deque()
        try:
            for chunk in chunks:
                rows = rows_of(chunk)
                pending.append((chunk, rows, pool.submit(answer_chunk, service, rows, ids, csv)))
                if len(pending) >= concurrency:
                    done, done_rows, future = pending.popleft()
                    yield done, done_rows, future.result()
            while pending:
                done, done_rows, future = pending.popleft()
                yield done, done_rows, future.result()
        finally:
            for _, _, future in pending:
                future.cancel()
