"""HTTP routes: /predict, health probes, /model and /metrics."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.calls import request_head, run_call
from service.api.openapi_docs import (
    LIVE_RESPONSES,
    MODEL_RESPONSES,
    PREDICT_OPENAPI,
    PREDICT_RESPONSES,
    READY_RESPONSES,
)
from service.api.operation_ids import operation_id
from service.api.problems import problem_body, problem_response
from service.api.state import app_state
from service.errors import InputError
from service.serving.formats import formats_for, located

router = APIRouter(generate_unique_id_function=operation_id)
JSON = "application/json"


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
    """HTTP in and out; the scoring pipeline (service/serving/pipeline.py) does the rest. Content-Type and
    Accept pick the codec: JSON or CSV in, JSON or CSV out (service/serving/formats.py)."""
    state = app_state(request)
    head = request_head(request.scope)
    settings = state.settings
    codec = formats_for(
        head.content_type,
        head.accept,
        state.pipeline.codec,
        max_rows=settings.max_rows,
        max_errors=settings.max_errors_listed,
    )
    try:
        answer = await run_call(request, codec, head=head)
    except InputError as error:
        raise located(codec, error) from None  # a CSV body's errors name its lines
    return Response(
        answer.body, status_code=answer.status, headers=answer.headers, media_type=answer.media_type
    )


@router.get("/health/live", summary="Liveness: the process answers", responses=LIVE_RESPONSES)
async def live() -> Response:
    return Response(b'{"status":"live"}', media_type=JSON)


@router.get(
    "/health/ready",
    summary="Readiness: the model is loaded and passed its golden-row self-check",
    responses=READY_RESPONSES,
)
async def ready(request: Request) -> Response:
    holder = app_state(request).holder
    model = holder.current
    if model is None:
        # Why, in words fit for anyone who can reach this (nginx proxies it): no paths, no hashes; the
        # worker log has the full error. Retry-After even for a refused version: a probe polls anyway.
        error = holder.unavailable()
        body = problem_body(
            status=error.status,
            kind=error.kind,
            title=error.title,
            detail=error.detail,
            instance="/health/ready",
        )
        return problem_response(body, headers={"Retry-After": "1"})
    answer: dict[str, object] = {"status": "ready", "model": model.name, "version": model.version}
    failure = holder.failure
    if failure is not None:
        # Still 200: the worker serves a verified version and can answer; taking every worker out of
        # rotation over a version none of them can load would turn a bad promotion into an outage. The
        # skew shows here, in propensity_model_behind_alias and in its alert.
        answer |= {"behind_alias": True, "alias_version": failure.version}
    return Response(orjson.dumps(answer), media_type=JSON, headers={"X-Model-Version": model.version})


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
    "/model",
    summary="The served model: version, sha256, features, coefficients, cutoff, metrics, schema",
    responses=MODEL_RESPONSES,
)
async def model_info(request: Request) -> Response:
    holder = app_state(request).holder
    model = holder.current
    if model is None:
        raise holder.unavailable()
    meta = holder.metadata
    body = {k: meta.get(k) for k in MODEL_FIELDS}
    body["sha256"] = model.sha256
    body["intercept"] = model.intercept
    if meta.get("recalibrated_from") is not None:
        body["recalibrated_from"] = meta["recalibrated_from"]
    body["training"] = {k: v for k, v in (meta.get("training") or {}).items() if k != "l1_coefficients"}
    return Response(orjson.dumps(body), media_type=JSON, headers={"X-Model-Version": model.version})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    state = app_state(request)
    if state.drift is not None:
        state.drift.publish()  # this worker's drift gauges, fresh for the scrape
    data, content_type = state.metrics.render()
    return Response(data, media_type=content_type)
