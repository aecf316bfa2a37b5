"""The Open Inference Protocol's bodies as pydantic models, and each V2 route's OpenAPI `responses`.

Documentation only, like service/api/schemas.py: the routes answer with their own bytes. V2 errors are
the protocol's `{"error": "..."}` bodies (application/json, `V2Error`), not problem+json; an unexpected
server error is the app's problem+json 500 like every route's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api import openapi_docs, openapi_examples
from service.api.schemas import FieldProblem
from service.model.schema import example_rows

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
Parameters = dict[str, str | int | float | bool]


class V2Error(BaseModel):
    """The protocol's error body; the problem's members beside `error` when there are any."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What is wrong, naming the input, row and fix")
    kind: str | None = Field(None, description="A stable name of the kind of problem, e.g. invalid-rows")
    errors: list[FieldProblem] | None = Field(None, description="Every bad row and input (list capped)")
    error_count: int | None = Field(None, description="How many problems in all")
    bad_rows: list[int] | None = Field(None, description="Indexes of the rows that cannot be scored (capped)")
    bad_row_count: int | None = Field(None, description="How many rows cannot be scored")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="binary_tensor_data: the binary tensor data extension")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1: any number of rows")


class ModelMetadata(BaseModel):
    """The served version: the raw columns it reads (one input each) and what it answers."""

    name: str
    versions: list[str] = Field(description="The version this worker serves")
    platform: str
    inputs: list[MetadataTensor] = Field(
        description="BYTES for categories and money/percent strings, FP64 for numbers (BYTES strings also do)"
    )
    outputs: list[MetadataTensor]


class RequestInput(BaseModel):
    """One raw column: its name, datatype, shape [N] or [N, 1] and data (or binary_data_size)."""

    name: str = Field(description="A raw column of the model (x5, x12, ...), or a pass-through id")
    shape: list[int] = Field(min_length=1, max_length=2, description="[N] or [N, 1]")
    datatype: Datatype = Field(description="BYTES (strings), FP64 or an integer type; FP32 is refused")
    parameters: Parameters | None = Field(None, description="binary_data_size; content_type str or pd_json")
    data: list[Any] | None = Field(None, description="N elements, flat or [[v], ...]; null is missing")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = Field(None, description="binary_data: true for binary tensor data")


class InferenceRequest(BaseModel):
    id: str | None = Field(None, description="Echoed in the answer")
    parameters: Parameters | None = Field(
        None, description='binary_data_output: all outputs binary; reasons: k (or "all") reason codes per row'
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(None, description="The outputs to answer, in this order")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = Field(None, description="binary_data_size when sent as binary data")
    data: list[Any] | None = Field(None, description="The elements, row-major (absent when binary)")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="The version that scored the request")
    id: str | None = None
    parameters: Parameters | None = Field(
        None, description="imputed_inputs, unknown_inputs, unseen_categories, when there are any"
    )
    outputs: list[ResponseOutput]


# --- the routes' responses -------------------------------------------------------------------------------
def v2_errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """V2 error answers (application/json V2Error) for a route's `responses`, and the app's 500."""
    out: dict[int | str, dict[str, Any]] = {
        s: {"model": V2Error, "description": d} for s, d in descriptions.items()
    }
    return out | {500: openapi_docs.INTERNAL}


UNKNOWN = "A model name (or version) this server does not serve"
NOT_READY = "No model served yet (loading, or the version to serve failed its checks)"
SERVER_METADATA = openapi_docs.declared({200: openapi_docs.ok(ServerMetadata, "The server"), **v2_errors({})})
SERVER_LIVE = openapi_docs.declared(
    {200: openapi_docs.ok(ServerLive, "The process answers"), **v2_errors({})}
)
SERVER_READY = openapi_docs.declared(
    {200: openapi_docs.ok(ServerReady, "Ready to score"), **v2_errors({503: NOT_READY})}
)
MODEL_METADATA = openapi_docs.declared(
    {
        200: openapi_docs.ok(ModelMetadata, "The served version", headers=openapi_docs.MODEL_VERSION_HEADER),
        **v2_errors({404: UNKNOWN, 503: NOT_READY}),
    }
)
MODEL_READY = openapi_docs.declared(
    {200: openapi_docs.ok(ModelReady, "Ready to score"), **v2_errors({404: UNKNOWN, 503: NOT_READY})}
)


# --- the inference examples: /predict's batch example as a V2 request and answer (a test posts it) ---
def _tensor(name: str, values: list[Any]) -> dict[str, Any]:
    numbers = all(type(v) in (int, float) or v is None for v in values)
    datatype = "BYTES" if not numbers else "INT64" if all(type(v) is int for v in values) else "FP64"
    return {"name": name, "datatype": datatype, "shape": [len(values)], "data": values}


def request_example() -> dict[str, Any]:
    """The first rows of /predict's batch example, one input per column the model reads (strings as
    BYTES, numbers as FP64), and the id the answer echoes."""
    rows = example_rows()["rows"][: len(openapi_examples.BATCH)]
    columns = openapi_docs.approved_columns()
    inputs = [_tensor(c, [r[c] for r in rows]) for c in columns]
    for tensor in inputs:
        if tensor["datatype"] == "INT64":  # a numeric column of whole numbers is still FP64
            tensor["datatype"] = "FP64"
    return {"id": "example-1", "inputs": inputs}


def _answer_examples() -> dict[str, Any]:
    return {"three_rows": {"summary": "The answer to the three_rows request", "value": answer_example()}}


def answer_example() -> dict[str, Any]:
    """What the request example is answered: /predict's batch example as tensors, phat and
    business_outcome first, then the model inputs in alphabetical order (the order of the outputs)."""
    records = openapi_examples.BATCH
    first = ("phat", "business_outcome")
    names = [*first, *sorted(k for k in records[0] if k not in first)]
    return {
        "model_name": "propensity",
        "model_version": "v1",
        "id": "example-1",
        "outputs": [_tensor(n, [r[n] for r in records]) for n in names],
    }


BINARY = {"schema": {"type": "string", "format": "binary"}}
INFER_RESPONSES = openapi_docs.declared(
    {
        200: {
            **openapi_docs.ok(
                InferenceResponse,
                "The outputs; application/octet-stream when binary tensor data follow the JSON header "
                "(Inference-Header-Content-Length gives its length)",
                headers=openapi_docs.MODEL_VERSION_HEADER,
            ),
            "content": {"application/octet-stream": BINARY},
        },
        **v2_errors(
            {
                400: "Bad input: the request, an input, or rows that cannot be scored (naming row and input)",
                404: UNKNOWN,
                408: "The body stopped arriving (PROPENSITY_BODY_READ_TIMEOUT_SECONDS)",
                413: "Body larger than PROPENSITY_MAX_BODY_BYTES or more rows than PROPENSITY_MAX_ROWS",
                415: "Content-Type is not application/json or application/octet-stream",
                503: "No model served yet, or the worker is at capacity (load shedding): retry",
            }
        ),
    }
)
INFER_DESCRIPTION = (
    "One input per raw column (the pandas convention of MLServer and KServe), shape [N] or [N, 1]: BYTES "
    "strings read exactly as the same JSON strings on /predict (so phat has the same bits), FP64 or integer "
    "numbers; FP32 is refused (a float32 is another number than the decimal it came from). Binary tensor "
    "data (tritonclient's default) after the JSON header with Inference-Header-Content-Length. Outputs: "
    "phat, business_outcome, the model inputs as the GLM saw them, pass-through ids; reason codes with "
    'parameters {"reasons": k}.'
)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its $defs written in place (the document's components hold only the
    models the routes answer with)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


MODEL_NAME = _path_parameter("name", "The model's name: propensity (PROPENSITY_MODEL_NAME)")
VERSION = _path_parameter("version", 'The version this worker serves: "v1" or "1"')


def _infer_extra(*parameters: dict[str, Any]) -> dict[str, Any]:
    """The inference routes read their path parameters themselves (no per-request parameter validation
    on the hot path), so the document gets them here, with the request body and the examples."""
    schema = _inline(InferenceRequest.model_json_schema())
    # the JSON header, then each binary input's bytes
    example = {"three_rows": {"summary": "Three rows, one input per column", "value": request_example()}}
    content = {
        "application/json": {"schema": schema, "examples": example},
        "application/octet-stream": BINARY,
    }
    answers = {"200": {"content": {"application/json": {"examples": _answer_examples()}}}}
    return {
        "parameters": list(parameters),
        "requestBody": {"required": True, "content": content},
        "responses": answers,
    }


# The routes' openapi_extra, built when the document is first rendered (FastAPI reads it only then).
INFER_OPENAPI: Any = openapi_docs.Lazy(lambda: _infer_extra(MODEL_NAME))
VERSION_INFER_OPENAPI: Any = openapi_docs.Lazy(lambda: _infer_extra(MODEL_NAME, VERSION))
