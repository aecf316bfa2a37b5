"""Rebuild the business-approved notebook model as a registry artifact from its published figures."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from service.model.artifact import FittedModel, check_golden_rows
from service.model.features import build_pipeline
from service.model.profile import reference_distributions
from service.model.registries import ModelRegistry
from service.model.schema import InputSchema, example_rows, notebook_reference, notebook_schema
from service.model.synthetic import make_synthetic_frame

PROFILE_ROWS = 40_000
PROFILE_SEED = 26


def _scaffold_frame(schema: InputSchema) -> pd.DataFrame:
    """A tiny raw frame that contains every category level, to give every step its fitted structure."""
    n = max(len(levels) for levels in schema.categories.values())
    data: dict[str, Any] = {}
    for column in schema.columns:
        if column in schema.categories:
            levels = schema.categories[column]
            data[column] = [levels[i % len(levels)] for i in range(n)]
        else:
            data[column] = np.linspace(-1.0, 1.0, n)
    return pd.DataFrame(data)


def approved_pipeline() -> Pipeline:
    """The notebook's fitted Pipeline with the exact train-split imputer and scaler statistics."""
    ref = notebook_reference()
    schema = notebook_schema()
    pipeline = build_pipeline(schema, features=ref["selected_features_in_selection_order"])
    pipeline.fit(_scaffold_frame(schema))
    numeric = pipeline.named_steps["prepare"].named_transformers_["numeric"]
    columns = list(schema.numeric)
    imputer, scaler = numeric.named_steps["impute"], numeric.named_steps["scale"]
    imputer.statistics_ = np.array([ref["imputer_mean_train_split"][c] for c in columns], dtype=np.float64)
    scaler.mean_ = np.array([ref["scaler_mean_train_split"][c] for c in columns], dtype=np.float64)
    scaler.scale_ = np.array([ref["scaler_scale_train_split"][c] for c in columns], dtype=np.float64)
    scaler.var_ = np.array([ref["scaler_var_train_split"][c] for c in columns], dtype=np.float64)
    scaler.n_samples_seen_ = 32_000
    return pipeline


def approved_model() -> FittedModel:
    ref = notebook_reference()
    pipeline = approved_pipeline()
    names = [str(f) for f in pipeline.get_feature_names_out()]
    coefficients = np.array([ref["final_coefficients"][f] for f in names], dtype=np.float64)
    return FittedModel(pipeline=pipeline, coefficients=coefficients, cutoff=float(ref["cutoff"]["value"]))


def golden_rows() -> dict[str, Any]:
    ex = example_rows()
    return {
        "source": "service/model/reference/example_rows.json (real rows; phat from the notebook model)",
        "inputs": ex["rows"],
        "expected": [
            {"phat": e["phat"], "business_outcome": e["business_outcome_at_0.712"]} for e in ex["expected"]
        ],
    }


def approved_metadata(model: FittedModel) -> dict[str, Any]:
    ref = notebook_reference()
    schema = notebook_schema()
    names = model.feature_names
    synthetic = make_synthetic_frame(PROFILE_ROWS, PROFILE_SEED, target=False)
    parsed = model.pipeline.named_steps["parse"].transform(synthetic)
    profile = reference_distributions(parsed, schema, model.phat(synthetic))
    profile["source"] = (
        f"synthetic data ({PROFILE_ROWS} rows, seed {PROFILE_SEED}) calibrated to the notebook"
    )
    raw = resources.files("service.model").joinpath("reference/notebook_model.json").read_bytes()
    return {
        "description": "The business-approved notebook model (GLM_Model_26), rebuilt from its figures",
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "training": {
            "source": "notebook",
            "recipe": "notebook",
            "splits": ref["splits"],
            "feature_selection": ref["feature_selection"],
            "final_model": ref["final_model"],
            "class_balance": ref["class_balance_train"],
        },
        "input_schema": schema.as_dict(),
        "selected_features": names,
        "coefficients": {f: float(c) for f, c in zip(names, model.coefficients, strict=True)},
        "standard_errors": {f: ref["final_standard_errors"][f] for f in names},
        "fit": {
            "llf": ref["final_fit"]["llf"],
            "llnull": ref["final_fit"]["llnull"],
            "pseudo_r2": ref["final_fit"]["pseudo_r2"],
            "nobs": ref["final_fit"]["nobs"],
        },
        "metrics": {
            "auc": {
                "train": ref["auc_notebook"]["train_32000"],
                "val": ref["auc_notebook"]["val_4000"],
                "test": ref["auc_notebook"]["test_4000"],
            }
        },
        "cutoff": {"value": model.cutoff, "rule": ref["cutoff"]["rule"]},
        "golden_rows": golden_rows(),
        "reference_distributions": profile,
    }


def approved_summary() -> str:
    ref = notebook_reference()
    fit = ref["final_fit"]
    lines = [
        "Logit Regression Results (approved notebook model, rebuilt from its published figures)",
        f"No. Observations: {fit['nobs']}   Log-Likelihood: {fit['llf']:.4f}   LL-Null: {fit['llnull']:.4f}",
        f"Pseudo R-squ.: {fit['pseudo_r2']:.6f}   (no intercept)",
        "",
        f"{'feature':<16}{'coef':>14}{'std err':>12}{'z':>10}",
    ]
    for f in ref["selected_features_in_selection_order"]:
        coef, se = ref["final_coefficients"][f], ref["final_standard_errors"][f]
        lines.append(f"{f:<16}{coef:>14.6f}{se:>12.6f}{coef / se:>10.3f}")
    return "\n".join(lines) + "\n"


def import_notebook(registry: ModelRegistry, *, promote_if_empty: bool = True) -> str:
    """Publish the approved model as a new version; make it `production` when no production exists."""
    model = approved_model()
    check_golden_rows(model, golden_rows(), "approved notebook model")
    version = registry.publish(model, approved_metadata(model), approved_summary())
    if promote_if_empty and "production" not in registry.aliases():
        registry.set_alias("production", version)
    return version


def ensure_production(registry: ModelRegistry) -> str:
    """The `production` version, importing (and promoting) the approved model on a registry without one."""
    if "production" not in registry.aliases():
        import_notebook(registry, promote_if_empty=True)
    return registry.resolve("production")
