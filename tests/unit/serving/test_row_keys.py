"""A row's keys against the model's columns, on both decode paths: rows without a model column and keys
resembling one are refused, absent columns and unknown keys are reported (bounded, header-safe)."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import pytest

from service.errors import InputError, PropensityError
from service.model.notebook_import import approved_model
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.batch import ABSENT, Batch, ColumnBatch, JsonBatch
from service.serving.cache import columns_key
from service.serving.decoding import ColumnDecoder, decode_rows
from service.serving.json_rows import COLUMN_DECODE_MIN_BYTES
from service.serving.row_keys import HEADER_ITEMS, ColumnNames, KeyReport, fold_key, header_text
from service.serving.scorer import CompiledModel
from service.settings import BatchErrorPolicy
from tests.unit.serving.envelopes import MODEL_COLUMNS, WRONG, Wrong
from tests.unit.serving.test_pipeline import answer, build

ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256="0" * 64)


def without(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in columns}


def both(compiled: CompiledModel, rows: Any) -> tuple[JsonBatch, ColumnBatch]:
    body = orjson.dumps(rows)
    columns = compiled.column_decoder.decode(body, max_rows=10_000)
    assert columns is not None
    return decode_rows(body, max_rows=10_000, max_errors=100), columns


def same_report(a: KeyReport | None, b: KeyReport | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert (a.errors, a.bad_rows, a.imputed, a.imputed_rows) == (
            b.errors,
            b.bad_rows,
            b.imputed,
            b.imputed_rows,
        )


# --- near misses -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "column"),
    [("X5", "x5"), (" x12", "x12"), ("x12 ", "x12"), ("x_12", "x12"), ("X_12", "x12"), ("X-91", "x91"),
     ("x 91", "x91"), ("\uff58\uff11\uff12", "x12"), ("x\t5", "x5")],
)  # fmt: skip
def test_keys_that_spell_a_column_loosely_resemble_it(compiled: CompiledModel, key: str, column: str) -> None:
    assert compiled.names.resembling[fold_key(key)] == column
    report = JsonBatch([{**without(ROWS[0], column), key: ROWS[0][column]}], single=True).inspect_keys(
        compiled.names
    )
    assert report is not None and report.bad_rows == {0}
    [error] = report.errors
    assert (error.row, error.field) == (0, key)
    assert f"resembles {column!r}" in error.reason and f"send it as {column!r}" in error.reason


@pytest.mark.parametrize("key", ["x120", "x1", "x_1", "X0", "xx5", "order_ref", "5x"])
def test_other_keys_are_unknown_not_near_misses(compiled: CompiledModel, key: str) -> None:
    report = JsonBatch([{**ROWS[0], key: 1}], single=True).inspect_keys(compiled.names)
    if key in compiled.known_columns:
        assert report is None
    else:
        assert report is not None and not report.errors and list(report.unknown) == [key]


def test_a_near_miss_beside_the_column_itself_is_only_unknown(compiled: CompiledModel) -> None:
    report = JsonBatch([{**ROWS[0], "X12": "$1"}], single=True).inspect_keys(compiled.names)
    assert report is not None and not report.errors and list(report.unknown) == ["X12"]


# --- both decoders say the same -----------------------------------------------------------------------------
BODIES: dict[str, Any] = {
    "clean": ROWS,
    "null is present": [dict(r, x12=None, x31=None) for r in ROWS],
    "absent columns": [without(r, "x12") if i % 2 else without(r, "x31", "x91") for i, r in enumerate(ROWS)],
    "one model column": [{"x91": 0.1}] * 3,
    "a row without model columns": [ROWS[0], {"note": 1, "x0": 2}, ROWS[1]],
    "empty rows": [{}, ROWS[0], {}],
    "near misses": [ROWS[0], {**without(ROWS[1], "x12"), "X12": "$5"}, {**ROWS[2], "x_91": 0.3}],
    "one wrapped row": {"data": ROWS[0]},
    "nested row values": [{"x5": "monday", "z": {"x12": 1, "X12": [1, {"a": "}{"}]}}],
}


@pytest.mark.parametrize("name", list(BODIES))
def test_both_decoders_give_the_same_report(compiled: CompiledModel, name: str) -> None:
    full, columns = both(compiled, BODIES[name])
    a, b = full.inspect_keys(compiled.names), columns.inspect_keys(compiled.names)
    same_report(a, b)
    assert (a is None) == (name in ("clean", "null is present"))
    for column in compiled.used_columns:  # absent: None in a JSON object, ABSENT (a NaN) in a struct
        assert full.column(column) == [None if v is ABSENT else v for v in columns.column(column)]
    _, again = both(compiled, BODIES[name])  # a batch reads its body again once: a fresh one
    missing = partial(compiled.missing_rows, compiled.score_batch(again))
    same_report(again.inspect_keys(compiled.names, missing), b)  # narrowed to the rows read as missing
    assert again.reread is None  # the body is let go


def test_what_each_report_says(compiled: CompiledModel) -> None:
    absent = JsonBatch(BODIES["absent columns"]).inspect_keys(compiled.names)
    assert absent is not None and not absent.errors
    assert (absent.imputed, absent.imputed_rows) == ({"x12": 2, "x31": 3, "x91": 3}, 5)
    assert absent.headers() == {"X-Imputed-Columns": "5; x12=2,x31=3,x91=3"}
    lacking = JsonBatch(BODIES["a row without model columns"]).inspect_keys(compiled.names)
    assert lacking is not None and lacking.bad_rows == {1} and lacking.unknown_rows == 1
    [error] = lacking.errors
    assert error.row == 1 and error.field is None
    assert error.reason.startswith(
        "none of the model's columns is a key of this row (its keys: 'note', 'x0')"
    )
    assert error.reason.endswith("columns as keys: x5, x12, x31, x44, x53, x56, x58, x62, x81, x91")
    empty = JsonBatch(BODIES["empty rows"]).inspect_keys(compiled.names)
    assert empty is not None and empty.bad_rows == {0, 2}
    assert all(e.reason.startswith("the row is empty, so every input would be imputed") for e in empty.errors)


def test_the_column_decoder_sees_only_the_keys_of_rows_that_lack_a_column(compiled: CompiledModel) -> None:
    rows = [dict(ROWS[0], note=1), {**without(ROWS[1], "x12"), "memo": 2}]
    full, columns = both(compiled, rows)
    a, b = full.inspect_keys(compiled.names), columns.inspect_keys(compiled.names)
    assert a is not None and b is not None
    assert (list(a.unknown), a.unknown_rows) == (["note", "memo"], 2)
    assert (list(b.unknown), b.unknown_rows) == (["memo"], 1)  # row 0 had every column: read no further


def test_absent_and_null_differ_in_the_cache_key_of_columns(compiled: CompiledModel) -> None:
    _, absent = both(compiled, [without(ROWS[0], "x12")])
    _, null = both(compiled, [dict(ROWS[0], x12=None)])
    assert absent.column("x12") == [ABSENT] and null.column("x12") == [None]
    assert absent.rows[0].get("x12") is None  # type: ignore[attr-defined]
    assert columns_key("s" * 64, absent.rows) != columns_key("s" * 64, null.rows)
    assert compiled.score_batch(absent).phat == compiled.score_batch(null).phat  # the same answer


def test_rows_read_again_from_slices_are_the_rows(compiled: CompiledModel) -> None:
    rows = [without(r, "x12") if i % 7 == 0 else dict(r, note=i) for i, r in enumerate(ROWS * 60)]
    body = orjson.dumps(rows)
    decoder = ColumnDecoder(compiled.used_columns, slice_bytes=4096)
    batch = decoder.decode(body, max_rows=10_000)
    assert batch is not None and batch.reread is not None
    lacking = [i for i, r in enumerate(rows) if "x12" not in r]
    assert batch.reread(lacking) == [rows[i] for i in lacking]
    report = batch.inspect_keys(compiled.names)
    assert report is not None and report.imputed == {"x12": len(lacking)}


def test_a_column_batch_without_its_body_reports_what_it_holds(compiled: CompiledModel) -> None:
    _, columns = both(compiled, [{"x5": "monday"}, {"note": 1}])
    columns.reread = None
    report = columns.inspect_keys(compiled.names)
    assert report is not None and report.bad_rows == {1} and report.imputed_rows == 1


# --- headers ---------------------------------------------------------------------------------------------
def test_headers_are_bounded_and_safe() -> None:
    names = ColumnNames(("x5",), frozenset({"x5"}))
    hostile = ["a,b", "c;d", "e=f", "100%", " lead", "ü", "\x00\n", "k" * 5000, *[f"k{i}" for i in range(30)]]
    report = KeyReport(unknown=dict.fromkeys(hostile))
    value = report.headers()["X-Unknown-Keys"]
    count, _, shown = value.partition("; ")
    assert int(count) == len(hostile) and len(shown.split(",")) == HEADER_ITEMS
    assert value.isascii() and value.isprintable() and len(value) < 600
    assert shown.split(",")[:6] == ["a%2Cb", "c%3Bd", "e%3Df", "100%25", "%20lead", "%C3%BC"]
    assert header_text("k" * 5000).endswith("%E2%80%A6")  # cut, and says so
    assert names.expected == "a row is an object with the model's columns as keys: x5"


# --- through the pipeline, on both decode paths: every wrong envelope is a 4xx naming the fix ---------------
def _grown(case: Wrong, big: bool) -> bytes:
    """The case's body from the reference rows; big: from as many copies as make it a column-decoded one."""
    rows = ROWS
    body = case.build(rows)
    while big and len(body) < COLUMN_DECODE_MIN_BYTES:
        rows = rows * 2
        body = case.build(rows)
    assert (len(body) >= COLUMN_DECODE_MIN_BYTES) == big
    return body


SIZES = [(c, big) for c in WRONG for big in (False, True) if c.grows or not big]


@pytest.mark.parametrize(("case", "big"), SIZES, ids=[f"{c.name}{' big' if b else ''}" for c, b in SIZES])
def test_every_wrong_envelope_is_a_4xx_naming_the_fix(
    approved_registry: Registry, case: Wrong, big: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline, _ = build(approved_registry)
    decoded: list[Batch] = []
    real = pipeline.codec.decode

    def spy(*args: Any) -> Batch:
        decoded.append(real(*args))
        return decoded[-1]

    monkeypatch.setattr(pipeline.codec, "decode", spy)
    with pytest.raises(PropensityError) as caught:
        answer(pipeline, _grown(case, big))
    error = caught.value
    assert (error.status, error.kind) == (case.status, case.kind)
    assert case.fix in error.detail, error.detail
    if decoded:  # decoded, then refused: by the decoder the body's size picks
        assert isinstance(decoded[0], ColumnBatch if big else JsonBatch)


def test_under_score_valid_a_row_without_columns_is_answered_with_its_errors(
    approved_registry: Registry,
) -> None:
    pipeline, _ = build(approved_registry, batch_error_policy=BatchErrorPolicy.SCORE_VALID)
    out = answer(pipeline, orjson.dumps([ROWS[0], {"data": ROWS[1]}, {"X5": "monday"}]))
    good, wrapped, upper = orjson.loads(out.body)
    model = pipeline.models.current
    assert model is not None
    assert good["phat"] == model.score(ROWS[:1]).phat[0] and out.headers["X-Rejected-Rows"] == "2"
    assert wrapped["row"] == 1 and "not wrapped in 'data'" in wrapped["errors"][0]["reason"]
    assert upper["errors"][0]["field"] == "X5" and "resembles 'x5'" in upper["errors"][0]["reason"]
    with pytest.raises(InputError):  # a single object is always refused
        answer(pipeline, orjson.dumps({"data": ROWS[1]}))


@pytest.mark.parametrize("big", [False, True])
def test_reports_in_the_answers_headers(approved_registry: Registry, big: bool) -> None:
    pipeline, _ = build(approved_registry)
    rows = [dict(without(ROWS[0], "x12"), note="a"), dict(ROWS[1], x31="mars", customer_name="b"), ROWS[2]]
    rows = rows * (60 if big else 1)
    out = answer(pipeline, orjson.dumps(rows))
    n = len(rows) // 3
    assert out.headers["X-Imputed-Columns"] == f"{n}; x12={n}"
    assert out.headers["X-Unseen-Categories"] == str(n) and out.headers["X-Unseen-Values"] == "1; x31=mars"
    # the column decoder reads no further than the model's columns in rows that have them all
    assert out.headers["X-Unknown-Keys"] == ("1; note" if big else "2; note,customer_name")
    phat = [r["phat"] for r in orjson.loads(out.body)]
    model = pipeline.models.current
    assert model is not None
    assert phat == model.score([dict(ROWS[0], x12=None), dict(ROWS[1], x31=None), ROWS[2]] * n).phat
    assert phat[2] == model.score(ROWS).phat[2] == pytest.approx(PHAT[2], abs=1e-12)


def test_a_clean_answer_has_no_report_headers(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry)
    for body in (
        orjson.dumps(ROWS[0]),
        orjson.dumps(ROWS * 40),
        orjson.dumps([dict(r, x12=None) for r in ROWS]),
    ):
        assert set(answer(pipeline, body).headers) <= {"X-Model-Version", "Vary"}


def test_an_answer_with_a_report_is_not_cached(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, cache=True)
    body = orjson.dumps([without(r, "x12") for r in ROWS] * 40)
    first, second = answer(pipeline, body), answer(pipeline, body)
    assert first.body == second.body and "X-Cache" not in second.headers
    assert second.headers["X-Imputed-Columns"] == first.headers["X-Imputed-Columns"] == "200; x12=200"
    clean = orjson.dumps(ROWS * 40)
    assert answer(pipeline, clean).headers.get("X-Cache") is None
    assert answer(pipeline, clean).headers.get("X-Cache") == "hit"


def test_model_columns_are_the_compiled_models(compiled: CompiledModel) -> None:
    assert sorted(compiled.used_columns) == sorted(MODEL_COLUMNS)
    assert (
        compiled.names.used_set == frozenset(MODEL_COLUMNS) and compiled.names.known >= compiled.known_columns
    )
