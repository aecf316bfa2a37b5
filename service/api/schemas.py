"""The API's answers as pydantic models: what the OpenAPI document says each route returns.

Documentation only. The routes write their answers as orjson bytes in a prebuilt Response and never pass
them through these models, so the hot path stays as it is; the models tell generated clients the types
and let schemathesis check live answers against them. Unit tests hold each route's live answer to its
model (tests/unit/api/test_openapi.py).

A new door (the Open Inference Protocol, /invocations) adds its models here and declares them on its
route with `openapi_docs.ok(Model)` and `openapi_docs.problems(...)`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from service.model.schema import notebook_reference


class FieldProblem(BaseModel):
    """One problem with one field of one row."""

    row: int | None = Field(description="Index of the row in the request (0-based); null: the whole body")
    field: str | None = Field(description="The column; null when the problem is not with one field")
    reason: str = Field(description="What is wrong, and what would be right")
    value: str | None = Field(None, description="The offending value as sent (truncated); absent if none")


class RowFieldProblem(BaseModel):
    """One problem with one field of a row that is answered in place (the row is the item's `row`)."""

    field: str | None = Field(description="The column; null when the problem is not with one field")
    reason: str = Field(description="What is wrong, and what would be right")
    value: str | None = Field(description="The offending value as sent (truncated); null if none")


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every 4xx and 5xx answer (application/problem+json)."""

    # Errors add members of their own (max_rows, reason, bad_rows, ...): documented ones below, others
    # allowed.
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable URI per kind of problem, e.g. .../problems/invalid-rows")
    title: str = Field(description="A short summary of the kind of problem")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What happened to this request, in words")
    instance: str | None = Field(None, description="The request path")
    errors: list[FieldProblem] | None = Field(None, description="Every bad row and field (list capped)")
    error_count: int | None = Field(None, description="How many problems in all (the list may be capped)")
    bad_rows: list[int] | None = Field(None, description="Indexes of the rows that cannot be scored (capped)")
    bad_row_count: int | None = Field(None, description="How many rows cannot be scored")
    # what a protocol's own clients read, on its door's errors that no door handler answered (404, 405, 500)
    error: str | None = Field(
        None, description="On /v2 paths: the detail, where Open Inference clients read it"
    )
    error_code: str | None = Field(
        None, description="On /invocations: MLflow's error code (BAD_REQUEST, ...)"
    )
    message: str | None = Field(None, description="On /invocations: the detail, where MLflow clients read it")


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Indicator = Annotated[int, Field(ge=0, le=1)]


def _approved_inputs(schema: dict[str, Any]) -> None:
    """Adds the approved model's 25 inputs to PredictResult's schema, read when the schema is built (the
    reference figures are package data, read lazily, never at import)."""
    ref = notebook_reference()
    numeric = set(ref["numeric_columns_in_notebook_order"])
    props = schema.setdefault("properties", {})
    for feature in sorted(ref["selected_features_in_selection_order"]):
        if feature in numeric:
            props[feature] = {
                "type": "number",
                "description": f"{feature} imputed and standardised, as the GLM saw it",
            }
        else:
            column, level = feature.split("_", 1)
            props[feature] = {
                "type": "integer",
                "minimum": 0,
                "maximum": 1,
                "description": f"1 when {column} is {level!r}, else 0",
            }


PassThroughId = Annotated[
    str | int | float | None,
    Field(description="A pass-through id (PROPENSITY_PASSTHROUGH_FIELDS), echoed unchanged; never scored"),
]


class Reason(BaseModel):
    """One reason code: a model input and its signed contribution to the row's logit."""

    contribution: float = Field(description="coefficient x the model input; > 0 pushes towards a purchase")
    input: str = Field(description="The model input (a feature of selected_features, see /model)")


class PredictResult(BaseModel):
    """One scored row: `business_outcome`, `phat` and the model inputs as the GLM saw them, keys in
    alphabetical order; the row's pass-through ids when it sent any (`customer_id` by default); its
    `reasons` when asked. The properties listed are the approved model's 25 inputs; a retrained version
    answers with its own `selected_features` (see /model), so none of them is required."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_approved_inputs)
    # other versions' inputs (numbers), and pass-through ids under other configured names
    __pydantic_extra__: dict[str, float | str | None] = Field(init=False)

    business_outcome: Indicator = Field(description="1 when phat exceeds the model's cutoff, else 0")
    customer_id: PassThroughId = Field(None, description="The row's customer_id, as sent; absent if none")
    phat: Probability = Field(description="The model's probability of a purchase (y = 1)")
    reasons: list[Reason] | None = Field(
        None,
        description="With ?reasons=k (or X-Reason-Codes: k): the row's top-k contributions to the logit, "
        "largest magnitude first. All of them (reasons=all) plus the model's intercept (/model; 0 for the "
        "approved model) add up to the logit",
    )


class RowProblem(BaseModel):
    """Under PROPENSITY_BATCH_ERROR_POLICY=score-valid, a row of a batch that cannot be scored."""

    errors: list[RowFieldProblem] = Field(description="Every problem with the row")
    row: int = Field(description="Index of the row in the request (0-based)")


class PredictBatch(RootModel[list[PredictResult | RowProblem]]):
    """One item per row, in the request's order."""


class PredictAnswer(RootModel[PredictResult | PredictBatch]):
    """An object for an object, an array for an array."""


class Live(BaseModel):
    status: Literal["live"]


class Ready(BaseModel):
    """The worker serves a model that passed its checks."""

    status: Literal["ready"]
    model: str = Field(description="The model's name in the registry")
    version: str = Field(description="The version this worker serves, e.g. v1")
    behind_alias: bool = Field(
        False,
        description="True while the alias names a version this worker could not load (it keeps "
        "serving `version`; alerts fire)",
    )
    alias_version: str | None = Field(None, description="The version the alias names, when behind it")


class Cutoff(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: Probability = Field(description="business_outcome is 1 when phat exceeds it")
    rule: str | None = Field(None, description="How the cutoff was chosen")


class InputSchemaInfo(BaseModel):
    """The raw columns the served version was trained on and how each is written."""

    model_config = ConfigDict(extra="allow")

    columns: list[str]
    target: str
    kinds: dict[str, str] = Field(description="column -> number, money, percent or category")
    formats: dict[str, str] = Field(description="How money and percent values are written")
    categories: dict[str, list[str]] = Field(description="column -> its known levels")
    missing: list[str | None] = Field(description="The spellings of a missing value")


class ModelInfo(BaseModel):
    """The served model version's card."""

    name: str
    version: str
    sha256: str = Field(description="sha256 of the served model file")
    created_at: str = Field(description="When the version was registered (ISO 8601)")
    selected_features: list[str] = Field(description="The model inputs, in the order they were selected")
    coefficients: dict[str, float] = Field(description="model input -> GLM coefficient")
    intercept: float = Field(
        0.0,
        description="The logit's constant: 0 for the approved model (fitted without one); for a "
        "recalibrated champion a + b * its champion's",
    )
    recalibrated_from: str | None = Field(
        None, description="For a recalibrated champion: the version whose coefficients it rescaled"
    )
    standard_errors: dict[str, float]
    cutoff: Cutoff
    metrics: dict[str, dict[str, float]] = Field(description="e.g. auc -> {train, val, test}")
    fit: dict[str, float | bool] = Field(description="The final fit: llf, llnull, pseudo_r2, nobs, ...")
    input_schema: InputSchemaInfo
    training: dict[str, Any] = Field(description="How the version was trained (recipe, splits, ...)")
    data_sha256: str = Field(description="sha256 of the training data")
    library_versions: dict[str, str]
