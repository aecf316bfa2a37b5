"""The approved notebook model as a registry artifact."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.model.notebook_import import approved_model, ensure_production
from service.model.registry import Registry
from service.model.schema import example_rows, notebook_reference


def test_reference_rows_reproduced_through_the_sklearn_pipeline(approved_registry: Registry) -> None:
    model = approved_registry.load("production").model
    ex = example_rows()
    phat = model.phat(pd.DataFrame(ex["rows"]))
    want = np.array([e["phat"] for e in ex["expected"]])
    assert np.max(np.abs(phat - want)) <= 1e-9
    assert (phat > model.cutoff).astype(int).tolist() == [
        e["business_outcome_at_0.712"] for e in ex["expected"]
    ]


@pytest.mark.parametrize("index", range(5))
def test_each_reference_row_alone(
    index: int, reference_rows: list[dict[str, Any]], reference_phat: list[float]
) -> None:
    phat = approved_model().phat(pd.DataFrame([reference_rows[index]]))
    assert abs(phat[0] - reference_phat[index]) <= 1e-9


def test_pipeline_holds_the_notebook_statistics() -> None:
    ref = notebook_reference()
    pipeline = approved_model().pipeline
    numeric = pipeline.named_steps["prepare"].named_transformers_["numeric"]
    assert numeric.named_steps["impute"].statistics_[11] == ref["imputer_mean_train_split"]["x12"]
    assert numeric.named_steps["scale"].scale_[-1] == ref["scaler_scale_train_split"]["x99"]
    assert list(pipeline.get_feature_names_out()) == ref["selected_features_in_selection_order"]


def test_artifact_metadata(approved_registry: Registry) -> None:
    meta = approved_registry.metadata("production")
    ref = notebook_reference()
    for key in (
        "version",
        "created_at",
        "files",
        "data_sha256",
        "library_versions",
        "input_schema",
        "selected_features",
        "coefficients",
        "standard_errors",
        "fit",
        "metrics",
        "cutoff",
        "golden_rows",
        "reference_distributions",
    ):
        assert key in meta, key
    assert meta["cutoff"]["value"] == 0.712
    assert meta["coefficients"] == ref["final_coefficients"]
    assert meta["standard_errors"]["x91"] == ref["final_standard_errors"]["x91"]
    assert meta["metrics"]["auc"]["test"] == pytest.approx(0.8021842765709619)
    assert meta["fit"]["nobs"] == 40000
    assert set(meta["files"]) == {"model.joblib", "scorer.json", "summary.txt"}
    assert meta["input_schema"]["categories"]["x81"][0] == "April"
    dist = meta["reference_distributions"]
    assert len(dist["numeric"]) == 96 and set(dist["categorical"]) == {"x5", "x31", "x81", "x82"}
    assert 0.0 < dist["numeric"]["x12"]["missing_rate"] < 0.05
    assert len(dist["numeric"]["x91"]["quantiles"]) == 11


def test_import_makes_production_only_on_an_empty_registry(tmp_path: Any) -> None:
    registry = Registry(tmp_path, "propensity")
    assert ensure_production(registry) == "v1"
    assert ensure_production(registry) == "v1"  # idempotent: no second import
    assert registry.versions() == ["v1"]
