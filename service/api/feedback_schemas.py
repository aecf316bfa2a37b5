"""The typed answers of POST /feedback and GET /performance, for the OpenAPI document (the routes write
their bodies with orjson; tests/unit/api/test_feedback_routes.py checks live answers against these)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.api.openapi_docs import RETRY_AFTER_HEADER, problem, problems


class Conflict(BaseModel):
    item: int = Field(description="Index of the label in the call")
    label: int = Field(description="The label sent")
    stored: int = Field(description="The label already stored for that row (it stays)")


class FeedbackResult(BaseModel):
    received: int = Field(description="Labels in the call")
    matched: int = Field(description="Stored: their prediction is in the log")
    unmatched: int = Field(description="No logged prediction (yet): kept, and matched once it is logged")
    duplicate: int = Field(description="The same label again for a labelled row: not counted twice")
    conflicting: int = Field(description="Another label for a labelled row: the first stays")
    conflicts: list[Conflict] = Field(description="The conflicting labels (first 100)")
    unmatched_items: list[int] = Field(description="Indexes of the unmatched labels (first 100)")


class Performance(BaseModel):
    """Cohorts with realized (labelled rows) and estimated (CBPE, all rows) metrics, each an interval
    {value, lower, upper}; docs/monitoring.md describes every member."""

    model_config = ConfigDict(extra="allow")

    cutoff: float = Field(description="The business cutoff the cutoff-based metrics use")
    by: str = Field(description="day, hour, version or all")
    confidence: float
    min_labels: int = Field(description="Labels a cohort needs before its gap can alarm")
    since: float = Field(description="Epoch seconds (UTC)")
    until: float
    served_version: str
    cohorts: list[dict[str, Any]]


class ShadowPair(BaseModel):
    """One challenger beside the served model on the same labelled live rows; docs/monitoring.md
    describes every member."""

    model_config = ConfigDict(extra="allow")

    served_version: str
    shadow_version: str
    compared: int = Field(description="Rows shadow scoring compared and logged")
    refused: int = Field(description="Of those, rows the challenger could not score")
    labelled: int = Field(description="Rows both scored that have a label: what the metrics are over")
    enough_labels: bool = Field(description="labelled >= PROPENSITY_PERFORMANCE_MIN_LABELS")
    served: dict[str, Any] = Field(description="The served model's realized metrics on those rows")
    shadow: dict[str, Any] = Field(description="The challenger's, on the same rows")
    difference: dict[str, Any] = Field(description="Shadow minus served: AUC, paired log loss and Brier")
    flips: dict[str, int] = Field(description="Labelled rows whose outcomes differ, by who was right")
    better_on_log_loss: str | None = Field(
        description="shadow, served, or null (undecided, or too few labels)"
    )


class ShadowPerformance(BaseModel):
    since: float = Field(description="Epoch seconds (UTC)")
    until: float
    min_labels: int
    pairs: list[ShadowPair]


LABEL = {"anyOf": [{"type": "integer", "enum": [0, 1]}, {"type": "boolean"}]}
ITEM: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "row": {"type": "integer", "minimum": 0},
        "label": LABEL,
        "observed_at": {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0}]
        },
        "customer_id": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "number"}]},
    },
    "required": ["label"],
}


def feedback_openapi(max_labels: int) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "minItems": 1, "maxItems": max_labels, "items": ITEM},
                    "example": [
                        {"request_id": "3f2a9c", "row": 0, "label": 1, "observed_at": "2026-12-01T10:00:00Z"},
                        {"customer_id": "C-17", "label": 0},
                    ],
                }
            },
        }
    }


LOG_OFF = "The prediction log is off (PROPENSITY_PREDICTION_LOG_ENABLED=false)"
UNAVAILABLE = problem(
    "The prediction log's database did not answer (Retry-After)", headers=RETRY_AFTER_HEADER
)
FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": FeedbackResult, "description": "The labels' counts"},
    **problems(
        {
            400: "The body is not JSON, or not an array of label objects",
            404: LOG_OFF,
            408: "The body stopped arriving",
            413: "More than 10,000 labels, or a body over its size limit",
            415: "Content-Type is not application/json",
            422: "Labels that cannot be stored: each named by its index (row), field and reason",
        }
    ),
    503: UNAVAILABLE,
}
PERFORMANCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Performance, "description": "Cohorts and their metrics"},
    **problems({404: LOG_OFF, 422: "since, until or by is not what it can be"}),
    503: problem(
        "The prediction log's database did not answer, or no model is served yet (Retry-After)",
        headers=RETRY_AFTER_HEADER,
    ),
}

SHADOW_PERFORMANCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ShadowPerformance, "description": "Each challenger beside the served model"},
    **problems({404: LOG_OFF, 422: "since or until is not a duration"}),
    503: UNAVAILABLE,
}
