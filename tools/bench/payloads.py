"""Request bodies: real single rows and realistic 10,000-row batches."""

from __future__ import annotations

import math
from typing import Any

import orjson

from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame

BATCH_SEED = 2026


def single_row_bodies() -> list[bytes]:
    """One JSON object per real example row (numbers as numbers, "$6,882.34 ", "62.59%", categories)."""
    return [orjson.dumps(row) for row in example_rows()["rows"]]


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def batch_rows(rows: int, seed: int = BATCH_SEED) -> list[dict[str, Any]]:
    """Synthetic rows as a client would send them: numbers as JSON numbers (missing as null), x12 money and
    x63 percent strings, categories as strings (missing ones spelled "nan", as a CSV read gives them)."""
    frame = make_synthetic_frame(rows, seed, target=False)
    return [{k: _json_value(v) for k, v in record.items()} for record in frame.to_dict(orient="records")]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def all_strings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows with every value a string (repr of the number; missing as "")."""
    return [{k: _as_text(v) for k, v in row.items()} for row in rows]


def batch_body(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(rows)
