"""What orjson refuses but clients send: bare NaN (read as null), bare Infinity (a 422 naming row and
field), a byte order mark, NDJSON; looked for only once a body failed to decode."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InputError, MalformedJSON, UnsupportedMediaType
from service.model.notebook_import import approved_model
from service.model.schema import example_rows
from service.serving import decoding
from service.serving.batch import ColumnBatch, JsonBatch
from service.serving.decoding import BOM, bare_tokens, check_content_type, decode_rows
from service.serving.json_rows import JsonRows
from service.serving.scorer import CompiledModel

ROW: dict[str, Any] = example_rows()["rows"][0]
PHAT0 = example_rows()["expected"][0]["phat"]


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256="0" * 64)


def decode(body: bytes) -> JsonBatch:
    return decode_rows(body, max_rows=10_000, max_errors=100)


# --- NaN -------------------------------------------------------------------------------------------------
def test_a_bare_nan_is_null(compiled: CompiledModel) -> None:
    body = json.dumps(dict(ROW, x44=math.nan, x61=math.nan)).encode().replace(b'"x61": NaN', b'"x61": -NaN')
    assert b": NaN" in body and b"-NaN" in body  # -NaN is NaN too
    batch = decode(body)
    assert batch.rows == [dict(ROW, x44=None, x61=None)]
    as_null = compiled.score([dict(ROW, x44=None, x61=None)])
    assert compiled.score_batch(batch).phat == as_null.phat  # the same bits as null


def test_tokens_inside_strings_are_left_alone() -> None:
    tricky = ["NaN", 'a "NaN" b', "\\", '\\"NaN', "Infinity\\", '"', "-Infinity"]
    row = {f"s{i}": s for i, s in enumerate(tricky)} | {"x44": math.nan}
    body = json.dumps(row).encode()
    assert len(bare_tokens(body)) == 1
    assert decode(body).rows == [{**{f"s{i}": s for i, s in enumerate(tricky)}, "x44": None}]


# JSON values whose strings are made to fool a tokenizer: quotes, backslashes and the tokens themselves
_PIECES = st.sampled_from(['"', "\\", "NaN", "Infinity", "-", "a", " ", "é", ":", ","])
_TEXT = st.lists(_PIECES, max_size=6).map("".join)
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_infinity=False), _TEXT)
_VALUE = st.recursive(
    _LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=8
)


def _nan_as_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, list):
        return [_nan_as_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_as_none(v) for k, v in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_TEXT, _VALUE, min_size=1, max_size=4), min_size=1, max_size=4))
def test_any_body_python_writes_reads_as_python_reads_it_with_nan_as_null(rows: list[dict[str, Any]]) -> None:
    body = json.dumps(rows).encode()  # NaN where a float is NaN
    assert decode(body).rows == _nan_as_none(json.loads(body))


# --- Infinity ----------------------------------------------------------------------------------------------
def test_bare_infinity_is_a_422_naming_every_row_and_field() -> None:
    rows = [
        ROW,
        dict(ROW, x44=math.inf),
        dict(ROW, x91=-math.inf, x61=math.nan),
        dict(ROW, note=[1, math.inf]),
    ]
    with pytest.raises(InputError) as caught:
        decode(json.dumps(rows).encode())
    error = caught.value
    assert error.status == 422 and error.kind == "invalid-rows"
    assert [(e.row, e.field, e.value) for e in error.errors] == [
        (1, "x44", "Infinity"),
        (2, "x91", "-Infinity"),
        (3, "note", "Infinity"),
    ]
    assert all("send a finite number, or null" in e.reason for e in error.errors)
    assert error.extra == {"error_count": 3, "bad_rows": [1, 2, 3], "bad_row_count": 3}
    assert error.detail.startswith("3 bare Infinity value(s) cannot be scored; first: row 1, field x44")


def test_infinity_in_a_single_object_and_in_a_key() -> None:
    with pytest.raises(InputError) as one:
        decode(b'{"x5": "monday", "x44": -Infinity}')
    assert [(e.row, e.field) for e in one.value.errors] == [(0, "x44")]
    with pytest.raises(InputError) as key:  # not JSON at all, but named as well as a value would be
        decode(b'{"x5": "monday", Infinity: 1}')
    assert [(e.row, e.field) for e in key.value.errors] == [(0, "Infinity")]


def test_a_body_still_malformed_after_nan_is_a_400_saying_so() -> None:
    with pytest.raises(MalformedJSON) as caught:
        decode(b'{"x44": NaN, "x5": monday}')
    assert "with bare NaN read as null" in caught.value.detail


@pytest.mark.parametrize("word", [b"nan", b"inf", b"-inf", b"None", b"undefined"])
def test_other_spellings_of_missing_are_a_400_that_says_send_null(word: bytes) -> None:
    with pytest.raises(MalformedJSON) as caught:
        decode(b'{"x44": ' + word + b"}")
    assert caught.value.detail.endswith("for a missing value send null")


def test_valid_bodies_never_run_the_tokenizer(
    compiled: CompiledModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(body: bytes) -> None:
        raise AssertionError("the tokenizer ran on a valid body")

    monkeypatch.setattr(decoding, "bare_tokens", refuse)
    codec = JsonRows(max_rows=10_000, max_errors=100)
    for body in (orjson.dumps(ROW), orjson.dumps([ROW] * 200), orjson.dumps(dict(ROW, note="NaN Infinity"))):
        assert len(codec.decode(compiled, body)) in (1, 200)


# --- both decode paths ------------------------------------------------------------------------------------
def test_a_big_body_with_nan_scores_as_with_null(compiled: CompiledModel) -> None:
    codec = JsonRows(max_rows=10_000, max_errors=100)
    rows = [dict(ROW, x44=math.nan) if i % 3 == 0 else ROW for i in range(300)]
    body = json.dumps(rows).encode()
    assert len(body) >= codec.column_decode_min_bytes
    with_null = codec.decode(
        compiled, orjson.dumps([dict(r, x44=None) if i % 3 == 0 else r for i, r in enumerate(rows)])
    )
    assert isinstance(with_null, ColumnBatch)
    with_nan = codec.decode(compiled, body)
    assert isinstance(with_nan, ColumnBatch)  # read by columns once NaN is null
    assert compiled.score_batch(with_nan).phat == compiled.score_batch(with_null).phat
    with pytest.raises(InputError) as caught:
        codec.decode(compiled, json.dumps([*rows, dict(ROW, x12=math.inf)]).encode())
    assert [(e.row, e.field) for e in caught.value.errors] == [(300, "x12")]


@pytest.mark.parametrize("rows", [1, 300])
def test_a_byte_order_mark_is_skipped_on_both_paths(compiled: CompiledModel, rows: int) -> None:
    codec = JsonRows(max_rows=10_000, max_errors=100)
    body = orjson.dumps(ROW) if rows == 1 else orjson.dumps([ROW] * rows)
    plain, marked = codec.decode(compiled, body), codec.decode(compiled, BOM + body)
    assert type(plain) is type(marked) is (JsonBatch if rows == 1 else ColumnBatch)
    assert compiled.score_batch(marked).phat == compiled.score_batch(plain).phat
    assert compiled.score_batch(marked).phat[0] == pytest.approx(PHAT0, abs=1e-12)
    assert decode(BOM + body).rows == decode(body).rows


def test_utf16_is_named() -> None:
    with pytest.raises(MalformedJSON) as caught:
        decode(json.dumps(ROW).encode("utf-16"))
    assert "UTF-16" in caught.value.detail and "send UTF-8" in caught.value.detail


# --- NDJSON ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"\n".join(orjson.dumps(r) for r in example_rows()["rows"]),
        b"\n".join(orjson.dumps(r) for r in example_rows()["rows"]) + b"\n",
        b"  " + orjson.dumps(ROW) + b"\r\n" + json.dumps(dict(ROW, x44=math.nan)).encode(),  # NaN too
        b"\n".join(orjson.dumps([r]) for r in example_rows()["rows"] * 100),  # big: arrays per line
    ],
)
def test_ndjson_sent_as_json_is_a_400_that_says_so(compiled: CompiledModel, body: bytes) -> None:
    codec = JsonRows(max_rows=10_000, max_errors=100)
    with pytest.raises(MalformedJSON) as caught:
        codec.decode(compiled, body)
    assert "one JSON document per line (NDJSON)" in caught.value.detail
    assert "send the rows as one JSON array" in caught.value.detail


def test_concatenated_json_that_is_not_line_delimited_is_an_ordinary_400() -> None:
    with pytest.raises(MalformedJSON) as caught:
        decode(b'{"x5": "monday"} {"x5": "friday"}')
    assert "NDJSON" not in caught.value.detail


@pytest.mark.parametrize("media", ["application/x-ndjson", "application/jsonl", "application/x-jsonlines"])
def test_ndjson_media_types_are_a_415_naming_what_is_accepted(media: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        check_content_type(f"{media}; charset=utf-8")
    assert media in caught.value.detail and "Content-Type: application/json" in caught.value.detail
