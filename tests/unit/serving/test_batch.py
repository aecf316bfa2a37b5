"""The batch type: both decoders give equal batches; unknown keys and normalised keys as documented."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.model.notebook_import import approved_model
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.batch import ColumnBatch, JsonBatch
from service.serving.cache import columns_key, normalised_key
from service.serving.decoding import decode_rows
from service.serving.scorer import CompiledModel

SHA = "c" * 64


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256=SHA)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    frame = make_synthetic_frame(200, 5, target=False)
    records: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    return [dict(r, x44=3) if i % 3 == 0 else r for i, r in enumerate(records)]  # integers too


def both(compiled: CompiledModel, body: bytes) -> tuple[JsonBatch, ColumnBatch]:
    full = decode_rows(body, max_rows=10_000, max_errors=100)
    columns = compiled.column_decoder.decode(body, max_rows=10_000)
    assert columns is not None
    return full, columns


@pytest.mark.parametrize("shape", ["array", "one object"])
def test_both_decoders_give_equal_batches(
    compiled: CompiledModel, rows: list[dict[str, Any]], shape: str
) -> None:
    body = orjson.dumps(rows if shape == "array" else rows[0])
    full, columns = both(compiled, body)
    assert (
        (len(full), full.single)
        == (len(columns), columns.single)
        == ((200, False) if shape == "array" else (1, True))
    )
    for name in compiled.used_columns:
        assert full.column(name) == columns.column(name), name  # 3 == 3.0: msgspec makes numbers floats
    assert full.column("x44")[0] == 3 and columns.column("x44")[0] == 3.0
    a, b = compiled.score_batch(full), compiled.score_batch(columns)
    assert orjson.dumps(compiled.records(a)) == orjson.dumps(compiled.records(b))
    assert (a.errors, a.bad_rows, a.unseen) == (b.errors, b.bad_rows, b.unseen)


def test_column_rows_have_get_like_json_objects(compiled: CompiledModel) -> None:
    row = example_rows()["rows"][0]
    full, columns = both(compiled, orjson.dumps([row]))
    struct: Any = columns.rows[0]
    assert struct.get("x12") == full.rows[0].get("x12") == "$6,882.34 "
    assert struct.get("x0") is None  # not a model column: never decoded
    # the few-rows path takes either: the same bits
    small_full, small_columns = compiled._score_small(full.rows), compiled._score_small(columns.rows)
    assert small_full is not None and small_columns is not None
    assert (
        small_full.phat
        == small_columns.phat
        == [pytest.approx(example_rows()["expected"][0]["phat"], abs=1e-9)]
    )


def test_unknown_keys_are_named_by_the_full_decode_only(compiled: CompiledModel) -> None:
    row = example_rows()["rows"][0]
    batch_rows = [row, dict(row, order_ref="a"), row, dict(row, x100=1, extra=None)]
    full, columns = both(compiled, orjson.dumps(batch_rows))
    report = full.inspect_keys(compiled.names)
    assert report is not None and report.unknown_rows == 2 and not report.errors
    assert list(report.unknown) == ["order_ref", "x100", "extra"]  # the schema is x0 to x99
    assert report.headers() == {"X-Unknown-Keys": "3; order_ref,x100,extra"}
    one = JsonBatch([dict(row, note="x")], single=True).inspect_keys(compiled.names)
    assert one is not None and one.unknown_rows == 1 and not one.errors
    assert JsonBatch([row], single=True).inspect_keys(compiled.names) is None
    assert JsonBatch([row, row]).inspect_keys(compiled.names) is None
    assert columns.inspect_keys(compiled.names) is None  # every model column there: the rest unread


def test_known_columns_are_the_input_schema(
    compiled: CompiledModel, approved_compiled: CompiledModel
) -> None:
    expected = frozenset(f"x{i}" for i in range(100))
    assert approved_compiled.known_columns == expected  # from the artifact's input_schema
    assert compiled.known_columns == expected  # from the columns the Pipeline was fit on
    assert set(compiled.used_columns) < expected


def test_normalised_keys(compiled: CompiledModel, rows: list[dict[str, Any]]) -> None:
    compact = orjson.dumps(rows[:3])
    spaced = orjson.dumps([dict(reversed(list(r.items()))) for r in rows[:3]], option=orjson.OPT_INDENT_2)
    a, b = decode_rows(compact, max_rows=10, max_errors=10), decode_rows(spaced, max_rows=10, max_errors=10)
    assert a.normalised_key(SHA) == b.normalised_key(SHA) == normalised_key(SHA, rows[:3])
    assert str(a.normalised_key(SHA)).startswith(f"propensity:{SHA[:16]}:norm:")
    one = decode_rows(orjson.dumps(rows[0]), max_rows=10, max_errors=10)
    listed = decode_rows(orjson.dumps([rows[0]]), max_rows=10, max_errors=10)
    assert one.normalised_key(SHA) == normalised_key(SHA, rows[0]) != listed.normalised_key(SHA)
    _, columns = both(compiled, compact)
    assert columns.normalised_key(SHA) == columns_key(SHA, columns.rows)
    assert columns.normalised_key(SHA).startswith(f"propensity:{SHA[:16]}:cols:")
    _, reordered = both(compiled, spaced)
    assert reordered.normalised_key(SHA) == columns.normalised_key(SHA)
