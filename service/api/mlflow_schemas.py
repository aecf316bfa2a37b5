"""MLflow's scoring protocol in the OpenAPI document: /invocations' bodies and answers, /ping, /version.

Documentation only, like service/api/schemas.py: the routes (service/api/mlflow_routes.py) answer with
their own bytes. Errors are problem+json bodies (the `Problem` component) that also carry MLflow's
`error_code` and `message`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.api import openapi_examples
from service.api.openapi_docs import REF, Lazy, declared, ok, problem
from service.api.schemas import PredictResult
from service.model.schema import example_rows


class MlflowPredictions(BaseModel):
    """MLflow's answer: one result per row, in the request's order, each exactly /predict's result."""

    predictions: list[PredictResult] = Field(description="One result per row, in the request's order")


class MlflowVersion(BaseModel):
    """What answers here: the service's version and the model version it serves."""

    service: str = Field(description="The service's package name")
    service_version: str = Field(description="The service's version")
    model: str | None = Field(description="The served model's name; null while none is served")
    model_version: str | None = Field(description="The served model version, e.g. v1; null while none is")


# Errors are the Problem component (it allows other members) with MLflow's two in front: said in words,
# since one schema for every door's errors is what generated clients and the checks of the document take.
MLFLOW_MEMBERS = (
    "The body is problem+json with MLflow's members in front: `error_code` (BAD_REQUEST for every "
    "input error, TEMPORARILY_UNAVAILABLE for a 503, INTERNAL_ERROR for a 500) and `message` (the text "
    "of `detail`)."
)


def mlflow_problem(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return problem(f"{description}. {MLFLOW_MEMBERS}", headers=headers)


RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
}
MODEL_VERSION = {
    "X-Model-Version": {
        "description": "The model version that answered",
        "required": True,
        "schema": {"type": "string"},
    }
}
INTERNAL = mlflow_problem("An unexpected error (the log has the request id)")


MAX_ROWS = 10_000  # PROPENSITY_MAX_ROWS by default; more rows are a 413


# --- the request body --------------------------------------------------------------------------------------
def _rows() -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": REF.format(model="Row")}, "minItems": 1, "maxItems": MAX_ROWS}


def _columns() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "column -> its values, one per row (all of one length); a scalar per column is "
        "one row",
        "additionalProperties": True,
    }


PARAMS = {
    "type": ["object", "null"],
    "description": 'Optional. {"reasons": k}: each result carries its top-k reason codes (k a whole number '
    'or "all"); it wins over ?reasons= and X-Reason-Codes. No other param is taken; null is no params.',
    "properties": {
        "reasons": {  # null: not asked, as an absent key
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "enum": ["all"]},
                {"type": "null"},
            ]
        }
    },
    "additionalProperties": False,
}


def _body(key: str, schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": {key: schema, "params": PARAMS},
        "required": [key],
    }


def request_schema() -> dict[str, Any]:
    split = {
        "type": "object",
        "description": "pandas orient 'split' (DataFrame.to_dict(orient='split')); the index is not read",
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {
                "type": "array",
                "items": {"type": "array", "items": {}},
                "minItems": 1,
                "maxItems": MAX_ROWS,
            },
            "index": {"description": "Any value: not read (the answer keeps the rows' order)"},
        },
        "required": ["columns", "data"],
        "additionalProperties": False,
    }
    either = {"oneOf": [_rows(), _columns()]}
    return {
        "oneOf": [
            _body("dataframe_split", split, "DataframeSplit"),
            _body("dataframe_records", _rows(), "DataframeRecords"),
            _body("instances", either, "Instances"),
            _body("inputs", either, "Inputs"),
        ]
    }


def _split_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    columns = list(rows[0])
    return {"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}


def _request_examples() -> dict[str, Any]:
    rows: list[dict[str, Any]] = example_rows()["rows"]
    return {
        "dataframe_split": {
            "summary": "pandas orient split (what mlflow's ScoringServerClient sends)",
            "value": {"dataframe_split": _split_of(rows[:3])},
        },
        "dataframe_records": {"summary": "pandas orient records", "value": {"dataframe_records": rows[:3]}},
        "inputs_columns": {
            "summary": "inputs by columns",
            "value": {"inputs": {c: [r.get(c) for r in rows[:3]] for c in rows[0]}},
        },
        "reasons": {
            "summary": "One row with its top 3 reason codes",
            "value": {"dataframe_records": rows[:1], "params": {"reasons": 3}},
        },
    }


def _answer_examples() -> dict[str, Any]:
    return {
        "batch": {
            "summary": "The answer to the dataframe_split, dataframe_records and inputs_columns examples",
            "value": {"predictions": openapi_examples.BATCH},
        }
    }


INVOCATIONS_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": request_schema(), "examples": Lazy(_request_examples)},
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "A header row of column names, then one row per line",
                }
            },
        },
    }
}

INVOCATIONS_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {
        200: ok(
            MlflowPredictions,
            "One result per row, each exactly what /predict answers for the row",
            headers=MODEL_VERSION,
            examples=Lazy(_answer_examples),
        ),
        400: mlflow_problem("Malformed JSON or CSV, or an empty body"),
        408: mlflow_problem("The body stopped arriving (PROPENSITY_BODY_READ_TIMEOUT_SECONDS)"),
        413: mlflow_problem(
            "Body larger than PROPENSITY_MAX_BODY_BYTES or more rows than PROPENSITY_MAX_ROWS"
        ),
        415: mlflow_problem("Content-Type is not application/json or text/csv, or not UTF-8"),
        422: mlflow_problem(
            "Not an MLflow scoring body (the detail names the fix), bad params, or rows that cannot be "
            "scored: every bad row, field and reason (list capped)"
        ),
        500: INTERNAL,
        503: mlflow_problem(
            "No model served yet, or the worker is at capacity (load shedding)", headers=RETRY_AFTER
        ),
    }
)

PING_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {
        200: {
            # text/plain: the route's response_class declares the content
            "description": 'Ready: a model is served (the body is "\\n", as MLflow\'s server answers)',
            "headers": MODEL_VERSION,
        },
        500: INTERNAL,
        503: mlflow_problem(
            "No model served yet (loading, or the version failed its checks)", headers=RETRY_AFTER
        ),
    }
)

VERSION_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {200: ok(MlflowVersion, "The service's version and the served model version"), 500: INTERNAL}
)
