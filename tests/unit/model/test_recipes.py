"""The study's training recipes: each trains, registers, evaluates; interactions compile with parity."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import SkipTestWarning
from sklearn.utils.estimator_checks import check_estimator

from service.errors import ArtifactError
from service.model.features import PairwiseInteractions
from service.model.registry import Registry
from service.model.synthetic import make_synthetic_frame
from service.model.training import C_GRID, RECIPES, Recipe, TrainingResult, recipe_named, train
from service.serving.scorer import CompiledModel

SMALL_INTERACTIONS = Recipe(name="interactions", k=6, interactions=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_synthetic_frame(4_000, 5)


@pytest.fixture(scope="module")
def results(frame: pd.DataFrame) -> dict[str, TrainingResult]:
    recipes = [RECIPES[n] for n in ("notebook", "cv-l1", "median", "all-rows")] + [SMALL_INTERACTIONS]
    return {r.name: train(frame, r) for r in recipes}


def test_recipes_by_name() -> None:
    assert recipe_named("notebook") == Recipe()
    assert set(RECIPES) == {"notebook", "cv-l1", "median", "interactions", "all-rows"}
    with pytest.raises(ValueError, match="no recipe 'magic'"):
        recipe_named("magic")
    with pytest.raises(ValueError, match="impute_strategy"):
        Recipe(impute_strategy="mode")
    with pytest.raises(ValueError, match="preprocess_on"):
        Recipe(preprocess_on="test")
    with pytest.raises(ValueError, match="cv_folds"):
        Recipe(cv_folds=1)


@pytest.mark.slow  # shares the module fixture that trains five recipes (~10 s)
def test_every_recipe_records_its_options(results: dict[str, TrainingResult]) -> None:
    for name, result in results.items():
        training = result.metadata["training"]
        assert training["recipe"] == name
        assert training["features_kept"] == len(result.model.feature_names)
        assert 0.65 < result.metadata["metrics"]["auc"]["test"] < 0.9, name  # k=6 for interactions
    assert results["notebook"].metadata["training"]["options"]["cv_folds"] == 0
    assert results["notebook"].metadata["training"]["chosen_C"] == 1.0


@pytest.mark.slow  # shares the module fixture that trains five recipes (~10 s)
def test_cv_chooses_C_from_the_grid_and_keeps_non_zero_features(results: dict[str, TrainingResult]) -> None:
    result = results["cv-l1"]
    selector = result.model.pipeline.named_steps["select"]
    assert selector.C_ in C_GRID and result.metadata["training"]["chosen_C"] == selector.C_
    kept = result.metadata["training"]["features_kept"]
    assert 1 <= kept <= 25
    assert np.all(selector.l1_coef_[selector.order_] != 0)


def _numeric(result: TrainingResult) -> tuple[np.ndarray, list[str]]:
    prepare = result.model.pipeline.named_steps["prepare"]
    imputer = prepare.named_transformers_["numeric"].named_steps["impute"]
    return imputer.statistics_, list(prepare.transformers_[0][2])


@pytest.mark.slow  # shares the module fixture that trains five recipes (~10 s)
def test_median_and_all_rows_preprocessing(frame: pd.DataFrame, results: dict[str, TrainingResult]) -> None:
    splits = results["notebook"].extra["splits"]
    parse = results["notebook"].model.pipeline.named_steps["parse"]
    train_rows = parse.transform(splits.X_train)
    all_rows = parse.transform(frame.drop(columns=["y"]))
    stats, columns = _numeric(results["median"])
    np.testing.assert_allclose(stats, train_rows[columns].median().to_numpy())
    stats, columns = _numeric(results["notebook"])
    np.testing.assert_allclose(stats, train_rows[columns].mean().to_numpy())
    stats, columns = _numeric(results["all-rows"])
    np.testing.assert_allclose(stats, all_rows[columns].mean().to_numpy())
    # the selection still only sees the train split: same rows as the notebook recipe
    assert results["all-rows"].extra["splits"].X_train.index.equals(splits.X_train.index)


@pytest.mark.slow  # shares the module fixture that trains five recipes (~10 s)
def test_interactions_add_products_and_skip_structural_zeros(results: dict[str, TrainingResult]) -> None:
    names = results["interactions"].model.feature_names
    base = [n for n in names if "*" not in n]
    products = [n for n in names if "*" in n]
    assert len(base) == 6 and products
    for name in products:
        a, b = name.split("*")
        assert a in base and b in base
        if "_" in a and "_" in b:
            assert a.split("_")[0] != b.split("_")[0]  # never two dummies of one column


@pytest.mark.slow  # shares the module fixture that trains five recipes (~10 s)
def test_every_recipe_compiles_with_parity_and_registers(
    results: dict[str, TrainingResult], frame: pd.DataFrame, tmp_path: Path
) -> None:
    registry = Registry(tmp_path, "propensity")
    rows = frame.drop(columns=["y"]).sample(500, random_state=1)
    for name, result in results.items():
        version = registry.publish(result.model, result.metadata, result.summary)
        compiled = CompiledModel.from_artifact(registry.load(version))
        compiled.self_check(result.metadata["golden_rows"])
        scored = compiled.score(rows.to_dict(orient="records"))
        want = result.model.phat(rows)
        assert np.max(np.abs(np.asarray(scored.phat) - want)) < 1e-12, name
        if name == "interactions":
            product = next(f for f in compiled.features if "*" in f)
            a, b = product.split("*")
            features = result.model.features(rows)
            np.testing.assert_allclose(scored.columns[product], features[a] * features[b], atol=1e-12)


@pytest.mark.slow  # shares the module fixture that trains five recipes (~10 s)
def test_a_product_of_unknown_inputs_does_not_compile(results: dict[str, TrainingResult]) -> None:
    model = results["interactions"].model
    interact = model.pipeline.named_steps["interact"]
    original = interact.input_names_
    try:
        interact.input_names_ = [*original[:-1], "x999"]  # a factor the model does not have
        with pytest.raises(ArtifactError, match="cannot compile model input"):
            CompiledModel(model, version="v-test", sha256="0" * 64)
    finally:
        interact.input_names_ = original


def test_pairwise_interactions_transformer_contract() -> None:
    X = pd.DataFrame(
        {"x1": [1.0, 2.0, 3.0, 4.0], "c_a": [1.0, 0, 0, 1], "c_b": [0, 1.0, 1, 0], "k": [2.0] * 4}
    )
    t = PairwiseInteractions().set_output(transform="pandas").fit(X)
    out = t.transform(X)
    # c_a*c_b: same column's dummies; products with the constant k are kept unless constant themselves
    assert list(out.columns) == ["x1", "c_a", "c_b", "k", "x1*c_a", "x1*c_b", "x1*k", "c_a*k", "c_b*k"]
    np.testing.assert_allclose(out["x1*k"], X["x1"] * 2)
    with warnings.catch_warnings():
        # the array-API check skips itself (SCIPY_ARRAY_API is not set) and says so with this warning
        warnings.simplefilter("ignore", SkipTestWarning)
        check_estimator(PairwiseInteractions())
