"""The serving artifact (scorer.json, read back as data) against the sklearn Pipeline, bit for bit.

The reference is the Pipeline's own features (sklearn's imputer, scaler and dummies) summed with the
coefficients in their order, as the compiled scorer sums them; a BLAS matrix product orders the sum its
own way and can differ in the last bit, so it is held to 1e-12 in test_scorer_parity.py instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from service.model.artifact import FittedModel
from service.model.notebook_import import approved_model
from service.model.schema import example_rows
from service.model.scorer_spec import ScorerSpec, spec_of
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel

COLUMNS = [f"x{i}" for i in range(100)]


@pytest.fixture(scope="module")
def model() -> FittedModel:
    return approved_model()


@pytest.fixture(scope="module")
def from_data(model: FittedModel) -> CompiledModel:
    """Compiled from the bytes of scorer.json, as a serving worker compiles it."""
    return CompiledModel(ScorerSpec.from_json(spec_of(model).to_json()), version="v1", sha256="0" * 64)


def pipeline_phat(model: FittedModel, rows: list[dict[str, Any]]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = model.features(pd.DataFrame(rows, columns=COLUMNS)).to_numpy(dtype=np.float64)
    eta = np.full(len(rows), model.intercept)
    for j, coef in enumerate(model.coefficients):
        eta += coef * features[:, j]
    phat: np.ndarray = 1.0 / (1.0 + np.exp(-eta))
    return phat


def assert_same_bits(model: FittedModel, compiled: CompiledModel, rows: list[dict[str, Any]]) -> np.ndarray:
    scored = compiled.score(rows)
    assert not scored.errors
    got, want = np.asarray(scored.phat, dtype=np.float64), pipeline_phat(model, rows)
    assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist()
    assert scored.outcome == (want > model.cutoff).astype(int).tolist()
    return got


def test_the_reference_rows_give_the_pipelines_bits_and_the_approved_phat(
    model: FittedModel, from_data: CompiledModel
) -> None:
    ex = example_rows()
    got = assert_same_bits(model, from_data, ex["rows"])
    assert np.max(np.abs(got - [e["phat"] for e in ex["expected"]])) <= 1e-9


@pytest.mark.slow
def test_100k_synthetic_rows_give_the_pipelines_bits(model: FittedModel, from_data: CompiledModel) -> None:
    frame = make_synthetic_frame(100_000, 2024, target=False)
    rows: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    got = assert_same_bits(model, from_data, rows)
    assert len(got) == 100_000 and 0 < got.mean() < 1


def test_the_data_artifact_compiles_to_the_pipelines_compiled_model(
    model: FittedModel, from_data: CompiledModel
) -> None:
    direct = CompiledModel(model, version="v1", sha256="0" * 64)
    for name in ("features", "coefficients", "intercept", "cutoff", "numeric", "categories", "known_columns"):
        assert getattr(from_data, name) == getattr(direct, name), name
