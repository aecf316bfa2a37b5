"""The naive baseline: how typical implementations of this exercise serve the model.

Per request: FastAPI validates the JSON body into pydantic models of 100 loosely typed fields, the rows
become a pandas DataFrame, the fitted sklearn Pipeline (the reference model) scores it, and the result
goes back through `DataFrame.to_dict` and FastAPI's default JSON encoding. It lives with the benchmark,
outside `service/`, and exists only to be measured against.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
from fastapi import APIRouter
from pydantic import BaseModel, create_model

from service.model.artifact import FittedModel
from service.model.registry import Registry
from service.settings import Settings

# Typical code spells out `x0: str | float | None = None` ... `x99: ...`; create_model writes the same class.
NaiveRow: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "NaiveRow", **{f"x{i}": (str | float | None, None) for i in range(100)}
)

router = APIRouter()
_lock = threading.Lock()
_model: FittedModel | None = None


def reference_model() -> FittedModel:
    """The production version's sklearn model, loaded once per worker on first use."""
    global _model
    with _lock:
        if _model is None:
            settings = Settings()
            registry = Registry(settings.artifacts_dir, settings.model_name)
            _model = registry.load(settings.model_alias).model
        return _model


@router.post("/bench/naive", response_model=None)
def naive_predict(rows: list[NaiveRow] | NaiveRow) -> list[dict[str, Any]] | dict[str, Any]:
    single = not isinstance(rows, list)
    items: list[BaseModel] = list(rows) if isinstance(rows, list) else [rows]
    frame = pd.DataFrame([item.model_dump() for item in items])
    scored = reference_model().predict(frame)
    records: list[dict[str, Any]] = scored.to_dict(orient="records")
    return records[0] if single else records
