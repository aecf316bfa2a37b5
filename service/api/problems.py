"""RFC 9457 problem+json bodies for every error response."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from service.errors import FieldError

PROBLEM_TYPE = "application/problem+json"
PROBLEM_BASE = "https://propensity.invalid/problems/"  # stable identifiers; documented in the README


def problem_body(
    *,
    status: int,
    kind: str,
    title: str,
    detail: str,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    error_count: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = [e.as_dict() for e in errors]
        body["error_count"] = error_count if error_count is not None else len(errors)
    if extra:
        body.update(extra)
    return body


def mlflow_error_code(status: int) -> str:
    """MLflow's error_code for an HTTP status: every client error is BAD_REQUEST, as MLflow's server says."""
    if status == 503:
        return "TEMPORARILY_UNAVAILABLE"
    return "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR"


def protocol_members(path: str, status: int, detail: str) -> dict[str, Any]:
    """The members a protocol's own clients read in an error the app's handlers answer (a 404, 405 or 500
    no door caught): tritonclient and kserve read `error` on /v2, MLflow's client `error_code` and
    `message` on /invocations. Every other path gets none."""
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": detail}
    if path == "/invocations":
        return {"error_code": mlflow_error_code(status), "message": detail}
    return {}


def problem_response(
    body: dict[str, Any], headers: dict[str, str] | None = None, path: str | None = None
) -> Response:
    """The problem+json answer; with `path`, the protocol_members of its door in front."""
    if path is not None:
        body = {**protocol_members(path, int(body["status"]), str(body["detail"])), **body}
    return Response(
        orjson.dumps(body), status_code=int(body["status"]), media_type=PROBLEM_TYPE, headers=headers
    )
