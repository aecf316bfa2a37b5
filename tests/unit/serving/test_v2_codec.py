"""The Open Inference Protocol codec through the scoring pipeline: the same phat bits as /predict for the
reference rows and 2,000 synthetic rows (JSON and binary tensor data), what each datatype may carry, the
outputs and their forms, and every refusal naming its fix."""

from __future__ import annotations

import math
import struct
from typing import Any

import anyio
import numpy as np
import orjson
import pytest

from service.errors import InputError, PayloadTooLarge, PropensityError, UnsupportedMediaType
from service.model.registry import Registry
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving import v2_binary
from service.serving.json_rows import JsonRows
from service.serving.pipeline import Answer, Body, ScoringPipeline
from service.serving.scorer import CompiledModel
from service.serving.v2_codec import BINARY_TYPE, JSON_TYPE, V2Batch, V2Codec, model_metadata
from service.serving.v2_request import InferenceRequestError
from tests.unit.serving.test_pipeline import build, model_of
from tests.unit.serving.v2_requests import (
    Columns,
    binary_body,
    columns_of_frame,
    columns_of_rows,
    json_body,
    outputs_of,
    rows_of,
)

ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]
COLUMNS = columns_of_rows(ROWS)
N = len(ROWS)


def codec(header_length: int | None = None, max_rows: int = 10_000) -> V2Codec:
    return V2Codec(model_name="propensity", max_rows=max_rows, max_errors=100, header_length=header_length)


def run(pipeline: ScoringPipeline, body: bytes, header_length: int | None = None, **kwargs: Any) -> Answer:
    """One call through the pipeline with a fresh V2 codec (as the route makes one per request)."""
    call_codec = codec(header_length)

    async def call() -> Answer:
        admitted = pipeline.admit(JSON_TYPE, len(body), codec=call_codec)
        try:
            return await pipeline.infer(admitted, Body([body], len(body)), **kwargs)
        finally:
            admitted.release()

    answer = anyio.run(call)
    if call_codec.media_type == BINARY_TYPE:
        assert answer.media_type == BINARY_TYPE and call_codec.answer_header_length is not None
    return answer


def outputs(answer: Answer) -> dict[str, Any]:
    header = v2_binary.json_header_length(answer.body)
    binary = header is not None and header < len(answer.body)
    return outputs_of(answer.body, header if binary else None)


def refused(pipeline: ScoringPipeline, body: bytes, header_length: int | None = None) -> PropensityError:
    with pytest.raises(PropensityError) as caught:
        run(pipeline, body, header_length)
    return caught.value


@pytest.fixture(scope="module")
def pipeline(approved_registry: Registry) -> ScoringPipeline:
    return build(approved_registry)[0]


@pytest.fixture(scope="module")
def model(pipeline: ScoringPipeline) -> CompiledModel:
    return model_of(pipeline)


def predicted(pipeline: ScoringPipeline, rows: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
    """What /predict answers for these rows."""
    body = orjson.dumps(rows)
    jr = JsonRows(max_rows=10_000, max_errors=100)

    async def call() -> Answer:
        admitted = pipeline.admit(JSON_TYPE, len(body), codec=jr)
        try:
            return await pipeline.infer(admitted, Body([body], len(body)), **kwargs)
        finally:
            admitted.release()

    records: list[dict[str, Any]] = orjson.loads(anyio.run(call).body)
    return records


def bits(values: Any) -> list[bytes]:
    return [struct.pack("<d", v) for v in np.asarray(values, dtype=np.float64).ravel()]


# --- the same bits as /predict --------------------------------------------------------------------------
def test_reference_rows_score_the_bits_of_predict_as_json_and_binary(pipeline: ScoringPipeline) -> None:
    live = predicted(pipeline, ROWS)
    assert [r["phat"] for r in live] == pytest.approx(PHAT, abs=1e-12)
    as_json = outputs(run(pipeline, json_body(COLUMNS)))
    body, length = binary_body(COLUMNS, parameters={"binary_data_output": True})
    as_binary = outputs(run(pipeline, body, length))
    for got in (as_json, as_binary):
        assert bits(got["phat"]) == bits([r["phat"] for r in live])
        assert got["business_outcome"].tolist() == [r["business_outcome"] for r in live]
        for name in ("x91", "x12", "x5_tuesday", "x31_japan"):
            assert got[name].tolist() == [r[name] for r in live]


@pytest.fixture(scope="module")
def synthetic() -> Columns:
    return columns_of_frame(make_synthetic_frame(2_000, 31, target=False))


def test_two_thousand_synthetic_rows_score_the_bits_of_predict(
    pipeline: ScoringPipeline, synthetic: Columns
) -> None:
    live = predicted(pipeline, rows_of(synthetic))
    want = bits([r["phat"] for r in live])
    as_json = outputs(run(pipeline, json_body(synthetic)))
    body, length = binary_body(synthetic, outputs=[{"name": "phat", "parameters": {"binary_data": True}}])
    as_binary = outputs(run(pipeline, body, length))
    assert bits(as_json["phat"]) == want and bits(as_binary["phat"]) == want
    assert list(as_binary) == ["phat"]
    assert as_json["x44"].tolist() == [r["x44"] for r in live]


def test_only_the_model_columns_are_needed(pipeline: ScoringPipeline, model: CompiledModel) -> None:
    lean = {c: COLUMNS[c] for c in model.used_columns}
    full = outputs(run(pipeline, json_body(COLUMNS)))
    assert bits(outputs(run(pipeline, json_body(lean)))["phat"]) == bits(full["phat"])


def test_strings_read_as_the_same_json_strings(pipeline: ScoringPipeline) -> None:
    """Money, percent and numbers as BYTES strings: exactly as /predict reads the same strings."""
    row = {"x5": "Tuesday ", "x12": "($5,032.58)", "x31": "GERMANY", "x44": "0.98441208", "x63": "62.59%"}
    row |= {"x53": "nan", "x56": "", "x58": "1e-3", "x62": "-12", "x81": "April", "x91": " 0.5 "}
    live = predicted(pipeline, [row])
    got = outputs(run(pipeline, json_body({k: [v] for k, v in row.items()})))
    assert bits(got["phat"]) == bits([live[0]["phat"]])


def test_integers_and_nulls_read_as_predict_reads_them(pipeline: ScoringPipeline) -> None:
    row = {"x5": None, "x12": "$1", "x31": "asia", "x44": 3, "x53": None, "x81": "june", "x91": -2}
    live = predicted(pipeline, [row])
    tensors = {k: [v] for k, v in row.items()}
    body = orjson.loads(json_body(tensors))
    for tensor in body["inputs"]:
        if tensor["name"] in ("x44", "x91"):
            tensor["datatype"] = "INT64"
    got = outputs(run(pipeline, orjson.dumps(body)))
    assert bits(got["phat"]) == bits([live[0]["phat"]])


def test_bare_nan_is_missing_and_bare_infinity_names_its_row(pipeline: ScoringPipeline) -> None:
    rows = [{**ROWS[0], "x44": None}, ROWS[1]]
    live = predicted(pipeline, rows)
    body = json_body({c: [r.get(c) for r in rows] for c in ROWS[0]}).replace(b"[null,", b"[NaN,")
    assert b"NaN" in body
    assert bits(outputs(run(pipeline, body))["phat"]) == bits([r["phat"] for r in live])
    error = refused(pipeline, body.replace(b"NaN", b"-Infinity"))
    assert error.status == 422 and "row 0, field x44: not a finite number" in error.detail


def test_n_and_n_by_1_shapes_mix(pipeline: ScoringPipeline) -> None:
    body = orjson.loads(json_body(COLUMNS))
    for tensor in body["inputs"][::2]:
        tensor["shape"] = [N, 1]
    assert bits(outputs(run(pipeline, orjson.dumps(body)))["phat"]) == bits(
        outputs(run(pipeline, json_body(COLUMNS)))["phat"]
    )


def test_shapes_written_differently_are_read_alike(pipeline: ScoringPipeline) -> None:
    """Equal shape texts are read once; a shape written with spaces (or [N] beside [N, 1]) is read on
    its own and means the same."""
    body = json_body(COLUMNS)
    spaced = body.replace(f'"shape":[{N}]'.encode(), f'"shape": [ {N} ]'.encode(), 1)
    assert spaced != body
    assert bits(outputs(run(pipeline, spaced))["phat"]) == bits(outputs(run(pipeline, body))["phat"])


def test_a_layout_seen_before_is_checked_again_for_what_the_names_do_not_decide(
    pipeline: ScoringPipeline,
) -> None:
    """The same input names twice: the second request's datatypes, shapes and data are still read (only
    what the names decide is remembered), and a refused layout is refused every time."""
    good = request(X12, tensor("x44", "FP64", [1.0]))
    assert run(pipeline, good).status == 200
    assert "send it as FP64" in refused(pipeline, request(X12, tensor("x44", "FP32", [1.0]))).detail
    assert "have 1 and 2 rows" in refused(pipeline, request(X12, tensor("x44", "FP64", [1.0, 2.0]))).detail
    for _ in range(2):
        assert "send it as 'x44'" in refused(pipeline, request(X12, tensor("X44", "FP64", [1.0]))).detail


def test_shape_n_by_1_and_nested_data_are_one_column(pipeline: ScoringPipeline) -> None:
    flat = outputs(run(pipeline, json_body(COLUMNS)))
    answer = run(pipeline, json_body(COLUMNS, rank=2))
    body = orjson.loads(answer.body)
    assert {tuple(o["shape"]) for o in body["outputs"]} == {(len(ROWS), 1)}  # shapes follow the request
    assert bits(outputs(answer)["phat"]) == bits(flat["phat"])
    nested = orjson.loads(json_body(COLUMNS, rank=2))
    for tensor in nested["inputs"]:
        tensor["data"] = [[v] for v in tensor["data"]]
    assert bits(outputs(run(pipeline, orjson.dumps(nested)))["phat"]) == bits(flat["phat"])


# --- the answer -----------------------------------------------------------------------------------------
def test_default_outputs_are_phat_outcome_and_the_inputs_typed_as_predict(
    pipeline: ScoringPipeline, model: CompiledModel
) -> None:
    answer = orjson.loads(run(pipeline, json_body(COLUMNS, id="req-7")).body)
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("propensity", "v1", "req-7")
    names = [o["name"] for o in answer["outputs"]]
    assert names == ["phat", "business_outcome", *sorted(model.features)]
    types = {o["name"]: o["datatype"] for o in answer["outputs"]}
    assert types["phat"] == types["x91"] == types["x12"] == "FP64"
    assert types["business_outcome"] == types["x5_tuesday"] == types["x81_May"] == "INT64"
    live = predicted(pipeline, ROWS)
    for output in answer["outputs"]:
        assert output["data"] == [r[output["name"]] for r in live]  # the same values, the same JSON types


def test_requested_outputs_come_in_their_order_each_as_asked(pipeline: ScoringPipeline) -> None:
    asked = [{"name": "business_outcome"}, {"name": "phat", "parameters": {"binary_data": True}}]
    answer = run(pipeline, json_body(COLUMNS, outputs=asked))
    length = v2_binary.json_header_length(answer.body)
    assert length is not None and answer.media_type == BINARY_TYPE
    header = orjson.loads(answer.body[:length])
    assert [o["name"] for o in header["outputs"]] == ["business_outcome", "phat"]
    assert "data" in header["outputs"][0] and header["outputs"][1]["parameters"] == {
        "binary_data_size": 8 * N
    }
    assert answer.body[length:] == np.array(outputs(answer)["phat"], dtype="<f8").tobytes()


def test_binary_data_output_false_per_output_wins(pipeline: ScoringPipeline) -> None:
    asked = [{"name": "phat", "parameters": {"binary_data": False}}]
    answer = run(pipeline, json_body(COLUMNS, outputs=asked, parameters={"binary_data_output": True}))
    assert answer.media_type == JSON_TYPE and orjson.loads(answer.body)["outputs"][0]["data"]


def test_reason_codes_on_request_are_predicts(pipeline: ScoringPipeline) -> None:
    live = predicted(pipeline, ROWS, reasons=3)
    answer = run(pipeline, json_body(COLUMNS, parameters={"reasons": 3}))
    got = outputs(answer)
    assert got["reasons"].shape == (len(ROWS), 3) and got["reason_contributions"].shape == (len(ROWS), 3)
    assert got["reasons"].tolist() == [[r["input"] for r in row["reasons"]] for row in live]
    assert bits(got["reason_contributions"]) == bits(
        [[r["contribution"] for r in row["reasons"]] for row in live]
    )
    binary = run(pipeline, json_body(COLUMNS, parameters={"reasons": 3, "binary_data_output": True}))
    assert binary.media_type == BINARY_TYPE
    assert outputs(binary)["reasons"].tolist() == [
        [s.encode() for s in row] for row in got["reasons"].tolist()
    ]


def test_pass_through_ids_come_back_with_their_datatype(pipeline: ScoringPipeline) -> None:
    tensors = {**COLUMNS, "customer_id": [f"c-{i}" for i in range(len(ROWS))]}
    answer = orjson.loads(run(pipeline, json_body(tensors)).body)
    ids = next(o for o in answer["outputs"] if o["name"] == "customer_id")
    assert ids == {
        "name": "customer_id",
        "datatype": "BYTES",
        "shape": [len(ROWS)],
        "data": tensors["customer_id"],
    }
    assert "parameters" not in answer  # an id is not an unknown input
    body = orjson.loads(json_body(COLUMNS))
    body["inputs"].append({"name": "customer_id", "datatype": "INT64", "shape": [len(ROWS)], "data": [7] * N})
    body["parameters"] = {"binary_data_output": True}
    got = outputs(run(pipeline, orjson.dumps(body)))
    assert got["customer_id"].dtype == np.int64 and got["customer_id"].tolist() == [7] * N


def test_a_null_id_is_sent_as_json_even_when_binary_was_asked(pipeline: ScoringPipeline) -> None:
    tensors = {**COLUMNS, "customer_id": ["a", None, *"cdefgh"[: N - 2]]}
    answer = run(pipeline, json_body(tensors, parameters={"binary_data_output": True}))
    length = v2_binary.json_header_length(answer.body)
    assert length is not None
    header = orjson.loads(answer.body[:length])
    ids = next(o for o in header["outputs"] if o["name"] == "customer_id")
    assert ids["data"] == tensors["customer_id"] and "parameters" not in ids


def test_absent_columns_are_imputed_and_unknown_inputs_reported(pipeline: ScoringPipeline) -> None:
    tensors = {c: v for c, v in COLUMNS.items() if c not in ("x44", "x91")} | {"colour": ["red"] * N}
    answer = run(pipeline, json_body(tensors))
    assert answer.headers["X-Imputed-Columns"] == f"{N}; x44={N},x91={N}"
    assert answer.headers["X-Unknown-Keys"] == "1; colour"
    assert orjson.loads(answer.body)["parameters"] == {
        "imputed_inputs": "x44,x91",
        "unknown_inputs": "colour",
    }
    live = predicted(pipeline, [{k: v for k, v in r.items() if k not in ("x44", "x91")} for r in ROWS])
    assert bits(outputs(answer)["phat"]) == bits([r["phat"] for r in live])


def test_unseen_categories_are_scored_as_missing_and_reported(pipeline: ScoringPipeline) -> None:
    tensors = {**COLUMNS, "x31": ["europe"] * N}
    answer = run(pipeline, json_body(tensors))
    assert answer.headers["X-Unseen-Categories"] == str(N)
    assert orjson.loads(answer.body)["parameters"] == {"unseen_categories": f"x31={N}"}


def test_a_bad_row_refuses_the_request_naming_row_and_input(approved_registry: Registry) -> None:
    lenient = build(approved_registry, batch_error_policy="score-valid")[0]  # a tensor has no slot for errors
    tensors = {**COLUMNS, "x12": ["$1", "12 dollars", *["$3"] * (N - 2)]}
    error = refused(lenient, json_body(tensors))
    assert isinstance(error, InputError) and error.status == 422
    assert error.detail.startswith(
        f"1 of {N} row(s) cannot be scored; first: row 1, field x12: not a money amount"
    )


def test_the_metadata_lists_the_columns_the_model_reads(model: CompiledModel) -> None:
    meta = model_metadata(model, "propensity")
    assert meta["versions"] == ["v1"] and meta["name"] == "propensity"
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("x5", "BYTES"),
        ("x12", "BYTES"),
        ("x31", "BYTES"),
        ("x44", "FP64"),
        ("x53", "FP64"),
        ("x56", "FP64"),
        ("x58", "FP64"),
        ("x62", "FP64"),
        ("x81", "BYTES"),
        ("x91", "FP64"),
    ]
    assert [t["name"] for t in meta["outputs"]][:2] == ["phat", "business_outcome"] and len(
        meta["outputs"]
    ) == 27


def test_the_binary_header_length_keeps_cache_entries_apart() -> None:
    assert codec().key_suffix == ":v2:propensity" and codec(120).key_suffix == ":v2:propensity:h120"


def test_a_cached_binary_answer_is_the_same_bytes(approved_registry: Registry) -> None:
    cached = build(approved_registry, cache=True)[0]
    body, length = binary_body(COLUMNS, parameters={"binary_data_output": True})
    first, again = run(cached, body, length), run(cached, body, length)
    assert again.headers.get("X-Cache") == "hit" and again.body == first.body
    header = v2_binary.json_header_length(again.body)  # a hit: where its JSON ends is read from it
    assert header is not None
    sizes = [o["parameters"]["binary_data_size"] for o in orjson.loads(again.body[:header])["outputs"]]
    assert header + sum(sizes) == len(again.body)


# --- refused, each naming the fix -----------------------------------------------------------------------
def request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def tensor(
    name: str, datatype: str, data: list[Any], shape: list[int] | None = None, **params: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "datatype": datatype,
        "shape": [len(data)] if shape is None else shape,
        "data": data,
    }
    return out | ({"parameters": params} if params else {})


X12 = tensor("x12", "BYTES", ["$1"])

REFUSALS: dict[str, tuple[bytes, str]] = {
    "fp32": (request(X12, tensor("x44", "FP32", [0.98441208])), "send it as FP64"),
    "fp16": (request(X12, tensor("x44", "FP16", [0.5])), "astype(numpy.float64)"),
    "bool": (request(X12, tensor("x44", "BOOL", [True])), "send it as FP64, an integer type or BYTES"),
    "category as number": (request(X12, tensor("x5", "FP64", [1.0])), "x5 is a category: send it as BYTES"),
    "string in FP64": (request(X12, tensor("x44", "FP64", ["0.5"])), "strings go in a BYTES input"),
    "number in BYTES": (request(tensor("x12", "BYTES", [5])), "send numbers as an FP64 input"),
    "float in INT64": (request(X12, tensor("x44", "INT64", [0.5])), "row 0 holds a number"),
    "mismatched shapes": (request(X12, tensor("x44", "FP64", [1.0, 2.0])), "have 1 and 2 rows"),
    "matrix": (request(tensor("x", "FP64", [1.0] * 4, [2, 2])), "send each column as its own input"),
    "no shape": (request(tensor("x12", "BYTES", ["$1"], [])), "has shape []"),
    "negative rows": (request(tensor("x12", "BYTES", ["$1"], [-1])), "has shape [-1]"),
    "shape not an array": (
        request(X12, {**tensor("x44", "FP64", [1.0]), "shape": "1"}),
        "Expected `array`, got `str` - at `$.inputs[1].shape`",
    ),
    "every shape not an array": (
        request({**X12, "shape": 1}, {**tensor("x44", "FP64", [1.0]), "shape": 1}),
        "Expected `array`, got `int` - at `$.inputs[0].shape`",
    ),
    "float in a shape": (
        request(X12, {**tensor("x44", "FP64", [1.0]), "shape": [1.0]}),
        "`$.inputs[1].shape[0]`",
    ),
    "data vs shape": (
        request(tensor("x12", "BYTES", ["$1"], [2])),
        "its shape says 2 element(s), its data holds 1",
    ),
    "no model column": (
        request(tensor("input0", "FP64", [1.0])),
        "named by the model's columns: x5, x12, x31",
    ),
    "near miss": (request(X12, tensor("X44", "FP64", [1.0])), "send it as 'x44'"),
    "twice": (request(X12, X12), "is given twice"),
    "no inputs": (request(), "the request has no inputs"),
    "zero rows": (request(tensor("x12", "BYTES", [], [0])), "the inputs have 0 rows"),
    "no data": (request({"name": "x12", "datatype": "BYTES", "shape": [1]}), "has no data"),
    "not json": (b"x12=1", "Inference-Header-Content-Length"),
    "wrong envelope": (orjson.dumps({"instances": [{"x12": "$1"}]}), "missing required field `inputs`"),
    "base64": (request(tensor("x12", "BYTES", ["JDE="], content_type="base64")), "content_type str, or none"),
    "pd_json not json": (
        request(tensor("x12", "BYTES", ["$1"], content_type="pd_json")),
        "is not a JSON text",
    ),
    "binary size without header": (
        request({"name": "x12", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4}}),
        "no Inference-Header-Content-Length",
    ),
    "unknown output": (
        request(X12, outputs=[{"name": "probability"}]),
        "this model answers phat, business_outcome",
    ),
    "reasons not asked": (request(X12, outputs=[{"name": "reasons"}]), 'parameters {"reasons": k}'),
    "bad reasons": (request(X12, parameters={"reasons": -1}), "0 to 25"),
    "classification": (
        request(X12, outputs=[{"name": "phat", "parameters": {"classification": 2}}]),
        "classification extension is not supported",
    ),
    "fp32 id": (request(X12, tensor("customer_id", "FP32", [1.0])), "a pass-through id"),
    "huge number": (request(X12, tensor("x44", "FP64", [7])).replace(b"[7]", b"[1e999]"), "cannot be read"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_requests_are_400s_naming_the_fix(pipeline: ScoringPipeline, case: str) -> None:
    body, fix = REFUSALS[case]
    error = refused(pipeline, body)
    assert isinstance(error, InferenceRequestError) and error.status == 400, (case, error.detail)
    assert fix in error.detail, (case, error.detail)


def test_fp32_is_refused_with_the_number_it_would_have_scored(pipeline: ScoringPipeline) -> None:
    detail = refused(pipeline, REFUSALS["fp32"][0]).detail
    assert "0.98441208 as FP32 is 0.9844120740890503" in detail
    assert float(np.float32(0.98441208)) == 0.9844120740890503  # the example is the real widening


def test_too_many_rows_is_a_413(pipeline: ScoringPipeline) -> None:
    small = codec(max_rows=3)
    with pytest.raises(PayloadTooLarge, match="4 rows exceed the limit of 3 rows"):
        small.decode(model_of(pipeline), request(tensor("x12", "BYTES", ["$1"] * 4)))


def test_a_media_type_other_than_json_or_binary_is_a_415() -> None:
    for fine in (
        None,
        "application/json",
        "application/json; charset=utf-8",
        BINARY_TYPE,
        "application/x+json",
    ):
        codec().check_media_type(fine)
    with pytest.raises(UnsupportedMediaType, match="Inference-Header-Content-Length"):
        codec().check_media_type("text/csv")


# --- binary tensor data, refused ------------------------------------------------------------------------
def binary(columns: Columns) -> tuple[bytes, int]:
    return binary_body(columns)


BINARY_REFUSALS: dict[str, tuple[Any, str]] = {
    "header longer than body": (lambda b, n: (b, len(b) + 1), "the body has only"),
    "raw binary request": (lambda b, n: (b, 0), "a raw binary request"),
    "trailing bytes": (lambda b, n: (b + b"\x00", n), "1 byte(s) of binary data follow"),
    "cut short": (lambda b, n: (b[:-1], n), "reaches past the end of the body"),
}


@pytest.mark.parametrize("case", BINARY_REFUSALS)
def test_bad_binary_bodies_are_400s(pipeline: ScoringPipeline, case: str) -> None:
    change, fix = BINARY_REFUSALS[case]
    body, length = change(*binary({"x12": ["$1", "$2"], "x44": [0.5, 0.25]}))
    error = refused(pipeline, body, length)
    assert error.status == 400 and fix in error.detail, error.detail


def test_binary_elements_are_checked(pipeline: ScoringPipeline) -> None:
    header = request(
        {"name": "x12", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}
    )
    error = refused(pipeline, header + struct.pack("<I", 1) + b"\xff", len(header))
    assert "row 0: BYTES elements are read as UTF-8 text" in error.detail
    error = refused(pipeline, header + struct.pack("<I", 9) + b"$", len(header))
    assert "element 0 says 9 bytes, but only 1 remain" in error.detail
    fp = request(
        X12, {"name": "x44", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 4}}
    )
    error = refused(pipeline, fp + b"\x00" * 4, len(fp))
    assert "does not hold 1 FP64 element(s) of 8 byte(s)" in error.detail


def test_binary_nan_is_missing(pipeline: ScoringPipeline) -> None:
    rows = [{**ROWS[0], "x44": None}, {**ROWS[1], "x44": 0.5}]
    columns = {c: [r.get(c) for r in rows] for c in ("x5", "x12", "x31", "x44", "x53", "x81", "x91")}
    body, length = binary_body(columns)
    assert struct.pack("<d", math.nan) in body
    live = predicted(pipeline, rows_of(columns))
    assert bits(outputs(run(pipeline, body, length))["phat"]) == bits([r["phat"] for r in live])


def test_decode_reads_only_the_model_columns(model: CompiledModel) -> None:
    body = request(X12, tensor("x0", "FP64", ["not even read"]), tensor("x44", "FP64", [0.5]))
    batch = codec().decode(model, body)
    assert isinstance(batch, V2Batch) and set(batch.columns) == {"x12", "x44"}
    assert batch.column("x5") == [None] and batch.rows[0].get("x12") == "$1" and len(batch) == 1


def test_the_cache_keys_hold_what_the_answer_depends_on(approved_registry: Registry) -> None:
    cached = build(approved_registry, cache=True)[0]
    rows = [{**ROWS[0], "x44": None}, ROWS[1]]
    body = json_body({c: [r.get(c) for r in rows] for c in ROWS[0]}, id="a")
    first = run(cached, body)
    spaced = run(cached, b" " + body + b"\n")  # other bytes, the same request: the normalised key
    assert spaced.headers.get("X-Cache") == "hit" and spaced.body == first.body
    other_id = run(cached, body.replace(b'"id":"a"', b'"id":"b"'))
    assert other_id.headers.get("X-Cache") is None and orjson.loads(other_id.body)["id"] == "b"
    error = refused(cached, body.replace(b"[null,", b"[-Infinity,"))  # not the null's stored answer
    assert error.status == 422


def test_where_a_json_header_ends_is_found_whatever_its_strings_hold() -> None:
    header = orjson.dumps(
        {"id": 'a}"]\\[{', "outputs": [{"name": "phat", "parameters": {"binary_data_size": 8}}]}
    )
    body = header + b"}}]]\x00\x7d\x22"
    assert v2_binary.json_header_length(body) == len(header)
    assert v2_binary.json_header_length(b"[1]") is None and v2_binary.json_header_length(b'{"a": [1') is None
