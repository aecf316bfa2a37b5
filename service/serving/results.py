"""Each row's result as every per-row door answers it (/predict JSON and CSV, MLflow's /invocations).

The model inputs as the GLM saw them, `business_outcome` and `phat`; the pass-through ids the row sent;
its reason codes when they were asked for (as orjson fragments: these records are for orjson to encode).
Keys in alphabetical order (the API contract): the records are built column-wise in that order, never
sorted one by one.
"""

from __future__ import annotations

from typing import Any

from service.serving.batch import ABSENT
from service.serving.scorer import CompiledModel, Scored

REASONS_KEY = "reasons"


def result_records(model: CompiledModel, scored: Scored) -> list[dict[str, Any]]:
    if not scored.ids and scored.reasons is None:
        return model.records(scored)  # the contract's hot path
    data: dict[str, list[Any]] = {**scored.columns, "phat": scored.phat, "business_outcome": scored.outcome}
    data.update(scored.ids)
    if scored.reasons is not None:
        data[REASONS_KEY] = scored.reasons.json_fragments()
    keys = sorted(data)
    records = [dict(zip(keys, values, strict=True)) for values in zip(*(data[k] for k in keys), strict=True)]
    for name, values in scored.ids.items():
        for i, value in enumerate(values):
            if value is ABSENT:  # the row sent no such field: its result has none
                del records[i][name]
    return records
