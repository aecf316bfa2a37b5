"""The OpenAPI document's contents for the routes, and the offline Swagger UI and ReDoc pages.

Every route declares its 200 with `ok(Model)` (a pydantic model of service/api/schemas.py, documentation
only: the route still answers with its own bytes) and its errors with `problems(...)`: problem+json
bodies, the `Problem` component. Examples are real requests and the live answers to them (checked by
tests/unit/api/test_openapi.py). Nothing is built at import: the examples and the components are made
when FastAPI first renders the document.

The docs pages load Swagger UI and ReDoc from files the app serves itself (the `fastapi-offline`
package's copies of swagger-ui-dist and redoc), never from a CDN: they work on an air-gapped host, and a
Content-Security-Policy keeps the pages from fetching anything from another origin.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from service.api import openapi_examples, schemas
from service.api.problems import PROBLEM_TYPE
from service.model.schema import CATEGORY, MONEY, PERCENT, example_rows, notebook_reference, notebook_schema

REF = "#/components/schemas/{model}"
# Models the routes refer to by $ref in problem+json answers (FastAPI puts a response `model` under the
# route's own media type only): added to the components by `component_schemas`.
REFERENCED_MODELS: tuple[type[BaseModel], ...] = (schemas.Problem,)


class Lazy(Mapping[str, Any]):
    """A mapping built on first use: FastAPI reads it only when it renders the document."""

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build
        self._data: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._build()
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


# --- building blocks for any route ----------------------------------------------------------------------
MODEL_VERSION_HEADER = {
    "X-Model-Version": {
        "description": "The model version that answered",
        "required": True,
        "schema": {"type": "string"},
    }
}
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
}


def ok(
    model: Any,
    description: str,
    *,
    headers: dict[str, Any] | None = None,
    examples: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A 200 answered with `model` (application/json), for a route's `responses`."""
    out: dict[str, Any] = {"model": model, "description": description}
    if headers:
        out["headers"] = headers
    if examples is not None:
        out["content"] = {"application/json": {"examples": examples}}
    return out


def problem(
    description: str, *, example: Mapping[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An error answered with a problem+json body."""
    content: dict[str, Any] = {"schema": {"$ref": REF.format(model="Problem")}}
    if example is not None:
        content["example"] = example
    out: dict[str, Any] = {"description": description, "content": {PROBLEM_TYPE: content}}
    if headers:
        out["headers"] = headers
    return out


INTERNAL = problem("An unexpected error (the log has the request id)")


def declared(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`, in the order of their status codes (the order the docs pages show)."""
    return dict(sorted(responses.items(), key=lambda item: str(item[0])))


def problems(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """problem+json answers for a route's `responses`, one per status, with the 500 every route has."""
    out: dict[int | str, dict[str, Any]] = {status: problem(text) for status, text in descriptions.items()}
    return out | {500: INTERNAL}


NOT_READY = problem(
    "No model served yet: still loading (Retry-After), or the version to serve failed its checks",
    headers=RETRY_AFTER_HEADER,
)


# --- /predict -------------------------------------------------------------------------------------------
def approved_columns() -> list[str]:
    """The raw columns the approved model reads, in the input schema's order."""
    ref = notebook_reference()
    numeric = set(ref["numeric_columns_in_notebook_order"])
    used = {f if f in numeric else f.split("_", 1)[0] for f in ref["selected_features_in_selection_order"]}
    return [c for c in notebook_schema().columns if c in used]


def _row_schema() -> dict[str, Any]:
    """One row: the approved model's columns, typed as the service reads them; any other key allowed.

    The JSON types are exact (a boolean, an object or an array in a model column is a 422); what a string
    must spell, and the range of a number, are in the descriptions, since the 422 for them depends on the
    value (a number's range on the whole row: its contribution to the logit).
    """
    schema = notebook_schema()
    props: dict[str, Any] = {}
    for column in approved_columns():
        kind = schema.kind(column)
        if kind == CATEGORY:
            levels = list(schema.categories[column])
            props[column] = {
                "type": ["string", "null"],
                "description": f"one of {', '.join(levels)} (any case, spaces trimmed); another value is "
                "unseen: scored as missing and counted in X-Unseen-Categories (or a 422 under "
                "PROPENSITY_UNSEEN_CATEGORY_POLICY=reject)",
                "examples": levels[:2],
            }
        elif kind == MONEY:
            props[column] = {
                "type": ["number", "string", "null"],
                "description": "money: '$6,882.34', '$6,882.34 ', '$-5,032.58', '($5,032.58)', '$-4446.82' "
                "or a number",
                "examples": ["$6,882.34 ", "($5,032.58)", 6882.34],
            }
        else:
            hint = (
                "'62.59%' (percent units) or a number" if kind == PERCENT else "a number or a numeric string"
            )
            props[column] = {"type": ["number", "string", "null"], "description": hint, "examples": [0.98]}
    others = len(schema.columns) - len(props)
    props["customer_id"] = {
        "type": ["string", "integer", "number", "null"],
        "maxLength": 128,
        "description": "A pass-through id (PROPENSITY_PASSTHROUGH_FIELDS, customer_id by default): echoed "
        "unchanged in the row's result, never scored; a string, an integer or a finite number of at most "
        "PROPENSITY_PASSTHROUGH_MAX_CHARS (128) characters",
        "examples": ["C-000123"],
    }
    return {
        "type": "object",
        "description": (
            f"One row of the exercise_26 data. Listed: the {len(props)} raw columns the approved model "
            f"reads. The file's other {others} columns may be sent as they are; the approved model ignores "
            "them (the served version's own columns: /model, input_schema). A missing value is null, "
            '"", "nan", "NaN", "null", "None" or an absent key; numbers are finite, in ASCII.'
        ),
        "properties": props,
        "additionalProperties": True,
    }


def _bad_row() -> dict[str, Any]:
    rows: list[dict[str, Any]] = example_rows()["rows"]
    return {**rows[1], "x12": "12 dollars"}


def _request_examples() -> dict[str, Any]:
    rows: list[dict[str, Any]] = example_rows()["rows"]
    return {
        "one_row": {"summary": "One row (an object)", "value": rows[0]},
        "all_strings": {"summary": "One row, every value a string", "value": rows[4]},
        "batch": {"summary": "A batch (an array of objects)", "value": rows[:3]},
        "bad_row": {
            "summary": "A batch with a bad row: 422, or scored in place under score-valid",
            "value": [rows[0], _bad_row()],
        },
    }


def _answer_examples() -> dict[str, Any]:
    return {
        "one_row": {"summary": "The answer to the one_row example", "value": openapi_examples.ONE_ROW},
        "batch": {"summary": "The answer to the batch example", "value": openapi_examples.BATCH},
        "score_valid": {
            "summary": "The bad_row example under PROPENSITY_BATCH_ERROR_POLICY=score-valid",
            "value": openapi_examples.SCORE_VALID,
        },
    }


CSV_BODY = {
    "schema": {"type": "string"},
    "example": "x5,x12,x31,customer_id\n3.1,$1.5,asia,C-1\n",
    "description": "A header row of column names, then one row per line (RFC 4180 quoting; a UTF-8 BOM is "
    "skipped); the same value spellings as JSON strings; an empty cell is missing (docs/csv.md)",
}
# Added to the rendered document (`add_parameters`): given in openapi_extra, FastAPI would validate the
# operation again and choke on the lazily built examples.
PREDICT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "reasons",
        "in": "query",
        "required": False,
        "description": "Reason codes: each result also carries its top-k contributions to the logit "
        "(`reasons`), k a whole number or 'all'; off by default",
        "schema": {"type": "string", "pattern": "^([0-9]+|all)$", "examples": ["3", "all"]},
    },
    {
        "name": "X-Reason-Codes",
        "in": "header",
        "required": False,
        "description": "The same as ?reasons=k (the query parameter wins when both are given)",
        "schema": {"type": "string", "pattern": "^([0-9]+|all)$"},
    },
    {
        "name": "Content-Encoding",
        "in": "header",
        "required": False,
        "description": "gzip or deflate: the body is decoded first (its decoded size counts against "
        "PROPENSITY_MAX_BODY_BYTES: 413); another coding is a 415",
        "schema": {"type": "string", "enum": ["gzip", "deflate", "identity"]},
    },
]

PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": REF.format(model="Row")},
                        {
                            "title": "Rows",
                            "type": "array",
                            "items": {"$ref": REF.format(model="Row")},
                            "minItems": 1,
                            "maxItems": 10000,
                            "description": "1 to PROPENSITY_MAX_ROWS rows (10,000 by default)",
                        },
                    ]
                },
                "examples": Lazy(_request_examples),
            },
            "text/csv": CSV_BODY,
        },
    },
}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {
        200: ok(
            schemas.PredictAnswer,
            "One result object per row (an object for an object, an array for an array)",
            headers={
                **MODEL_VERSION_HEADER,
                "X-Unseen-Categories": {
                    "description": "Count of unseen category values scored as missing",
                    "schema": {"type": "string"},
                },
                "X-Rejected-Rows": {
                    "description": "Under score-valid: how many rows are answered with their errors",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                "X-Cache": {
                    "description": "hit: the answer came from the response cache",
                    "schema": {"type": "string"},
                },
            },
            examples=Lazy(_answer_examples),
        ),
        **problems(
            {
                400: "Malformed JSON or an empty body",
                408: "The body stopped arriving (PROPENSITY_BODY_READ_TIMEOUT_SECONDS); the connection ends",
                413: "Body larger than PROPENSITY_MAX_BODY_BYTES or more rows than PROPENSITY_MAX_ROWS",
                406: "Accept names neither application/json nor text/csv",
                415: "Content-Type is neither application/json nor text/csv, or a Content-Encoding other "
                "than gzip and deflate",
                429: "Rate limited (by nginx, when enabled)",
            }
        ),
        422: problem(
            "Rows that cannot be scored: every bad row index, field and reason (list capped)",
            example=openapi_examples.BAD_ROW_PROBLEM,
        ),
        503: problem(
            "No model served yet (loading, or the version failed its checks), or the worker is at capacity "
            "(load shedding): retry, another replica may answer",
            headers=RETRY_AFTER_HEADER,
        ),
    }
)


def add_parameters(document: dict[str, Any]) -> None:
    """The options /predict reads beside its body (it reads them from the request itself, so FastAPI does
    not know them)."""
    operation = document.get("paths", {}).get("/predict", {}).get("post")
    if operation is not None:
        operation.setdefault("parameters", []).extend(PREDICT_PARAMETERS)


PREDICT_RESPONSES[200].setdefault("content", {})["text/csv"] = {
    "schema": {"type": "string"},
    "description": "With Accept: text/csv: a header row (the result keys, alphabetical), then one line "
    "per row in the request's order (docs/csv.md)",
}

# --- health and /model ----------------------------------------------------------------------------------
LIVE_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {
        200: ok(schemas.Live, "The process answers"),
        **problems({}),
    }
)
READY_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {
        200: ok(schemas.Ready, "Ready to score", headers=MODEL_VERSION_HEADER),
        **problems({}),
        503: NOT_READY,
    }
)
MODEL_RESPONSES: dict[int | str, dict[str, Any]] = declared(
    {
        200: ok(schemas.ModelInfo, "The served version's card", headers=MODEL_VERSION_HEADER),
        **problems({}),
        503: NOT_READY,
    }
)


VALIDATION_REF = "#/components/schemas/HTTPValidationError"


def drop_unreachable_422s(document: dict[str, Any]) -> None:
    """Removes the 422 FastAPI declares for every route with a parameter: the parameters here are path
    strings that always validate, and the app's handler would answer a Problem, not FastAPI's body."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("responses", {}).get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == VALIDATION_REF:
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    if VALIDATION_REF not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def component_schemas() -> dict[str, Any]:
    """The components the routes refer to by name: Row (the request) and the REFERENCED_MODELS."""
    _, top = models_json_schema([(m, "serialization") for m in REFERENCED_MODELS], ref_template=REF)
    components: dict[str, Any] = dict(top.get("$defs", {}))
    components["Row"] = _row_schema()
    return components


# --- the docs pages -------------------------------------------------------------------------------------
DOCS_ASSETS = "/docs/assets"
# The pages' own inline script and styles, the assets above and the document: nothing from elsewhere.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def mount_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Swagger UI at `docs_url` and ReDoc at `redoc_url`, their assets served by the app."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    title = app.title

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or ""),
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=None,
            # no badge image from validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + (app.openapi_url or ""),
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page
