"""MLflow's scoring bodies through the scoring pipeline: every form the same bits as /predict's rows, the
body's params, what is refused (and the fix each refusal names), and the cache keeping the doors apart."""

from __future__ import annotations

import json
import math
from typing import Any

import anyio
import orjson
import pandas as pd
import pytest
from mlflow.utils.proto_json_utils import dump_input_data

from service.errors import BadBodyShape, InputError, MalformedJSON, PayloadTooLarge, UnsupportedMediaType
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.json_rows import JsonRows
from service.serving.mlflow_codec import (
    NEEDS_COLUMNS,
    BadParams,
    MlflowColumns,
    MlflowCsv,
    MlflowJson,
    MlflowRows,
)
from service.serving.pipeline import Answer, Body, Codec, ScoringPipeline
from service.settings import BatchErrorPolicy
from tests.unit.serving.test_pipeline import build, model_of

ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]
FRAME = pd.DataFrame(ROWS)
JSON = "application/json"
CODEC = MlflowJson(max_rows=10_000, max_errors=100)


def run(
    pipeline: ScoringPipeline,
    body: bytes | str,
    codec: Codec = CODEC,
    content_type: str = JSON,
    **kwargs: Any,
) -> Answer:
    data = body.encode() if isinstance(body, str) else body

    async def call() -> Answer:
        admitted = pipeline.admit(content_type, len(data), codec=codec)
        try:
            return await pipeline.infer(admitted, Body([data], len(data)), **kwargs)
        finally:
            admitted.release()

    return anyio.run(call)


@pytest.fixture(scope="module")
def pipeline(approved_registry: Registry) -> ScoringPipeline:
    return build(approved_registry)[0]


@pytest.fixture(scope="module")
def predicted(pipeline: ScoringPipeline) -> list[dict[str, Any]]:
    """What /predict answers for the reference rows (an array of row objects)."""
    answer = run(pipeline, orjson.dumps(ROWS), JsonRows(max_rows=10_000, max_errors=100))
    records: list[dict[str, Any]] = orjson.loads(answer.body)
    assert [r["phat"] for r in records] == pytest.approx(PHAT, abs=1e-12)
    return records


def predictions(answer: Answer) -> list[dict[str, Any]]:
    body = orjson.loads(answer.body)
    assert list(body) == ["predictions"] and answer.media_type == JSON
    out: list[dict[str, Any]] = body["predictions"]
    return out


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c: [r.get(c) for r in rows] for c in rows[0]}


FORMS: dict[str, Any] = {
    "dataframe_split": {"dataframe_split": FRAME.to_dict(orient="split")},
    "dataframe_split without index": {"dataframe_split": FRAME.to_dict(orient="split", index=False)},
    "dataframe_split of to_json": {"dataframe_split": json.loads(FRAME.to_json(orient="split"))},
    "dataframe_records": {"dataframe_records": ROWS},
    "instances as records": {"instances": ROWS},
    "instances as columns": {"instances": columns_of(ROWS)},
    "inputs as records": {"inputs": ROWS},
    "inputs as columns": {"inputs": columns_of(ROWS)},
}


@pytest.mark.parametrize("form", FORMS)
def test_every_form_gives_the_bits_of_predict(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]], form: str
) -> None:
    answer = run(pipeline, json.dumps(FORMS[form]))
    assert predictions(answer) == predicted  # every record equal: phat's bits, the inputs, the outcome
    assert answer.headers == {"X-Model-Version": "v1"}  # nothing imputed, nothing unknown


def test_the_mlflow_clients_own_body_is_read(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]]
) -> None:
    """dump_input_data is what mlflow's ScoringServerClient.invoke posts (json.dumps: NaN stays bare)."""
    body = dump_input_data(FRAME)
    assert json.loads(body).keys() == {"dataframe_split"}
    assert predictions(run(pipeline, body)) == predicted
    with_nan = FRAME.copy()
    with_nan.loc[1, "x44"] = math.nan
    assert "NaN" in dump_input_data(with_nan)
    as_null = [dict(r) for r in ROWS]
    as_null[1]["x44"] = None
    expected = predictions(run(pipeline, orjson.dumps({"dataframe_records": as_null})))
    assert predictions(run(pipeline, dump_input_data(with_nan))) == expected
    assert expected[1]["phat"] != predicted[1]["phat"]  # x44 was imputed


def test_one_split_row_is_scored_as_an_object(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]]
) -> None:
    body = orjson.dumps({"dataframe_split": FRAME.iloc[[3]].to_dict(orient="split")})
    batch = CODEC.decode(model_of(pipeline), body)
    assert isinstance(batch, MlflowRows) and batch.rows == [ROWS[3]]  # the single-row call's cheap path
    assert predictions(run(pipeline, body)) == predicted[3:4]


def test_one_row_as_columns_of_scalars(pipeline: ScoringPipeline, predicted: list[dict[str, Any]]) -> None:
    assert predictions(run(pipeline, orjson.dumps({"inputs": ROWS[2]}))) == predicted[2:3]


def test_keys_beside_the_format_key_are_ignored_as_mlflow_ignores_them(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]]
) -> None:
    body = {"dataframe_records": ROWS, "client_request_id": "r-1", "columns": ["x5"]}
    assert predictions(run(pipeline, orjson.dumps(body))) == predicted


def test_a_bare_infinity_names_its_row_and_field(pipeline: ScoringPipeline) -> None:
    rows = [ROWS[0], dict(ROWS[1], x53=math.inf, x58=-math.inf)]
    with pytest.raises(InputError) as caught:
        run(pipeline, json.dumps({"dataframe_split": pd.DataFrame(rows).to_dict(orient="split")}))
    assert [(e.row, e.field, e.value) for e in caught.value.errors] == [
        (1, "x53", "Infinity"),
        (1, "x58", "-Infinity"),
    ]
    assert "first: row 1, field x53" in caught.value.detail


def test_a_bom_is_skipped_and_bad_json_is_a_400(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]]
) -> None:
    body = orjson.dumps({"dataframe_records": ROWS})
    assert predictions(run(pipeline, b"\xef\xbb\xbf" + body)) == predicted
    with pytest.raises(MalformedJSON, match="not valid JSON"):
        run(pipeline, body[:-1])
    with pytest.raises(MalformedJSON, match="body is empty"):
        run(pipeline, b" ")


# --- params: reason codes ---------------------------------------------------------------------------------
def test_params_reasons_are_the_reason_codes_of_predict(pipeline: ScoringPipeline) -> None:
    rows_json = JsonRows(max_rows=10_000, max_errors=100)
    expected = orjson.loads(run(pipeline, orjson.dumps(ROWS), rows_json, reasons=3).body)
    assert all(len(r["reasons"]) == 3 for r in expected)
    got = predictions(run(pipeline, orjson.dumps({"dataframe_records": ROWS, "params": {"reasons": 3}})))
    assert got == expected
    every = predictions(
        run(pipeline, orjson.dumps({"dataframe_records": ROWS, "params": {"reasons": "all"}}))
    )
    assert all(len(r["reasons"]) == 25 for r in every)


def test_params_win_over_the_query(pipeline: ScoringPipeline, predicted: list[dict[str, Any]]) -> None:
    none = predictions(
        run(pipeline, orjson.dumps({"dataframe_records": ROWS, "params": {"reasons": 0}}), reasons=2)
    )
    assert none == predicted
    two = predictions(run(pipeline, orjson.dumps({"dataframe_records": ROWS, "params": {}}), reasons=2))
    assert all(len(r["reasons"]) == 2 for r in two)


@pytest.mark.parametrize(
    ("params", "fix"),
    [
        ({"reason": 3}, "this model takes one param, 'reasons'"),
        ({"reasons": -1}, "params.reasons must be a whole number"),
        ({"reasons": 1.5}, "params.reasons must be a whole number"),
        ({"reasons": True}, "params.reasons must be a whole number"),
        ([3], "params must be a JSON object"),
    ],
)
def test_bad_params_are_a_422(pipeline: ScoringPipeline, params: Any, fix: str) -> None:
    with pytest.raises(BadParams, match=fix) as caught:
        run(pipeline, orjson.dumps({"dataframe_records": ROWS, "params": params}))
    assert caught.value.status == 422


def test_params_are_part_of_the_normalised_key(approved_registry: Registry) -> None:
    model = model_of(build(approved_registry)[0])
    plain = CODEC.decode(model, orjson.dumps({"dataframe_records": ROWS}))
    asked = CODEC.decode(model, orjson.dumps({"dataframe_records": ROWS, "params": {"reasons": 2}}))
    assert isinstance(asked, MlflowRows) and asked.reasons == 2 and plain.single is False
    assert plain.normalised_key(model.sha256) != asked.normalised_key(model.sha256)
    split = {"dataframe_split": FRAME.to_dict(orient="split")}
    by_columns = CODEC.decode(model, orjson.dumps(split))
    assert isinstance(by_columns, MlflowColumns) and len(by_columns) == len(ROWS)
    spaced = CODEC.decode(model, json.dumps(split, indent=2).encode())  # other bytes, the same rows
    assert by_columns.normalised_key(model.sha256) == spaced.normalised_key(model.sha256)
    split_asked = CODEC.decode(model, orjson.dumps({**split, "params": {"reasons": 2}}))
    assert by_columns.normalised_key(model.sha256) != split_asked.normalised_key(model.sha256)
    other = FRAME.assign(note="x")  # another column: another key (its answer names it in a header)
    noted = CODEC.decode(model, orjson.dumps({"dataframe_split": other.to_dict(orient="split")}))
    assert by_columns.normalised_key(model.sha256) != noted.normalised_key(model.sha256)


def test_the_cache_keeps_the_doors_and_the_params_apart(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, cache=True)
    rows_json = JsonRows(max_rows=10_000, max_errors=100)
    bare = run(pipeline, orjson.dumps(ROWS), rows_json)
    records = orjson.dumps({"dataframe_records": ROWS})
    first = run(pipeline, records)
    assert "X-Cache" not in first.headers and predictions(first) == orjson.loads(bare.body)
    spaced = run(pipeline, json.dumps({"dataframe_records": ROWS}, indent=1))
    assert spaced.headers.get("X-Cache") == "hit" and spaced.body == first.body  # the same rows: aliased
    split = {"dataframe_split": FRAME.to_dict(orient="split")}
    assert run(pipeline, orjson.dumps(split)).body == first.body
    assert run(pipeline, json.dumps(split, indent=1)).headers.get("X-Cache") == "hit"
    asked = run(pipeline, orjson.dumps({"dataframe_records": ROWS, "params": {"reasons": 1}}))
    assert "X-Cache" not in asked.headers and all(len(r["reasons"]) == 1 for r in predictions(asked))
    again = run(pipeline, records, reasons=1)  # the query's reasons: another key again
    assert "X-Cache" not in again.headers and predictions(again) == predictions(asked)
    noted = run(pipeline, orjson.dumps({"dataframe_split": FRAME.assign(note="x").to_dict(orient="split")}))
    assert "X-Cache" not in noted.headers and noted.headers["X-Unknown-Keys"] == "1; note"


# --- the keys of the rows: /predict's rules ----------------------------------------------------------------
def test_split_columns_follow_the_unknown_key_rules(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]]
) -> None:
    lean = FRAME[["x5", "x12", "x31", "x44", "x53", "x56", "x58", "x62", "x81"]]  # x91 absent
    answer = run(pipeline, orjson.dumps({"dataframe_split": lean.to_dict(orient="split"), "params": None}))
    assert answer.headers["X-Imputed-Columns"] == "5; x91=5"
    extra = FRAME.assign(note="crm")
    answer = run(pipeline, orjson.dumps({"dataframe_split": extra.to_dict(orient="split")}))
    assert answer.headers["X-Unknown-Keys"] == "1; note" and predictions(answer) == predicted
    with pytest.raises(InputError) as caught:
        run(pipeline, orjson.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}))
    assert "none of the model's columns is a key of this row (its keys: 'a', 'b')" in caught.value.detail
    upper = FRAME.rename(columns=str.upper)
    with pytest.raises(InputError) as caught:
        run(pipeline, orjson.dumps({"dataframe_split": upper.to_dict(orient="split")}))
    assert caught.value.errors[0].reason.startswith("not a column of the model, but it resembles")
    assert caught.value.extra["bad_row_count"] == len(ROWS)


def test_pass_through_ids_come_back(pipeline: ScoringPipeline, predicted: list[dict[str, Any]]) -> None:
    frame = FRAME.assign(customer_id=[f"c{i}" for i in range(len(ROWS))])
    got = predictions(run(pipeline, json.dumps({"dataframe_split": frame.to_dict(orient="split")})))
    assert [r.pop("customer_id") for r in got] == [f"c{i}" for i in range(len(ROWS))]
    assert got == predicted


def test_a_row_that_cannot_be_scored_refuses_the_batch_under_any_policy(approved_registry: Registry) -> None:
    lenient, _ = build(approved_registry, batch_error_policy=BatchErrorPolicy.SCORE_VALID)
    body = orjson.dumps({"dataframe_records": [ROWS[0], dict(ROWS[1], x12="12 dollars")]})
    with pytest.raises(InputError) as caught:
        run(lenient, body)
    assert [(e.row, e.field) for e in caught.value.errors] == [(1, "x12")]
    assert caught.value.detail.startswith("1 of 2 row(s) cannot be scored; first: row 1, field x12")


def test_too_many_rows_is_a_413(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, max_rows=3, max_inflight_rows=10_000)
    with pytest.raises(PayloadTooLarge, match="4 rows exceed the limit of 3"):
        run(pipeline, orjson.dumps({"inputs": columns_of(ROWS[:4])}), MlflowJson(max_rows=3, max_errors=10))


# --- shapes that are not an MLflow body: each names its fix -----------------------------------------------
SHAPES: list[tuple[str, Any, str]] = [
    ("an array of rows", ROWS, 'wrap it as {"dataframe_records": [...]}'),
    ("a number", 3, 'send {"dataframe_split": DataFrame.to_dict(orient="split")}'),
    ("no format key", {"data": ROWS}, "its keys: 'data'"),
    ("empty object", {}, "the object is empty"),
    ("two format keys", {"inputs": ROWS, "instances": ROWS}, "'instances', 'inputs': send only one of them"),
    ("one bare row", ROWS[0], 'send it as {"dataframe_records": [<the row>]}'),
    ("split of a list", {"dataframe_split": ROWS}, 'send rows as objects in {"dataframe_records": [...]}'),
    ("split without columns", {"dataframe_split": {"data": [[1]]}}, NEEDS_COLUMNS),
    ("split, tight", {"dataframe_split": FRAME.to_dict(orient="tight")}, "orient='tight') is not read"),
    ("split, columns not names", {"dataframe_split": {"columns": [1], "data": [[1]]}},
     "array of column names"),
    ("split, a column an array", {"dataframe_split": {"columns": [["x5"]], "data": [[1], [2]]}},
     "array of column names"),
    ("split, a column null", {"dataframe_split": {"columns": ["x5", None], "data": [[1, 2], [3, 4]]}},
     "array of column names"),
    ("split, columns an object", {"dataframe_split": {"columns": {"x5": 0}, "data": [[1]]}},
     "array of column names"),
    ("split, a column twice", {"dataframe_split": {"columns": ["x5", "x5"], "data": [[1, 2]]}}, "'x5'"),
    ("split, short row", {"dataframe_split": {"columns": ["x5", "x12"], "data": [["monday"]]}},
     "an array of 2 values (one per column), got 1"),
    ("split, index too short", {"dataframe_split": {"columns": ["x5"], "data": [["a"], ["b"]], "index": [0]}},
     "an array of 2 labels"),
    ("split, no rows", {"dataframe_split": {"columns": ["x5"], "data": []}}, "dataframe_split holds no rows"),
    ("records of a dict", {"dataframe_records": columns_of(ROWS)},
     "dataframe_records is an array of row objects"),
    ("records of arrays", {"dataframe_records": FRAME.values.tolist()}, NEEDS_COLUMNS),
    ("instances of arrays", {"instances": FRAME.values.tolist()}, NEEDS_COLUMNS),
    ("inputs of arrays", {"inputs": FRAME.values.tolist()}, NEEDS_COLUMNS),
    ("inputs of scalars", {"inputs": [1, 2]}, "a row is an object keyed by column name, got int"),
    ("inputs, ragged columns", {"inputs": {"x5": ["a", "b"], "x12": [1]}}, "'x5' has 2 values, 'x12' has 1"),
    ("inputs, mixed columns", {"inputs": {"x5": ["a", "b"], "x12": 1}}, "'x12' hold one value"),
    ("inputs, empty", {"inputs": []}, "inputs holds no rows"),
    ("inputs, a string", {"inputs": "x5=monday"}, "got str"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "fix"), [(b, f) for _, b, f in SHAPES], ids=[n for n, _, _ in SHAPES])
def test_a_wrong_shape_is_a_422_naming_its_fix(pipeline: ScoringPipeline, body: Any, fix: str) -> None:
    with pytest.raises(BadBodyShape) as caught:
        run(pipeline, orjson.dumps(body))
    assert caught.value.status == 422
    assert fix in caught.value.detail, caught.value.detail
    assert len(caught.value.detail) < 1000 and len(caught.value.errors) <= 100


def test_a_bad_row_of_many_is_listed_up_to_the_cap(pipeline: ScoringPipeline) -> None:
    data = [["monday"]] * 300
    with pytest.raises(BadBodyShape) as caught:
        run(pipeline, orjson.dumps({"dataframe_split": {"columns": ["x5", "x12"], "data": data}}))
    assert len(caught.value.errors) == 100 and caught.value.extra["error_count"] == 300
    assert caught.value.errors[0].row == 0


# --- media types ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
def test_json_media_types_are_taken(content_type: str) -> None:
    CODEC.check_media_type(content_type)


@pytest.mark.parametrize(
    ("content_type", "fix"),
    [
        (None, "reads application/json (an MLflow scoring body) or text/csv"),
        ("text/plain", "got Content-Type 'text/plain'"),
        ("application/vnd.apache.parquet", "Parquet bodies are not read here"),
        ("application/json; charset=latin-1", "UTF-8 only"),
        ("application/json; format=pandas-split", "MLflow 1.x's scoring protocol"),
        ("application/json; version=2", "unrecognised Content-Type parameter(s): version"),
    ],
)
def test_other_media_types_are_a_415_naming_the_fix(content_type: str | None, fix: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=fix.replace("(", r"\(").replace(")", r"\)")):
        CODEC.check_media_type(content_type)


# --- text/csv ---------------------------------------------------------------------------------------------
def csv_codec() -> MlflowCsv:
    return MlflowCsv(max_rows=10_000, max_errors=100)


def test_a_csv_body_gives_the_bits_of_predict(
    pipeline: ScoringPipeline, predicted: list[dict[str, Any]]
) -> None:
    body = FRAME.to_csv(index=False)
    answer = run(pipeline, body, csv_codec(), "text/csv")
    assert predictions(answer) == predicted and answer.headers == {"X-Model-Version": "v1"}
    asked = predictions(run(pipeline, body, csv_codec(), "text/csv; charset=utf-8", reasons=2))
    assert all(len(r["reasons"]) == 2 for r in asked)
    with pytest.raises(UnsupportedMediaType, match="read as UTF-8"):
        run(pipeline, body, csv_codec(), "text/csv; charset=latin-1")


def test_a_csv_error_names_its_line(pipeline: ScoringPipeline) -> None:
    bad = FRAME.copy()
    bad.loc[2, "x12"] = "12 dollars"
    codec = csv_codec()
    with pytest.raises(InputError) as caught:
        run(pipeline, bad.to_csv(index=False), codec, "text/csv")
    located = codec.located(caught.value)
    assert located.detail.startswith("1 of 5 row(s) cannot be scored; first: line 4 (row 2), field x12")
    assert [e.as_dict()["line"] for e in located.errors] == [4]
    assert csv_codec().located(caught.value) is caught.value  # a codec that read nothing changes nothing
