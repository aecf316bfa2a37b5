"""HTTP routes: /predict, health probes, /model and /metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.content_encoding import accepts_gzip, gunzip_body, gzip_body, is_gzip
from service.api.openapi_docs import PREDICT_OPENAPI, PREDICT_RESPONSES
from service.api.problems import problem_body, problem_response
from service.errors import FieldError, InputError, ModelNotReady, PayloadTooLarge
from service.serving.cache import body_hasher, columns_key, hashed_raw_key, normalised_key
from service.serving.decoding import check_content_type, check_declared_length, decode_rows
from service.settings import BatchErrorPolicy, UnseenCategoryPolicy

log = logging.getLogger("propensity.api")
# Bodies at least this large are decoded by columns (msgspec skips the 90 unused keys); below it a full
# orjson decode costs microseconds and keeps unknown-key counting exact.
COLUMN_DECODE_MIN_BYTES = 64 * 1024

router = APIRouter()
JSON = "application/json"


async def read_chunks(request: Request, limit: int, hasher: Any = None) -> tuple[list[bytes], int]:
    """The body as it arrived (chunks, total size), refused past `limit` bytes; `hasher` (if any) is fed
    each chunk as it arrives. Kept in chunks so a cache hit never copies a big body into one buffer."""
    check_declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit_bytes=limit)
        if chunk:
            chunks.append(chunk)
            if hasher is not None:
                hasher.update(chunk)
    return chunks, size


def joined(chunks: list[bytes]) -> bytes:
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _declared_length(request: Request) -> int:
    try:
        return int(request.headers.get("content-length", "0"))
    except ValueError:
        return 0


@router.post(
    "/predict",
    summary="Score 1 to 10,000 rows",
    description=(
        "Send one JSON object (one row, answered by one object) or an array of objects (answered by an "
        'array in the same order). Values may be numbers or strings; missing values as null, "", "nan", '
        '"NaN", "null", "None" or an absent key. Each result has `business_outcome`, `phat` and the 25 '
        "model inputs as the GLM saw them, keys in alphabetical order. The `X-Model-Version` header names "
        "the model version that scored the request."
    ),
    responses=PREDICT_RESPONSES,
    openapi_extra=PREDICT_OPENAPI,
)
async def predict(request: Request) -> Response:
    state = request.app.state
    settings, metrics, cache = state.settings, state.metrics, state.cache
    buffer = metrics.buffer
    started = time.perf_counter()
    model = state.holder.current
    if model is None:
        raise ModelNotReady("the model is still loading; retry shortly", retry_after=1)
    check_content_type(request.headers.get("content-type"))
    cacheable = cache is not None and _declared_length(request) >= settings.cache_min_body_bytes
    hasher = body_hasher() if cacheable else None
    chunks, size = await read_chunks(request, settings.max_body_bytes, hasher)
    headers = {"X-Model-Version": model.version}

    keys: list[str] = []
    if cache is not None and size >= settings.cache_min_body_bytes:
        if hasher is None:  # no Content-Length (chunked upload): hash it now
            hasher = body_hasher()
            for chunk in chunks:
                hasher.update(chunk)
        keys.append(hashed_raw_key(model.sha256, hasher))
        hit = cache.get(keys)
        if hit is not None:
            buffer.inc(metrics.cache_hit)
            return _cached(hit, headers, request)
    body = joined(chunks)

    decoded = None
    if len(body) >= COLUMN_DECODE_MIN_BYTES:  # big batches: decode only the model's columns
        decoded = model.column_decoder.decode(body, max_rows=settings.max_rows)
    if decoded is None:
        decoded = decode_rows(body, max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    rows = decoded.rows
    full_rows = type(rows[0]) is dict
    if keys:
        if full_rows:
            keys.append(normalised_key(model.sha256, decoded.payload))
        else:
            keys.append(columns_key(model.sha256, rows))
        hit = cache.get(keys[1:])
        if hit is not None:
            buffer.inc(metrics.cache_hit)
            cache.set(keys[:1], hit)
            return _cached(hit, headers, request)
        buffer.inc(metrics.cache_miss)
    decoded_at = time.perf_counter()
    buffer.observe(metrics.stage_children["decode"], decoded_at - started)

    unknown = set().union(*rows).difference(state.known_columns) if full_rows else ()
    if unknown:
        buffer.inc(metrics.unknown_keys, sum(1 for r in rows if not r.keys() <= state.known_columns))
    reject_unseen = settings.unseen_category_policy is UnseenCategoryPolicy.REJECT
    scored = model.score(rows, reject_unseen=reject_unseen)
    for column, count in scored.unseen.items():
        buffer.inc(metrics.unseen.labels(column), count)
    if scored.unseen:
        headers["X-Unseen-Categories"] = str(sum(scored.unseen.values()))
    if scored.errors and (decoded.single or settings.batch_error_policy is BatchErrorPolicy.REJECT):
        raise _rows_error(scored.errors, scored.bad_rows, len(rows), settings.max_errors_listed)
    scored_at = time.perf_counter()
    buffer.observe(metrics.stage_children["score"], scored_at - decoded_at)

    records: list[Any] = model.records(scored)
    if scored.bad_rows:
        by_row: dict[int, list[dict[str, Any]]] = {}
        for e in scored.errors:
            by_row.setdefault(e.row or 0, []).append({"field": e.field, "reason": e.reason, "value": e.value})
        for i in scored.bad_rows:
            records[i] = {"errors": by_row[i], "row": i}
        headers["X-Rejected-Rows"] = str(len(scored.bad_rows))
    out = orjson.dumps(records[0] if decoded.single else records)
    buffer.observe(metrics.stage_children["encode"], time.perf_counter() - scored_at)

    good = len(rows) - len(scored.bad_rows)
    buffer.inc(metrics.rows, good)
    buffer.observe(metrics.rows_per_request, len(rows))
    ones = (
        sum(scored.outcome)
        if not scored.bad_rows
        else sum(o for i, o in enumerate(scored.outcome) if i not in scored.bad_rows)
    )
    buffer.inc(metrics.outcome_children[1], ones)
    buffer.inc(metrics.outcome_children[0], good - ones)
    metrics.observe_phat(
        scored.phat
        if not scored.bad_rows
        else (p for i, p in enumerate(scored.phat) if i not in scored.bad_rows)
    )
    if state.drift is not None:
        state.drift.observe(model, scored)  # O(1): the statistics are computed lazily
    if keys and not scored.bad_rows and not scored.unseen and len(out) <= settings.cache_max_value_bytes:
        headers["Vary"] = "Accept-Encoding"
        if accepts_gzip(request.headers.get("accept-encoding")):  # stored gzipped: see content_encoding.py
            out = gzip_body(out)
            headers["Content-Encoding"] = "gzip"
        cache.set(keys, out)
    return Response(out, media_type=JSON, headers=headers)


def _cached(value: bytes, headers: dict[str, str], request: Request) -> Response:
    """A hit: the stored answer as stored (gzip when the client accepts it), else decompressed."""
    headers = {**headers, "X-Cache": "hit", "Vary": "Accept-Encoding"}
    if is_gzip(value):
        if accepts_gzip(request.headers.get("accept-encoding")):
            headers["Content-Encoding"] = "gzip"
        else:
            value = gunzip_body(value)
    return Response(value, media_type=JSON, headers=headers)


def _rows_error(errors: list[FieldError], bad_rows: set[int], n: int, cap: int) -> InputError:
    first = errors[0]
    detail = (
        f"{len(bad_rows)} of {n} row(s) cannot be scored; first: row {first.row}, field {first.field}: "
        f"{first.reason}"
    )
    return InputError(
        detail,
        errors=errors[:cap],
        error_count=len(errors),
        bad_rows=sorted(bad_rows)[:cap],
        bad_row_count=len(bad_rows),
    )


@router.get("/health/live", summary="Liveness: the process answers")
async def live() -> Response:
    return Response(b'{"status":"live"}', media_type=JSON)


@router.get(
    "/health/ready",
    summary="Readiness: the model is loaded and passed its golden-row self-check",
    responses={503: {"description": "Not ready yet (problem+json)"}},
)
async def ready(request: Request) -> Response:
    holder = request.app.state.holder
    model = holder.current
    if model is None:
        body = problem_body(
            status=503,
            kind="not-ready",
            title="Model not loaded yet",
            detail=holder.last_error or "the model is loading",
            instance="/health/ready",
        )
        return problem_response(body, headers={"Retry-After": "1"})
    return Response(
        orjson.dumps(
            {"status": "ready", "model": model.name, "version": model.version, "sha256": model.sha256}
        ),
        media_type=JSON,
        headers={"X-Model-Version": model.version},
    )


MODEL_FIELDS = (
    "name",
    "version",
    "created_at",
    "selected_features",
    "coefficients",
    "standard_errors",
    "cutoff",
    "metrics",
    "fit",
    "input_schema",
    "training",
    "data_sha256",
    "library_versions",
)


@router.get(
    "/model", summary="The served model: version, sha256, features, coefficients, cutoff, metrics, schema"
)
async def model_info(request: Request) -> Response:
    holder = request.app.state.holder
    model = holder.current
    if model is None:
        raise ModelNotReady("the model is still loading; retry shortly", retry_after=1)
    meta = holder.metadata
    body = {k: meta.get(k) for k in MODEL_FIELDS}
    body["sha256"] = model.sha256
    body["training"] = {k: v for k, v in (meta.get("training") or {}).items() if k != "l1_coefficients"}
    return Response(orjson.dumps(body), media_type=JSON, headers={"X-Model-Version": model.version})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    if request.app.state.drift is not None:
        request.app.state.drift.publish()  # this worker's drift gauges, fresh for the scrape
    data, content_type = request.app.state.metrics.render()
    return Response(data, media_type=content_type)
