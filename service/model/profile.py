"""Reference distributions of the data a model was trained on, kept in its metadata for drift monitoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from service.model.schema import InputSchema

QUANTILES = [i / 10 for i in range(11)]  # decile edges: 10 equal-mass bins for PSI


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return {"missing_rate": 1.0, "quantiles": [], "mean": None, "std": None}
    return {
        "missing_rate": float(1 - present.size / values.size),
        "quantiles": [float(q) for q in np.quantile(present, QUANTILES)],
        "mean": float(present.mean()),
        "std": float(present.std()),
    }


def reference_distributions(parsed: pd.DataFrame, schema: InputSchema, phat: np.ndarray) -> dict[str, Any]:
    """parsed: the RawInputParser output (floats for numeric columns, strings or NaN for categories)."""
    numeric = {c: _numeric_profile(parsed[c].to_numpy(dtype=np.float64)) for c in schema.numeric}
    categorical: dict[str, Any] = {}
    for column in schema.categorical:
        series = parsed[column]
        n = len(series)
        counts = series.value_counts(dropna=True)
        categorical[column] = {
            "missing_rate": float(series.isna().mean()),
            "frequencies": {str(k): float(v / n) for k, v in sorted(counts.items())},
        }
    return {
        "rows": len(parsed),
        "quantile_levels": QUANTILES,
        "numeric": numeric,
        "categorical": categorical,
        "phat": _numeric_profile(np.asarray(phat, dtype=np.float64)),
    }
