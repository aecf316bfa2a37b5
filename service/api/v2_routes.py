"""The Open Inference Protocol (KServe V2) REST door: health, metadata and inference, an adapter over the
one scoring pipeline (the codec is service/serving/v2_codec.py).

    GET  /v2                                         server metadata
    GET  /v2/health/live, /v2/health/ready           liveness; readiness exactly as /health/ready
    GET  /v2/models/{name}[/versions/{v}]            model metadata from the served version
    GET  /v2/models/{name}[/versions/{v}]/ready      model readiness
    POST /v2/models/{name}[/versions/{v}]/infer      inference (JSON, or binary tensor data)

Errors are the protocol's `{"error": "..."}` (what tritonclient and KServe's client read), with the
problem's other members beside it (errors, bad_rows, ...): 400 for any bad input (the rows a /predict
call would get a 422 for, too), 404 for a model name or version this server does not serve, 503 while no
model is served, and the pipeline's 408, 413, 415 as they are. A version is one this worker serves ("v1",
or "1"): during a rollout another worker may serve another, and a request for a version is answered by it
or not at all.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import metadata as package_metadata
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import v2_schemas
from service.api.calls import run_call
from service.api.operation_ids import operation_id
from service.api.state import AppState, app_state
from service.errors import Overloaded, PropensityError
from service.serving import v2_binary
from service.serving.compression import gunzip_body
from service.serving.pipeline import Answer
from service.serving.scorer import CompiledModel
from service.serving.v2_codec import BINARY_TYPE, JSON_TYPE, V2Codec, model_metadata
from service.serving.v2_request import InferenceRequestError

log = logging.getLogger("propensity.api")
router = APIRouter(tags=["Open Inference Protocol (V2)"], generate_unique_id_function=operation_id)
HEADER_LENGTH = "Inference-Header-Content-Length"
_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
EXTENSIONS = ["binary_tensor_data"]


class UnknownModel(PropensityError):
    """A model name or version this server does not serve."""

    status = 404
    kind = "unknown-model"
    title = "No such model or version"
    public = True


@cache
def server_version() -> str:
    try:
        return package_metadata.version("propensity-service")
    except package_metadata.PackageNotFoundError:  # pragma: no cover - a checkout that was never installed
        return "0"


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_TYPE, headers=headers)


def v2_error(request: Request, exc: PropensityError) -> Response:
    """The protocol's error answer for a PropensityError: {"error": detail, ...the problem's members}.
    A server-side error (not public: it names paths and hashes) goes on to the app's handler, which logs
    it and answers the generic 500 every route does."""
    if not exc.public:
        raise exc
    app_state(request).metrics.input_errors.labels(exc.kind).inc()
    if exc.status >= 500 and not isinstance(exc, Overloaded):  # shedding is counted, not logged
        request_id = request.scope.get("state", {}).get("request_id", "?")
        log.error("request_id=%s %s", request_id, exc.detail)
    status = 400 if exc.status == 422 else exc.status  # the protocol's status for bad input is 400
    body: dict[str, Any] = {"error": exc.detail, "kind": exc.kind}
    if exc.errors:
        body["errors"] = [e.as_dict() for e in exc.errors]
        body["error_count"] = exc.extra.get("error_count", len(exc.errors))
    body |= {k: v for k, v in exc.extra.items() if k not in ("retry_after", "error_count", "headers")}
    headers = dict(exc.headers)
    if "retry_after" in exc.extra:
        headers["Retry-After"] = str(exc.extra["retry_after"])
    if exc.close_connection:
        headers["Connection"] = "close"
    return _json(body, status, headers or None)


# --- which model ----------------------------------------------------------------------------------------
def _known_name(state: AppState, model: CompiledModel | None, name: str) -> bool:
    """A name the served model answers to: the registry's, or the one its card gives."""
    return name == state.settings.model_name or (model is not None and name == model.name)


def _served(request: Request, name: str, version: str | None) -> CompiledModel:
    """The served model when `name` (and `version`) name it; 404 for another name or version, 503 while
    none is served."""
    state = app_state(request)
    holder = state.holder
    model = holder.current
    if not _known_name(state, model, name):
        raise UnknownModel(f"unknown model {name[:60]!r}; this server serves {state.settings.model_name!r}")
    if model is None:
        raise holder.unavailable()
    _check_version(model.version, name, version)
    return model


def _check_version(served: str, name: str, version: str | None) -> None:
    """404 unless `version` (None: any) is the served one, "v1" or "1"."""
    if version is None or version in (served, served.removeprefix("v")):
        return
    raise UnknownModel(
        f"version {version[:40]!r} of {name[:60]!r} is not served here (this worker serves {served}); "
        f"use /v2/models/{name[:60]}/infer for the served version"
    )


# --- inference (first: routes are matched in order, and these are the hot ones) ------------------
def _header_length(request: Request) -> int | None:
    """Inference-Header-Content-Length (None when absent); 400 when it is not a byte count."""
    for key, value in request.scope["headers"]:
        if key == _HEADER_LENGTH:
            text = value.decode("latin-1").strip()
            if not (text.isascii() and text.isdigit()):
                raise InferenceRequestError(
                    f"{HEADER_LENGTH} must be the length of the JSON header in bytes, got {text[:40]!r}"
                )
            return int(text)
    return None


def _binary_header_length(codec: V2Codec, answer: Answer, limit: int) -> int | None:
    """The length of the answer's JSON header when binary tensor data follow it, else None. A fresh
    answer's codec knows; a cached one (a hit: the codec never encoded) is read."""
    if codec.answer_header_length is not None:
        return codec.answer_header_length if codec.media_type == BINARY_TYPE else None
    plain: bytes | None = answer.body
    if answer.headers.get("Content-Encoding") == "gzip":
        plain = gunzip_body(answer.body, limit)
    length = None if plain is None else v2_binary.json_header_length(plain)
    return length if plain is not None and length is not None and length < len(plain) else None


async def _infer(request: Request, name: str, version: str | None) -> Response:
    try:
        _served(request, name, version)
        settings = app_state(request).settings
        codec = V2Codec(
            model_name=name,
            max_rows=settings.max_rows,
            max_errors=settings.max_errors_listed,
            header_length=_header_length(request),
        )
        answer = await run_call(request, codec)
        if version is not None:  # the models may have been swapped between the check and the call
            _check_version(answer.headers.get("X-Model-Version", ""), name, version)
        length = _binary_header_length(codec, answer, settings.cache_max_value_bytes)
    except PropensityError as exc:
        return v2_error(request, exc)
    headers = answer.headers
    media_type = JSON_TYPE
    if length is not None:
        headers[HEADER_LENGTH] = str(length)
        media_type = BINARY_TYPE
    return Response(answer.body, status_code=answer.status, headers=headers, media_type=media_type)


@router.post(
    "/v2/models/{name}/infer",
    summary="Inference: one input per column, JSON or binary tensor data",
    description=v2_schemas.INFER_DESCRIPTION,
    responses=v2_schemas.INFER_RESPONSES,
    openapi_extra=v2_schemas.INFER_OPENAPI,
)
async def v2_infer(request: Request) -> Response:
    return await _infer(request, request.path_params["name"], None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference by a version (the one this worker serves)",
    description=v2_schemas.INFER_DESCRIPTION,
    responses=v2_schemas.INFER_RESPONSES,
    openapi_extra=v2_schemas.VERSION_INFER_OPENAPI,
)
async def v2_version_infer(request: Request) -> Response:
    params = request.path_params
    return await _infer(request, params["name"], params["version"])


# --- server ---------------------------------------------------------------------------------------------
@router.get("/v2", summary="Server metadata", responses=v2_schemas.SERVER_METADATA)
async def v2_server_metadata() -> Response:
    return _json({"name": "propensity-service", "version": server_version(), "extensions": EXTENSIONS})


@router.get("/v2/health/live", summary="Server liveness", responses=v2_schemas.SERVER_LIVE)
async def v2_live() -> Response:
    return _json({"live": True})


@router.get(
    "/v2/health/ready", summary="Server readiness (as /health/ready)", responses=v2_schemas.SERVER_READY
)
async def v2_ready(request: Request) -> Response:
    holder = app_state(request).holder
    if holder.current is None:
        error = holder.unavailable()
        return _json({"ready": False, "error": error.detail}, 503, {"Retry-After": "1"})
    return _json({"ready": True})


# --- model metadata and readiness -----------------------------------------------------------------------
async def _metadata(request: Request, name: str, version: str | None) -> Response:
    try:
        model = _served(request, name, version)
    except PropensityError as exc:
        return v2_error(request, exc)
    body = model_metadata(model, name)
    return Response(orjson.dumps(body), media_type=JSON_TYPE, headers={"X-Model-Version": model.version})


@router.get("/v2/models/{name}", summary="Model metadata", responses=v2_schemas.MODEL_METADATA)
async def v2_model_metadata(request: Request, name: str) -> Response:
    return await _metadata(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}",
    summary="Model metadata of a version",
    responses=v2_schemas.MODEL_METADATA,
)
async def v2_model_version_metadata(request: Request, name: str, version: str) -> Response:
    return await _metadata(request, name, version)


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    try:
        model = _served(request, name, version)
    except UnknownModel as exc:
        return v2_error(request, exc)
    except PropensityError as exc:  # not loaded yet, or refused: not ready, as /health/ready says
        return _json({"name": name, "ready": False, "error": exc.detail}, 503, {"Retry-After": "1"})
    return _json({"name": name, "ready": True}, headers={"X-Model-Version": model.version})


@router.get("/v2/models/{name}/ready", summary="Model readiness", responses=v2_schemas.MODEL_READY)
async def v2_model_ready(request: Request, name: str) -> Response:
    return await _model_ready(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model readiness of a version",
    responses=v2_schemas.MODEL_READY,
)
async def v2_model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _model_ready(request, name, version)
