"""MLflow's scoring protocol: POST /invocations, GET /ping, /health and /version, as MLflow's scoring
server (mlflow models serve) answers them, over the one scoring pipeline (service/api/calls.py).

/invocations reads an MLflow scoring body (service/serving/mlflow_codec.py) or a CSV with a header row
and answers {"predictions": [...]}, each result exactly /predict's for the row. Reason codes: the body's
params {"reasons": k}, else the same `reasons` query parameter or X-Reason-Codes header as /predict.

Errors answer in MLflow's shape and in problem+json at once: `error_code` and `message` first (what
MLflow's clients read), then the RFC 9457 members the app's error handler writes for every other door
(type, title, status, detail, and every bad row, field and reason), as application/problem+json. The HTTP
status is this service's (422 for rows that cannot be scored, 413, 415, 503 ...), not MLflow's blanket 400.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

import orjson
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from service.api.calls import request_head, run_call
from service.api.mlflow_schemas import (
    INVOCATIONS_OPENAPI,
    INVOCATIONS_RESPONSES,
    PING_RESPONSES,
    VERSION_RESPONSES,
)
from service.api.operation_ids import operation_id
from service.api.problems import mlflow_error_code
from service.api.state import app_state
from service.errors import InputError, PropensityError
from service.serving.csv_rows import CSV_MEDIA_TYPES
from service.serving.formats import located
from service.serving.mlflow_codec import MlflowCsv, MlflowJson, media_type
from service.serving.pipeline import Codec
from service.settings import Settings

# The tag names a generated client's module (mlflow_scoring_protocol) and the group in the docs pages.
mlflow_router = APIRouter(tags=["mlflow scoring protocol"], generate_unique_id_function=operation_id)
PACKAGE = "propensity-service"
PING_BODY = b"\n"  # what MLflow's scoring server answers (it labels it application/json; it is not JSON)


async def mlflow_error(request: Request, exc: PropensityError) -> Response:
    """The app's own answer to `exc` (counted, logged, its detail hidden when not public, its headers),
    with MLflow's `error_code` and `message` in front."""
    handler = request.app.exception_handlers.get(PropensityError)
    if handler is None:  # an app without the handlers: the error goes its usual way
        raise exc
    answer: Response = await handler(request, exc)
    problem = orjson.loads(answer.body)
    body = {
        "error_code": mlflow_error_code(answer.status_code),
        "message": problem.get("detail", ""),
        **problem,
    }
    headers = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")}
    return Response(orjson.dumps(body), answer.status_code, headers, answer.media_type)


class MlflowCodecs:
    """The wire formats of /invocations, from the app's settings: the JSON codec (one per app) and a CSV
    codec per call (it keeps the batch it read, to name CSV lines in errors)."""

    def __init__(self, settings: Settings) -> None:
        self.max_rows, self.max_errors = settings.max_rows, settings.max_errors_listed
        self.json = MlflowJson(max_rows=self.max_rows, max_errors=self.max_errors)

    def for_content_type(self, content_type: str | None) -> Codec:
        """The CSV codec for text/csv; else the JSON codec, whose media-type check answers any other type
        with the 415 that names the two this door reads."""
        if media_type(content_type)[0] in CSV_MEDIA_TYPES:
            return MlflowCsv(max_rows=self.max_rows, max_errors=self.max_errors)
        return self.json


def codecs_of(request: Request) -> MlflowCodecs:
    state = request.app.state
    codecs: MlflowCodecs | None = getattr(state, "mlflow_codecs", None)
    if codecs is None:
        codecs = state.mlflow_codecs = MlflowCodecs(app_state(request).settings)
    return codecs


@mlflow_router.post(
    "/invocations",
    summary="Score rows sent in MLflow's scoring protocol",
    description=(
        "The body of MLflow's scoring server (`mlflow models serve`): a JSON object with one of "
        "`dataframe_split` ({columns, data, index?}), `dataframe_records` (an array of row objects), "
        "`instances` or `inputs` (rows as objects, or columns as {column: [values]}), and optionally "
        '`params` ({"reasons": k}); or `text/csv` with a header row. The answer is '
        '{"predictions": [...]}: each result exactly what /predict answers for the row. Rows follow '
        "/predict's rules (a row without the model's columns is refused, absent columns are imputed and "
        "named in X-Imputed-Columns); a batch with a row that cannot be scored is refused whole. Errors "
        "carry MLflow's `error_code` and `message` in a problem+json body."
    ),
    responses=INVOCATIONS_RESPONSES,
    openapi_extra=INVOCATIONS_OPENAPI,
)
async def invocations(request: Request) -> Response:
    head = request_head(request.scope)
    codec = codecs_of(request).for_content_type(head.content_type)
    try:
        answer = await run_call(request, codec, head=head)
    except InputError as exc:
        return await mlflow_error(request, located(codec, exc))  # a CSV's errors name their lines
    except PropensityError as exc:
        return await mlflow_error(request, exc)
    return Response(answer.body, answer.status, answer.headers, answer.media_type)


async def _ping(request: Request) -> Response:
    holder = app_state(request).holder
    model = holder.current
    if model is None:
        return await mlflow_error(request, holder.unavailable())
    # "text/plain" as declared (Starlette would add a charset to a media_type it is given)
    return Response(PING_BODY, headers={"Content-Type": "text/plain", "X-Model-Version": model.version})


@mlflow_router.get(
    "/ping",
    summary="MLflow's readiness probe: 200 once a model is served",
    responses=PING_RESPONSES,
    response_class=PlainTextResponse,
)
async def ping(request: Request) -> Response:
    return await _ping(request)


@mlflow_router.get(
    "/health",
    summary="The same as /ping, as MLflow's server answers",
    responses=PING_RESPONSES,
    response_class=PlainTextResponse,
)
async def mlflow_health(request: Request) -> Response:
    return await _ping(request)


@cache
def service_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # a checkout run without its package installed
        return "unknown"


@mlflow_router.get(
    "/version", summary="The service's version and the served model version", responses=VERSION_RESPONSES
)
async def mlflow_version(request: Request) -> Response:
    model = app_state(request).holder.current
    body = {
        "model": None if model is None else model.name,
        "model_version": None if model is None else model.version,
        "service": PACKAGE,
        "service_version": service_version(),
    }
    return Response(orjson.dumps(body), media_type="application/json")
