"""OpenAPI documentation of /predict: real example requests and every error response."""

from __future__ import annotations

from typing import Any

from service.model.schema import example_rows, notebook_schema

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _one_row() -> dict[str, Any]:
    rows: list[dict[str, Any]] = example_rows()["rows"]
    return rows[0]


def _all_strings() -> dict[str, Any]:
    rows: list[dict[str, Any]] = example_rows()["rows"]
    return rows[4]


class _LazyExamples(dict):  # type: ignore[type-arg]
    """Builds the examples only when FastAPI renders the schema (no work at import)."""

    def __init__(self) -> None:
        super().__init__()
        self._built = False

    def _build(self) -> None:
        if not self._built:
            self._built = True
            super().update(
                {
                    "one_row": {"summary": "One row (an object)", "value": _one_row()},
                    "all_strings": {"summary": "One row, every value a string", "value": _all_strings()},
                    "batch": {
                        "summary": "A batch (an array of objects)",
                        "value": example_rows()["rows"][:3],
                    },
                }
            )

    def items(self):  # type: ignore[no-untyped-def]
        self._build()
        return super().items()

    def keys(self):  # type: ignore[no-untyped-def]
        self._build()
        return super().keys()

    def values(self):  # type: ignore[no-untyped-def]
        self._build()
        return super().values()

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._build()
        return super().__iter__()

    def __len__(self) -> int:
        self._build()
        return super().__len__()

    def __getitem__(self, key: str) -> Any:
        self._build()
        return super().__getitem__(key)


PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Row"},
                        {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Row"},
                            "minItems": 1,
                            "maxItems": 10000,
                        },
                    ]
                },
                "examples": _LazyExamples(),
            }
        },
    }
}

RESULT_EXAMPLE = {
    "business_outcome": 0,
    "phat": 0.08938371087386138,
    "x12": 1.188111789056857,
    "x31_asia": 0,
    "x31_germany": 1,
    "x5_tuesday": 1,
    "x91": -0.7335797366446474,
    "...": "the other model inputs, keys in alphabetical order",
}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One result object per row (an object for an object, an array for an array)",
        "headers": {
            "X-Model-Version": {
                "description": "The model version that scored the request",
                "schema": {"type": "string"},
            },
            "X-Unseen-Categories": {
                "description": "Count of unseen category values scored as missing",
                "schema": {"type": "integer"},
            },
        },
        "content": {"application/json": {"example": RESULT_EXAMPLE}},
    },
    400: {"description": "Malformed JSON or an empty body", "content": PROBLEM},
    413: {"description": "Body larger than the byte limit or more rows than MAX_ROWS", "content": PROBLEM},
    415: {"description": "Content-Type is not application/json", "content": PROBLEM},
    422: {
        "description": "Rows that cannot be scored: every bad row index, field and reason (list capped)",
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": {
                    "type": "https://propensity.invalid/problems/invalid-rows",
                    "title": "Rows cannot be scored",
                    "status": 422,
                    "detail": "1 of 2 row(s) cannot be scored; first: row 1, field x12: not a money amount",
                    "errors": [
                        {
                            "row": 1,
                            "field": "x12",
                            "reason": "not a money amount (e.g. '$6,882.34', '($5,032.58)') or a number",
                            "value": "12 dollars",
                        }
                    ],
                    "error_count": 1,
                    "bad_rows": [1],
                    "bad_row_count": 1,
                },
            }
        },
    },
    429: {"description": "Rate limited (by nginx, when enabled)", "content": PROBLEM},
    503: {"description": "The model is still loading", "content": PROBLEM},
}


def component_schemas() -> dict[str, Any]:
    schema = notebook_schema()
    props: dict[str, Any] = {}
    for column in schema.columns:
        kind = schema.kind(column)
        if kind == "category":
            props[column] = {"type": ["string", "null"], "examples": list(schema.categories[column][:2])}
        else:
            props[column] = {"type": ["number", "string", "null"], "description": kind}
    return {
        "Row": {"type": "object", "properties": props, "additionalProperties": True},
        "Problem": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "row": {"type": ["integer", "null"]},
                            "field": {"type": ["string", "null"]},
                            "reason": {"type": "string"},
                            "value": {"type": "string"},
                        },
                    },
                },
                "error_count": {"type": "integer"},
            },
            "required": ["type", "title", "status", "detail"],
        },
    }
