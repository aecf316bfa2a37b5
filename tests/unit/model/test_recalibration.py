"""The recalibrated champion: the champion's logit refit as a + b * lp on new labels, as a real version."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from service.model.artifact import FittedModel, LoadedArtifact
from service.model.evaluation import calibration, log_loss
from service.model.recalibration import KEEP, RECOMPUTE, recalibrate
from service.model.registry import Registry
from service.model.schema import notebook_schema
from service.model.synthetic import make_synthetic_frame
from service.model.training import TrainingResult
from service.serving.scorer import CompiledModel

TRUE_A, TRUE_B = 0.4, 0.7  # the shifted truth: logit P(y=1) = 0.4 + 0.7 * the approved model's logit


def shifted_frame(champion: FittedModel, rows: int, seed: int) -> pd.DataFrame:
    """Synthetic rows whose labels come from a recalibrated truth, not from the approved model."""
    frame = make_synthetic_frame(rows, seed)
    lp = champion.linear_predictor(frame.drop(columns=["y"]))
    rng = np.random.default_rng(seed + 1)
    frame["y"] = (rng.random(rows) < 1 / (1 + np.exp(-(TRUE_A + TRUE_B * lp)))).astype(np.int64)
    return frame


@pytest.fixture(scope="module")
def champion(approved_registry: Registry) -> LoadedArtifact:
    return approved_registry.load("production")


@pytest.fixture(scope="module")
def frame(champion: LoadedArtifact) -> pd.DataFrame:
    return shifted_frame(champion.model, 8_000, 5)


@pytest.fixture(scope="module")
def result(champion: LoadedArtifact, frame: pd.DataFrame) -> TrainingResult:
    return recalibrate(champion, frame, notebook_schema())


def holdout(result: TrainingResult) -> tuple[pd.DataFrame, np.ndarray]:
    splits = result.extra["splits"]
    X = pd.concat([splits.X_val, splits.X_test])
    return X, pd.concat([splits.y_val, splits.y_test]).to_numpy()


def test_the_fit_finds_the_shifted_truth(result: TrainingResult) -> None:
    fit = result.metadata["recalibration"]
    assert abs(fit["a"] - TRUE_A) < 3 * fit["a_se"] and abs(fit["b"] - TRUE_B) < 3 * fit["b_se"]
    assert 0 < fit["a_se"] < 0.05 and 0 < fit["b_se"] < 0.05
    assert fit["fits"]["final"]["converged"] and fit["fits"]["train_split"]["converged"]


def test_it_beats_the_champion_on_the_holdout(champion: LoadedArtifact, result: TrainingResult) -> None:
    X, y = holdout(result)
    ours = result.extra["train_split_model"].phat(X)  # fit on the train split: has not seen X
    theirs = champion.model.phat(X)
    assert log_loss(y, ours) < log_loss(y, theirs) - 0.005
    mine, before = calibration(y, ours), calibration(y, theirs)
    assert abs(mine.slope - 1) < 3 * mine.slope_se and abs(mine.intercept) < 3 * mine.intercept_se
    assert abs(before.slope - TRUE_B) < 3 * before.slope_se  # the champion is miscalibrated on these rows


def test_coefficients_and_intercept_are_the_champions_mapped(
    champion: LoadedArtifact, result: TrainingResult
) -> None:
    a, b = result.metadata["recalibration"]["a"], result.metadata["recalibration"]["b"]
    np.testing.assert_array_equal(result.model.coefficients, b * champion.model.coefficients)
    assert result.model.intercept == a + b * champion.model.intercept
    assert result.model.pipeline is champion.model.pipeline  # parsing, imputation, scaling, dummies: same
    assert result.model.feature_names == champion.model.feature_names
    assert result.metadata["intercept"] == result.model.intercept
    assert set(result.metadata["standard_errors"]) == set(champion.model.feature_names)


def test_the_cutoff_is_kept_or_recomputed(champion: LoadedArtifact, frame: pd.DataFrame) -> None:
    kept = recalibrate(champion, frame, notebook_schema(), cutoff=KEEP)
    assert kept.model.cutoff == champion.model.cutoff and kept.metadata["cutoff"]["policy"] == KEEP
    assert "kept" in kept.metadata["cutoff"]["rule"]
    redone = recalibrate(champion, frame, notebook_schema(), cutoff=RECOMPUTE)
    phat = redone.model.phat(frame.drop(columns=["y"]))
    assert redone.model.cutoff == pytest.approx(float(np.quantile(phat, 0.75)), abs=1e-12)
    assert (
        redone.metadata["cutoff"]["policy"] == RECOMPUTE
        and "quantile 0.75" in redone.metadata["cutoff"]["rule"]
    )
    with pytest.raises(ValueError, match="cutoff policy"):
        recalibrate(champion, frame, notebook_schema(), cutoff="guess")


def test_it_is_a_version_serving_loads_and_scores_bit_for_bit(
    champion: LoadedArtifact, result: TrainingResult, tmp_path: Path
) -> None:
    registry = Registry(tmp_path, "propensity")
    version = registry.publish(result.model, result.metadata, result.summary)  # loads it back first
    loaded = registry.verify(version)  # sha256 of every file, then the golden rows through the pipeline
    assert loaded.metadata["recalibrated_from"] == champion.version
    assert loaded.model.intercept == result.model.intercept != 0.0
    assert loaded.metadata["golden_rows"]["inputs"] == champion.metadata["golden_rows"]["inputs"]
    assert loaded.metadata["golden_rows"]["expected"] != champion.metadata["golden_rows"]["expected"]
    compiled = CompiledModel.from_artifact(loaded)
    assert compiled.self_check(loaded.metadata["golden_rows"]) <= 1e-12
    rows: list[dict[str, Any]] = orjson.loads(
        make_synthetic_frame(5_000, 7, target=False).to_json(orient="records")
    )
    for batch in (rows, rows[:3]):  # the array path and the few-rows path
        scored = compiled.score(batch)
        assert not scored.errors
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = loaded.model.phat(pd.DataFrame(batch))
        assert float(np.max(np.abs(np.asarray(scored.phat) - want))) <= 1e-12
        assert scored.outcome == (want > loaded.model.cutoff).astype(int).tolist()


def test_a_model_pickled_before_the_intercept_existed_loads_with_zero(champion: LoadedArtifact) -> None:
    old = FittedModel(champion.model.pipeline, champion.model.coefficients, champion.model.cutoff)
    del old.__dict__["intercept"]  # what a pickle written before the field holds
    again = pickle.loads(pickle.dumps(old))
    assert again.intercept == 0.0
    rows = pd.DataFrame(champion.metadata["golden_rows"]["inputs"])
    np.testing.assert_array_equal(again.phat(rows), champion.model.phat(rows))
