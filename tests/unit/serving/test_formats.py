"""Content negotiation: Content-Type picks the reader (415 naming both), Accept the writer (406 naming both);
four codecs, four cache key suffixes."""

from __future__ import annotations

import pytest

from service.errors import InputError, NotAcceptable, UnsupportedMediaType
from service.serving.formats import (
    CSV,
    JSON,
    CsvIn,
    JsonToCsv,
    answer_format,
    formats_for,
    located,
)
from service.serving.json_rows import JsonRows

JSON_CODEC = JsonRows(max_rows=10, max_errors=10)


def codec_for(content_type: str | None, accept: str | None = None) -> object:
    return formats_for(content_type, accept, JSON_CODEC, max_rows=10, max_errors=10)


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        ("text/csv", CSV),
        ("TEXT/CSV; charset=utf-8", CSV),
        ("text/*", CSV),
        ("application/*", JSON),
        ("text/csv, */*;q=0.1", CSV),
        ("text/csv;q=0.5, application/json", JSON),
        ("application/json;q=0.2, text/csv;q=0.9", CSV),
        ("text/csv, application/json", CSV),  # a tie: the one listed first
        ("application/json, text/csv", JSON),
        ("text/csv;q=0, */*", JSON),  # the most specific range decides a format's q
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", JSON),  # a browser
        ("application/json, text/plain, */*", JSON),  # axios
        ("text/csv;q=oops, application/json;q=0.1", JSON),  # a q that does not read allows nothing
    ],
)
def test_accept_picks_the_answer(accept: str | None, answer: str) -> None:
    assert answer_format(accept) == answer


@pytest.mark.parametrize(
    "accept",
    ["text/html", "application/xml", "application/problem+json", "text/csv;q=0, application/json;q=0"],
)
def test_an_accept_allowing_neither_is_a_406_naming_both(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        answer_format(accept)
    assert caught.value.status == 406
    assert "application/json" in caught.value.detail and "text/csv" in caught.value.detail


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", None, "multipart/form-data"])
def test_a_body_neither_json_nor_csv_is_a_415_naming_both(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        codec_for(content_type)
    assert "application/json" in caught.value.detail and "text/csv" in caught.value.detail


def test_ndjson_keeps_its_own_415() -> None:
    codec = codec_for("application/x-ndjson")
    with pytest.raises(UnsupportedMediaType, match="one JSON document per line"):
        codec.check_media_type("application/x-ndjson")  # type: ignore[attr-defined]


def test_four_codecs_four_cache_keys() -> None:
    json_json = codec_for("application/json")
    json_csv = codec_for("application/json; charset=utf-8", "text/csv")
    csv_json = codec_for("text/csv")
    csv_csv = codec_for("text/csv", "text/csv")
    assert json_json is JSON_CODEC and isinstance(json_csv, JsonToCsv)
    assert (
        isinstance(csv_json, CsvIn) and isinstance(csv_csv, CsvIn) and csv_json is not codec_for("text/csv")
    )
    codecs = [json_json, json_csv, csv_json, csv_csv]
    assert len({c.key_suffix for c in codecs}) == 4  # type: ignore[attr-defined]
    assert [c.media_type for c in codecs] == [  # type: ignore[attr-defined]
        JSON,
        "text/csv; charset=utf-8",
        JSON,
        "text/csv; charset=utf-8",
    ]


def test_only_a_codec_that_read_csv_locates_errors() -> None:
    error = InputError("1 of 1 row(s) cannot be scored; first: row 0, field x5: bad")
    assert located(JSON_CODEC, error) is error
    assert located(CsvIn(max_rows=1, max_errors=1), error) is error  # it read nothing yet
