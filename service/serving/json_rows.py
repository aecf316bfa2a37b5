"""The JSON rows format of /predict, as a codec of the scoring pipeline.

In: one JSON object (one row) or an array of 1 to `max_rows` objects, keyed by the model's columns
(service/serving/row_keys.py says which keys are refused and which reported); bare NaN is read as null,
a UTF-8 byte order mark is skipped (service/serving/decoding.py). Out: one object for one object, else
an array in the request's order; each result has the model inputs as the GLM saw them,
`business_outcome` and `phat`, keys in alphabetical order. Under the score-valid policy a row that
cannot be scored comes back as {"errors": [...], "row": i}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service.serving.batch import Batch
from service.serving.decoding import check_content_type, decode_rows, nan_as_null, skip_bom
from service.serving.results import result_records
from service.serving.scorer import CompiledModel, Scored
from service.serving.turns import no_pause

# Bodies at least this large are decoded by columns (msgspec skips the 90 unused keys); below it a full
# orjson decode is cheap and keeps unknown-key counting exact.
COLUMN_DECODE_MIN_BYTES = 64 * 1024
# One orjson.dumps call holds the GIL throughout: a big answer is encoded this many rows at a time, so
# while a worker thread encodes it, the event loop gets the GIL between two slices.
ENCODE_SLICE_ROWS = 1000


def dumps_rows(
    records: list[Any], slice_rows: int = ENCODE_SLICE_ROWS, pause: Callable[[], None] = no_pause
) -> bytes:
    """orjson.dumps(records), the same bytes, encoded `slice_rows` records at a time (`pause` between
    two slices)."""
    if len(records) <= slice_rows:
        return orjson.dumps(records)
    pieces: list[bytes | memoryview] = [b"["]
    for i in range(0, len(records), slice_rows):
        if i:
            pause()
            pieces.append(b",")
        pieces.append(memoryview(orjson.dumps(records[i : i + slice_rows]))[1:-1])  # without its [ ]
    pieces.append(b"]")
    return b"".join(pieces)


class JsonRows:
    media_type = "application/json"
    key_suffix = ""  # the first format: its cache keys carry no suffix

    def __init__(
        self, *, max_rows: int, max_errors: int, column_decode_min_bytes: int = COLUMN_DECODE_MIN_BYTES
    ) -> None:
        self.max_rows = max_rows
        self.max_errors = max_errors
        self.column_decode_min_bytes = column_decode_min_bytes

    def check_media_type(self, content_type: str | None) -> None:
        check_content_type(content_type)

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = no_pause) -> Batch:
        data = skip_bom(data)
        if len(data) >= self.column_decode_min_bytes:  # big batches: decode only the model's columns
            decoder = model.column_decoder
            batch = decoder.decode(data, max_rows=self.max_rows, pause=pause)
            if batch is None:  # refused: perhaps only for bare NaN (what Python writes), read as null
                fixed = nan_as_null(data)
                batch = None if fixed is None else decoder.decode(fixed, max_rows=self.max_rows, pause=pause)
            if batch is not None:
                return batch
        return decode_rows(data, max_rows=self.max_rows, max_errors=self.max_errors)

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = no_pause
    ) -> bytes:
        records: list[Any] = result_records(model, scored)
        if scored.bad_rows:
            by_row: dict[int, list[dict[str, Any]]] = {}
            for e in scored.errors:
                by_row.setdefault(e.row or 0, []).append(
                    {"field": e.field, "reason": e.reason, "value": e.value}
                )
            for i in scored.bad_rows:
                records[i] = {"errors": by_row[i], "row": i}
        return orjson.dumps(records[0]) if batch.single else dumps_rows(records, pause=pause)
