"""From request bytes to a batch: content type, size limits, JSON decoding and body shape."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
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
from service.serving.batch import ColumnBatch, JsonBatch


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    shown = media or "none"
    raise UnsupportedMediaType(f"Content-Type must be application/json, got {shown[:60]!r}")


def check_declared_length(length: int | None, limit: int) -> None:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes", limit_bytes=limit)


def decode_rows(body: bytes, *, max_rows: int, max_errors: int) -> JsonBatch:
    """Bytes -> rows. 400 malformed JSON, 413 too many rows, 422 wrong shape (naming every bad element)."""
    if not body.strip():
        raise MalformedJSON("the request body is empty; send a JSON object or an array of objects")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(payload, dict):
        return JsonBatch([payload], single=True)
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
    return JsonBatch(payload)


# One decode is one C call that holds the GIL throughout: a big array is decoded in slices of about this
# many bytes, so while a worker thread decodes it, the event loop gets the GIL between two slices.
SLICE_BYTES = 1024 * 1024
# Between two rows of an array: "}" then "," then "{", with JSON whitespace around the comma.
_ROW_GAP = re.compile(rb"\}[ \t\n\r]*,[ \t\n\r]*\{")


def row_slices(body: bytes, size: int) -> Iterator[bytes]:
    """A JSON array's bytes as arrays of consecutive rows, cut between two rows about every `size` bytes.

    A cut can land in a string or in a nested value that holds "},{"; the slice that ends there is then
    not valid JSON (it ends inside a string or with a container open). So when every slice decodes, every
    cut was between two rows of the array, and the slices' rows are the array's rows.
    """
    view = memoryview(body)
    start = 0  # the first slice keeps the body's own "["
    while start + 2 * size < len(body):
        gap = _ROW_GAP.search(body, start + size)
        if gap is None:
            break
        end = gap.start() + 1  # just after the "}"
        yield b"".join((b"[" if start else b"", view[start:end], b"]"))
        start = gap.end() - 1  # at the "{"
    yield b"".join((b"[", view[start:])) if start else body


def _struct_get(row: msgspec.Struct, column: str) -> Any:
    return getattr(row, column, None)


class ColumnDecoder:
    """Decodes only the columns a model uses: msgspec skips every other key without building objects.

    Values keep their JSON types (number -> float, string -> str, null -> None), exactly what orjson would
    give for those keys, so scoring is unchanged. Anything this decoder does not take -- malformed JSON,
    a wrong body shape, a boolean or an object where a value belongs, too many rows -- returns None, and the
    full orjson path decodes the body and reports every problem as today. A row has `.get(column)` like
    a dict, so the few-rows scoring path takes it as it takes a JSON object.
    """

    def __init__(self, columns: Sequence[str], *, slice_bytes: int = SLICE_BYTES) -> None:
        fields = [(c, float | str | None, None) for c in columns]
        row = msgspec.defstruct("Row", fields, gc=False, namespace={"get": _struct_get})
        self._decoder = msgspec.json.Decoder(list[row] | row)  # type: ignore[valid-type]
        self._rows_decoder = msgspec.json.Decoder(list[row])  # type: ignore[valid-type]
        self.slice_bytes = slice_bytes

    def decode(self, body: bytes, *, max_rows: int) -> ColumnBatch | None:
        try:
            payload = self._sliced(body) if self._sliceable(body) else None
            if payload is None:
                payload = self._decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if isinstance(payload, list):
            if not payload or len(payload) > max_rows:
                return None
            return ColumnBatch(payload)
        return ColumnBatch([payload], single=True)

    def _sliceable(self, body: bytes) -> bool:
        return len(body) >= 2 * self.slice_bytes and body[:16].lstrip()[:1] == b"["

    def _sliced(self, body: bytes) -> list[Any] | None:
        """The array's rows, decoded slice by slice; None when a slice does not decode (the whole body is
        then decoded at once and gives the verdict, as for a body too small to slice)."""
        rows: list[Any] = []
        try:
            for piece in row_slices(body, self.slice_bytes):
                rows += self._rows_decoder.decode(piece)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return rows
