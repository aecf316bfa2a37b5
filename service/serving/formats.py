"""Content negotiation for /predict: the body's Content-Type picks the reader, Accept picks the writer.

    Content-Type  application/json (or application/*+json)   JSON rows (service/serving/json_rows.py)
                  text/csv (or application/csv, text/x-csv)  CSV rows (service/serving/csv_rows.py)
                  anything else                              415 naming both
    Accept        absent, */*, application/json, ...          JSON (the default)
                  text/csv                                     CSV (service/serving/csv_answer.py)
                  naming neither (or both with q=0)            406

Accept is read as RFC 9110 says: each format takes the q of the most specific range that matches it
(text/csv, then text/*, then */*); the highest q wins, then the more specific match, then the range
listed first, then JSON. Each of the four combinations is a codec of its own, with a cache key suffix of
its own (the same rows are answered in other bytes). A codec that reads CSV is made per call: it keeps
the batch it read, to name the CSV line of each error in the 422 the pipeline raises (`located`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from service.errors import InputError, NotAcceptable, UnsupportedMediaType
from service.serving.batch import Batch
from service.serving.csv_answer import CSV_ANSWER_TYPE, encode_csv, error_items, errors_by_row
from service.serving.csv_rows import (
    CSV_MEDIA_TYPES,
    CsvBatch,
    check_csv_media_type,
    located_error,
    media_type_of,
    read_csv_batch,
)
from service.serving.decoding import NDJSON_TYPES
from service.serving.json_rows import dumps_rows
from service.serving.pipeline import Codec
from service.serving.results import result_records
from service.serving.scorer import CompiledModel, Scored
from service.serving.turns import no_pause

JSON, CSV = "application/json", "text/csv"
_ANSWERS = ((JSON, "application"), (CSV, "text"))  # in the order a tie goes


def _quality(params: dict[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 0.0  # a range whose q cannot be read is not taken as allowing anything
    return q if 0.0 <= q <= 1.0 else 0.0


@lru_cache(maxsize=256)  # clients send the same few Accept values, request after request
def answer_format(accept: str | None) -> str:
    """JSON or CSV, as `accept` asks; 406 when it allows neither."""
    if accept is None or not accept.strip():
        return JSON
    best: tuple[float, int, int] | None = None  # q, specificity, -position
    chosen = JSON
    matches: dict[str, tuple[int, float, int]] = {}  # format -> (specificity, q, position) of its range
    for position, part in enumerate(accept.split(",")):
        media, params = media_type_of(part)
        kind, _, sub = media.partition("/")
        for answer, top in _ANSWERS:
            if media == answer:
                specificity = 2
            elif sub == "*" and kind == top:
                specificity = 1
            elif media == "*/*":
                specificity = 0
            else:
                continue
            held = matches.get(answer)
            if held is None or specificity > held[0]:
                matches[answer] = (specificity, _quality(params), position)
    for answer, _ in _ANSWERS:
        if answer not in matches:
            continue
        specificity, q, position = matches[answer]
        rank = (q, specificity, -position)
        if q > 0 and (best is None or rank > best):
            best, chosen = rank, answer
    if best is None:
        raise NotAcceptable(
            f"Accept allows no format /predict answers in: application/json (the default) or text/csv; "
            f"got {accept[:80]!r}"
        )
    return chosen


def reader_of(content_type: str | None) -> str:
    """JSON or CSV, as the body's Content-Type says; 415 naming both for anything else."""
    media, _ = media_type_of(content_type)
    if media in CSV_MEDIA_TYPES:
        return CSV
    if (
        media == JSON
        or (media.startswith("application/") and media.endswith("+json"))
        or media in NDJSON_TYPES
    ):
        return JSON  # the JSON codec's own check says what is wrong with NDJSON
    shown = media or "none"
    raise UnsupportedMediaType(
        f"Content-Type must be application/json (rows as JSON objects) or text/csv (a header line, then "
        f"one line per row), got {shown[:60]!r}"
    )


class JsonToCsv:
    """JSON rows in, a CSV answer out."""

    media_type = CSV_ANSWER_TYPE
    key_suffix = ":csv-out"

    def __init__(self, json_codec: Codec) -> None:
        self.json_codec = json_codec

    def check_media_type(self, content_type: str | None) -> None:
        self.json_codec.check_media_type(content_type)

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = no_pause) -> Batch:
        return self.json_codec.decode(model, data, pause)

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = no_pause
    ) -> bytes:
        return encode_csv(model, scored, pause=pause)


class CsvIn:
    """CSV rows in, a JSON or CSV answer out; one per call (it keeps the batch it read: `located`).

    The JSON answer is /predict's array (always an array: a table is rows), a row that cannot be scored
    answered as {"errors": [...], "line": <its CSV line>, "row": i}."""

    def __init__(self, *, max_rows: int, max_errors: int, answer: str = JSON) -> None:
        self.max_rows = max_rows
        self.max_errors = max_errors
        self.csv_out = answer == CSV
        self.media_type = CSV_ANSWER_TYPE if self.csv_out else JSON
        self.key_suffix = ":csv" if self.csv_out else ":csv-in"
        self.batch: CsvBatch | None = None

    def check_media_type(self, content_type: str | None) -> None:
        check_csv_media_type(content_type)

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = no_pause) -> Batch:
        self.batch = read_csv_batch(model, data, self.max_rows, self.max_errors, pause)
        return self.batch

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = no_pause
    ) -> bytes:
        line_of = batch.line_of if isinstance(batch, CsvBatch) else None
        if self.csv_out:
            return encode_csv(model, scored, line_of=line_of, pause=pause)
        records: list[Any] = result_records(model, scored)
        if scored.bad_rows:
            by_row = errors_by_row(scored)
            for i in scored.bad_rows:
                line = None if line_of is None else line_of(i)
                records[i] = {"errors": error_items(by_row.get(i, []), None), "line": line, "row": i}
        return dumps_rows(records, pause=pause)

    def located(self, error: InputError) -> InputError:
        return error if self.batch is None else located_error(error, self.batch)


def formats_for(
    content_type: str | None, accept: str | None, json_codec: Codec, *, max_rows: int, max_errors: int
) -> Codec:
    """The codec of one /predict call: 415 for a body that is neither JSON nor CSV, 406 for an Accept
    that allows neither answer. JSON in and out (the contract's hot path) is `json_codec` itself."""
    if content_type == JSON and (accept is None or accept == "*/*"):
        return json_codec  # what nearly every call sends: nothing to parse
    answer = JSON if accept is None else answer_format(accept)
    if reader_of(content_type) == CSV:
        return CsvIn(max_rows=max_rows, max_errors=max_errors, answer=answer)
    return json_codec if answer == JSON else JsonToCsv(json_codec)


def located(codec: Codec, error: InputError) -> InputError:
    """`error` naming CSV lines and columns when `codec` read a CSV body; else `error` itself."""
    locate = getattr(codec, "located", None)
    return error if locate is None else locate(error)
