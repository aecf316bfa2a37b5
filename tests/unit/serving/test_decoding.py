"""ColumnDecoder (big bodies): the same records, errors and unseen counts as the full orjson decode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import pytest

from service.model.notebook_import import approved_model
from service.model.synthetic import make_synthetic_frame
from service.serving.decoding import ColumnDecoder, decode_rows, row_slices
from service.serving.json_rows import dumps_rows
from service.serving.scorer import CompiledModel


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256="0" * 64)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    frame = make_synthetic_frame(1000, 9, target=False)
    rows: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    return rows


VARIANTS: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
    "as sent": lambda rows: rows,
    "all strings": lambda rows: [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows],
    "integers": lambda rows: [dict(r, x44=3, x91=-2, x53=2**62) for r in rows],
    "unknown keys": lambda rows: [dict(r, extra="z", x100=1) for r in rows],
    "bad values": lambda rows: [dict(r, x44="abc") if i % 7 == 0 else r for i, r in enumerate(rows)],
    "unseen levels": lambda rows: [dict(r, x31="mars") if i % 5 == 0 else r for i, r in enumerate(rows)],
    "absent keys": lambda rows: [{k: v for k, v in r.items() if k not in ("x12", "x31")} for r in rows],
    # a boolean, an array or an object in a model column: taken, and reported as the full decode reports it
    "booleans": lambda rows: [dict(r, x44=True, x31=False) if i % 9 == 0 else r for i, r in enumerate(rows)],
    "containers": lambda rows: [
        dict(r, x44={"a": 1}, x5=["monday"]) if i % 9 == 0 else r for i, r in enumerate(rows)
    ],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_answer_as_the_full_decode(
    compiled: CompiledModel, base: list[dict[str, Any]], variant: str
) -> None:
    body = orjson.dumps(VARIANTS[variant](base))
    fast = compiled.column_decoder.decode(body, max_rows=10_000)
    assert fast is not None
    full = decode_rows(body, max_rows=10_000, max_errors=100)
    a, b = compiled.score_batch(full), compiled.score_batch(fast)
    assert orjson.dumps(compiled.records(a)) == orjson.dumps(compiled.records(b))
    assert (a.errors, a.bad_rows, a.unseen) == (b.errors, b.bad_rows, b.unseen)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b"3", b"[1, 2]", b'[{"x44": 1e400}]', b'[{"x44": "\xff"}]', b'[{"x44": 1}, null]'],
)
def test_declines_what_the_full_decode_must_report(compiled: CompiledModel, body: bytes) -> None:
    assert compiled.column_decoder.decode(body, max_rows=10_000) is None


def test_declines_too_many_rows(compiled: CompiledModel) -> None:
    assert compiled.column_decoder.decode(b"[" + b",".join([b"{}"] * 11) + b"]", max_rows=10) is None


# --- big arrays are decoded in slices (the GIL is free between two) ----------------------------------------
def sliced(compiled: CompiledModel) -> ColumnDecoder:
    return ColumnDecoder(compiled.used_columns, slice_bytes=4096)  # a few rows per slice


TRICKY = {
    "compact": lambda rows: orjson.dumps(rows),
    "indented": lambda rows: orjson.dumps(rows, option=orjson.OPT_INDENT_2),
    "spaces around commas": lambda rows: b"[ " + b" ,\n ".join(orjson.dumps(r) for r in rows) + b" ]",
    # "},{" inside strings, where a cut may land: those slices do not decode, the whole body does
    "row gaps in strings": lambda rows: orjson.dumps(
        [dict(r, note='"},{"x5": "sunday"},{' * 40) for r in rows]
    ),
}


@pytest.mark.parametrize("variant", list(TRICKY))
def test_sliced_decode_gives_the_rows_of_the_whole_decode(
    compiled: CompiledModel, base: list[dict[str, Any]], variant: str
) -> None:
    body = TRICKY[variant](base[:300])
    assert len(list(row_slices(body, 4096))) > 10 or variant == "row gaps in strings"
    whole = ColumnDecoder(compiled.used_columns, slice_bytes=10**9).decode(body, max_rows=10_000)
    pieces = sliced(compiled).decode(body, max_rows=10_000)
    assert whole is not None and pieces is not None and len(pieces) == 300 and not pieces.single
    assert msgspec.json.encode(pieces.rows) == msgspec.json.encode(whole.rows)
    full = decode_rows(body, max_rows=10_000, max_errors=100)
    assert pieces.column("x12") == full.column("x12")
    if variant == "row gaps in strings":  # a cut landed in a string: decoded whole instead
        assert sliced(compiled)._sliced(body) is None


def test_every_slice_is_an_array_of_whole_rows(base: list[dict[str, Any]]) -> None:
    body = orjson.dumps(base[:300])
    pieces = list(row_slices(body, 4096))
    assert len(pieces) > 10 and all(len(p) >= 4096 for p in pieces[:-1])
    assert [row for p in pieces for row in orjson.loads(p)] == base[:300]
    assert list(row_slices(body, len(body))) == [body]  # too small to cut: the body itself


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps([{"x5": "monday"}] * 400) + b" trailing",
        orjson.dumps([{"x5": "monday"}] * 200 + [{"x5": True}] + [{"x5": "friday"}] * 200),
        orjson.dumps([{"x5": "monday", "n": [{"a": 1}, {"b": 2}] * 30}] * 100),  # "},{" inside a nested list
    ],
)
def test_sliced_decode_declines_what_the_whole_decode_declines(compiled: CompiledModel, body: bytes) -> None:
    whole = ColumnDecoder(compiled.used_columns, slice_bytes=10**9).decode(body, max_rows=10_000)
    pieces = sliced(compiled).decode(body, max_rows=10_000)
    assert (whole is None) == (pieces is None)
    if pieces is not None and whole is not None:
        assert msgspec.json.encode(pieces.rows) == msgspec.json.encode(whole.rows)


def test_sliced_decode_counts_rows_against_the_limit(compiled: CompiledModel) -> None:
    body = orjson.dumps([{"x5": "monday"}] * 3000)
    assert sliced(compiled).decode(body, max_rows=2999) is None
    decoded = sliced(compiled).decode(body, max_rows=3000)
    assert decoded is not None and len(decoded) == 3000


@pytest.mark.parametrize("n", [0, 1, 999, 1000, 1001, 2500])
def test_sliced_encode_gives_the_bytes_of_one_dumps(
    compiled: CompiledModel, base: list[dict[str, Any]], n: int
) -> None:
    rows = (base * 3)[:n]
    records = compiled.records(compiled.score(rows)) if rows else []
    assert dumps_rows(records) == orjson.dumps(records)
    assert dumps_rows(records, slice_rows=7) == orjson.dumps(records)
