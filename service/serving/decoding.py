"""From request bytes to rows: content type, size limits, JSON decoding and body shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from service.errors import (
    BadBodyShape,
    ErrorCollector,
    FieldError,
    MalformedJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
)


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    shown = media or "none"
    raise UnsupportedMediaType(f"Content-Type must be application/json, got {shown[:60]!r}")


def check_declared_length(value: str | None, limit: int) -> None:
    if value is None:
        return
    try:
        length = int(value)
    except ValueError:
        return
    if length > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes", limit_bytes=limit)


@dataclass
class DecodedBody:
    rows: list[dict[str, Any]]
    single: bool
    payload: Any


def decode_rows(body: bytes, *, max_rows: int, max_errors: int) -> DecodedBody:
    """Bytes -> rows. 400 malformed JSON, 413 too many rows, 422 wrong shape (naming every bad element)."""
    if not body.strip():
        raise MalformedJSON("the request body is empty; send a JSON object or an array of objects")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(payload, dict):
        return DecodedBody(rows=[payload], single=True, payload=payload)
    if not isinstance(payload, list):
        raise BadBodyShape(f"expected a JSON object or an array of objects, got {type(payload).__name__}")
    if not payload:
        raise BadBodyShape(f"the array is empty; send 1 to {max_rows} rows")
    if len(payload) > max_rows:
        raise PayloadTooLarge(
            f"{len(payload)} rows exceed the limit of {max_rows} rows per request; split the batch",
            max_rows=max_rows,
        )
    if not all(type(row) is dict for row in payload):
        errors = ErrorCollector(cap=max_errors)
        for i, row in enumerate(payload):
            if type(row) is not dict:
                errors.add(FieldError(i, None, f"row must be a JSON object, got {type(row).__name__}"))
        raise BadBodyShape(
            f"{errors.total} element(s) of the array are not JSON objects",
            errors=errors.errors,
            error_count=errors.total,
        )
    return DecodedBody(rows=payload, single=False, payload=payload)


class ColumnDecoder:
    """Decodes only the columns a model uses: msgspec skips every other key without building objects.

    Values keep their JSON types (number -> float, string -> str, null -> None), exactly what orjson would
    give for those keys, so scoring is unchanged. Anything this decoder does not take -- malformed JSON,
    a wrong body shape, a boolean or an object where a value belongs, too many rows -- returns None, and the
    full orjson path decodes the body and reports every problem as today.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        row = msgspec.defstruct("Row", [(c, float | str | None, None) for c in columns], gc=False)
        self._decoder = msgspec.json.Decoder(list[row] | row)  # type: ignore[valid-type]

    def decode(self, body: bytes, *, max_rows: int) -> DecodedBody | None:
        try:
            payload = self._decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if isinstance(payload, list):
            if not payload or len(payload) > max_rows:
                return None
            return DecodedBody(rows=payload, single=False, payload=payload)
        return DecodedBody(rows=[payload], single=True, payload=payload)
