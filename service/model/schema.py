"""The input schema of the exercise_26 data and the approved model's reference figures.

The reference figures (notebook_model.json, example_rows.json) are facts recovered from the approved
notebook; they ship as package data and are read lazily, never at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

MONEY = "money"
PERCENT = "percent"
PLAIN = "number"
CATEGORY = "category"


@dataclass(frozen=True)
class InputSchema:
    """Which raw columns exist, how each is written, and the known category levels."""

    columns: tuple[str, ...]
    target: str
    numeric: tuple[str, ...]
    formats: dict[str, str]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(self.categories)

    def kind(self, column: str) -> str:
        if column in self.categories:
            return CATEGORY
        return self.formats.get(column, PLAIN)

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "target": self.target,
            "kinds": {c: self.kind(c) for c in self.columns},
            "formats": {
                MONEY: "'$6,882.34', '$6,882.34 ', '$-5,032.58', '($5,032.58)', '$-4446.82' or a number",
                PERCENT: "'62.59%' (percent units) or a number",
            },
            "categories": {c: list(levels) for c, levels in self.categories.items()},
            "missing": [None, "", "nan", "NaN", "null", "None", "<absent key>"],
        }


def schema_columns(input_schema: dict[str, Any]) -> tuple[str, ...]:
    """The raw column names of an input schema as an artifact stores it (`InputSchema.as_dict()`)."""
    return tuple(str(c) for c in input_schema["columns"])


@cache
def notebook_reference() -> dict[str, Any]:
    """The approved notebook model's figures (imputer, scaler, coefficients, cutoff, ...)."""
    text = resources.files("service.model").joinpath("reference/notebook_model.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def example_rows() -> dict[str, Any]:
    """Real rows in the forms clients send them, with the approved model's phat for each."""
    text = resources.files("service.model").joinpath("reference/example_rows.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def notebook_schema() -> InputSchema:
    ref = notebook_reference()
    formats = {"x12": MONEY, "x63": PERCENT}
    return InputSchema(
        columns=tuple(ref["raw_columns"]),
        target=ref["target"],
        numeric=tuple(ref["numeric_columns_in_notebook_order"]),
        formats=formats,
        categories={c: tuple(v["levels"]) for c, v in ref["categorical_columns"].items()},
    )
