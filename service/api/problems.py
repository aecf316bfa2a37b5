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


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=int(body["status"]), media_type=PROBLEM_TYPE, headers=headers
    )
