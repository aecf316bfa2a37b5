"""HTTP doors of the loop after the answer: POST /feedback (labels), GET /performance (what they show) and
GET /performance/shadow (a challenger on the same labelled rows).

The work is service/monitoring/feedback.py's; both run it in a worker thread (a database round trip must
not hold the event loop that answers /predict)."""

from __future__ import annotations

import time

import anyio.to_thread
import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.api.body import read_body
from service.api.feedback_schemas import (
    FEEDBACK_RESPONSES,
    PERFORMANCE_RESPONSES,
    SHADOW_PERFORMANCE_RESPONSES,
    feedback_openapi,
)
from service.api.operation_ids import operation_id
from service.api.state import AppState, app_state
from service.durations import parse_duration
from service.errors import FieldError, InputError, PredictionLogOff, UnsupportedMediaType
from service.monitoring.feedback import MAX_LABELS, Feedback, parse_labels

router = APIRouter(tags=["label feedback and performance"], generate_unique_id_function=operation_id)
JSON = "application/json"
FEEDBACK_MAX_BYTES = 8 * 1024 * 1024  # 10,000 labels with long ids and timestamps fit in ~1.5 MB


@router.post(
    "/feedback",
    summary="Labels for logged predictions: by (request_id, row) or a pass-through id",
    description=(
        "Up to 10,000 labels per call. Idempotent: a label sent again is counted as a duplicate, a different "
        "label for a labelled row as a conflict (the first stays). Answers 202 with the counts; any bad item "
        "is a 422 naming its index, field and reason, and nothing is stored."
    ),
    status_code=202,
    responses=FEEDBACK_RESPONSES,
    openapi_extra=feedback_openapi(MAX_LABELS),
)
async def feedback(request: Request) -> Response:
    state = app_state(request)
    if state.feedback is None:
        raise PredictionLogOff("the prediction log is off (PROPENSITY_PREDICTION_LOG_ENABLED=false)")
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in (JSON, ""):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type[:60]!r}")
    body = await read_body(request, FEEDBACK_MAX_BYTES, reads=state.body_reads)
    items = parse_labels(
        body.joined(), state.settings.passthrough_fields, max_errors=state.settings.max_errors_listed
    )
    answer = await anyio.to_thread.run_sync(state.feedback.receive, items)
    return Response(orjson.dumps(answer), status_code=202, media_type=JSON)


@router.get(
    "/performance",
    summary="Realized and estimated performance by cohort, with confidence intervals",
    description=(
        "Cohorts of logged predictions by prediction day, hour or model version (or all): label coverage, "
        "realized AUC, log loss, Brier, calibration, precision and recall at the business cutoff, and the "
        "estimates made before labels (CBPE), each with an interval. `since` and `until`: how long ago, "
        "as a duration (30d, 12h, 90m)."
    ),
    responses=PERFORMANCE_RESPONSES,
)
async def performance(
    request: Request,
    since: str = Query("30d", max_length=32, description="Cohorts of rows scored since this long ago"),
    until: str | None = Query(None, max_length=32, description="... and until this long ago (default now)"),
    by: str = Query("day", pattern="^(day|hour|version|all)$", description="Cohorts by"),
    version: str | None = Query(None, max_length=64, description="Only this model version"),
) -> Response:
    state = app_state(request)
    feedback, start, end = _logged_window(state, since, until)
    model = state.holder.current
    if model is None:
        raise state.holder.unavailable()
    answer = await anyio.to_thread.run_sync(
        lambda: feedback.performance(since=start, until=end, by=by, version=version, cutoff=model.cutoff)
    )
    answer["served_version"] = model.version
    return Response(orjson.dumps(answer), media_type=JSON)


@router.get(
    "/performance/shadow",
    summary="The shadow-scored challenger beside the served model, on the same labelled live rows",
    description=(
        "Rows shadow scoring compared (PROPENSITY_SHADOW_SHARE) that got a label through POST /feedback: "
        "each model's realized metrics on exactly those rows, the paired log-loss and Brier differences "
        "with intervals, the outcome flips by who was right, and which model is better on log loss when "
        "the interval says so. `since` and `until`: how long ago, as a duration (30d, 12h, 90m)."
    ),
    responses=SHADOW_PERFORMANCE_RESPONSES,
)
async def shadow_performance(
    request: Request,
    since: str = Query("30d", max_length=32, description="Rows scored since this long ago"),
    until: str | None = Query(None, max_length=32, description="... and until this long ago (default now)"),
    version: str | None = Query(None, max_length=64, description="Only this challenger version"),
) -> Response:
    feedback, start, end = _logged_window(app_state(request), since, until)
    answer = await anyio.to_thread.run_sync(
        lambda: feedback.shadow_performance(since=start, until=end, version=version)
    )
    return Response(orjson.dumps(answer), media_type=JSON)


def _logged_window(state: AppState, since: str, until: str | None) -> tuple[Feedback, float, float | None]:
    """The log's reader and the window [now - since, now - until) in epoch seconds; 404 when the log is
    off, 422 for a duration that is not one."""
    if state.feedback is None:
        raise PredictionLogOff("the prediction log is off (PROPENSITY_PREDICTION_LOG_ENABLED=false)")
    now = time.time()
    start = now - _duration("since", since)
    return state.feedback, start, None if until is None else now - _duration("until", until)


def _duration(name: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InputError(str(exc), errors=[FieldError(None, name, str(exc), text[:40])]) from None
