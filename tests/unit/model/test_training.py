"""Notebook-exact training: the split recipe, fidelity on synthetic data, and refusal of bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from service.errors import DataValidationError
from service.model.registry import Registry
from service.model.schema import notebook_reference, notebook_schema
from service.model.synthetic import make_synthetic_frame, write_synthetic_csv
from service.model.training import read_training_csv, split_like_notebook, train_csv


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.csv"
    write_synthetic_csv(path, 40_000, 26)
    return path


@pytest.fixture(scope="session")
def trained(synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str]:
    registry = Registry(tmp_path_factory.mktemp("trained"), "propensity")
    version, _ = train_csv(synthetic_csv, registry)
    return registry, version


def test_split_recipe_matches_the_notebook_calls() -> None:
    frame = make_synthetic_frame(40_000, 3)
    splits = split_like_notebook(frame, "y")
    assert splits.sizes == {"train": 32_000, "val": 4_000, "test": 4_000}
    X, y = frame.drop(columns=["y"]), frame["y"]
    rest, val, _, _ = train_test_split(X, y, test_size=0.1, random_state=13)
    train, test = train_test_split(rest, test_size=4000, random_state=13)
    assert splits.X_train.index.equals(train.index)
    assert splits.X_val.index.equals(val.index)
    assert splits.X_test.index.equals(test.index)


@pytest.mark.parametrize(("rows", "sizes"), [(1_000, (800, 100, 100)), (12_345, (9_875, 1_235, 1_235))])
def test_other_row_counts_split_proportionally(rows: int, sizes: tuple[int, int, int]) -> None:
    splits = split_like_notebook(make_synthetic_frame(rows, 1), "y")
    assert (splits.sizes["train"], splits.sizes["val"], splits.sizes["test"]) == sizes


@pytest.mark.slow
def test_training_on_synthetic_data_recovers_the_approved_model(trained: tuple[Registry, str]) -> None:
    registry, version = trained
    meta = registry.metadata(version)
    ref = notebook_reference()
    assert set(meta["selected_features"]) == set(ref["selected_features_in_selection_order"])
    worst = max(
        abs(meta["coefficients"][f] - ref["final_coefficients"][f]) / ref["final_standard_errors"][f]
        for f in ref["final_coefficients"]
    )
    assert worst < 3.0, f"max |coef - notebook| / SE = {worst:.2f}"
    assert abs(meta["metrics"]["auc"]["test"] - 0.802) <= 0.02
    balance = meta["training"]["class_balance"]["1"] / meta["training"]["rows"]
    assert abs(balance - 0.498) <= 0.02
    assert meta["training"]["splits"] == {"train": 32_000, "val": 4_000, "test": 4_000}
    assert 0.6 < meta["cutoff"]["value"] < 0.8
    assert meta["fit"]["nobs"] == 40_000 and meta["fit"]["converged"]


@pytest.mark.slow
def test_trained_artifact_verifies_and_reproduces_its_golden_rows(trained: tuple[Registry, str]) -> None:
    registry, version = trained
    loaded = registry.verify(version)
    assert loaded.metadata["data_sha256"] and len(loaded.metadata["golden_rows"]["inputs"]) == 8
    assert "production" not in registry.aliases()  # training never promotes by itself


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    return make_synthetic_frame(400, 5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["x44", "x81"]), r"missing column\(s\) x44, x81"),
        (
            lambda f: f.assign(x7=f["x7"].astype(object).where(f.index != 17, "twelve")),
            r"column x7: 1 value.*17",
        ),
        (
            lambda f: f.assign(x12=f["x12"].where(~f.index.isin([3, 9]), "12 dollars")),
            r"column x12: 2 value.*3.*9",
        ),
        (
            lambda f: f.assign(y=f["y"].where(f.index != 5, 2)),
            r"column y must be 0 or 1; 1 row.*first rows: 5",
        ),
        (
            lambda f: f.assign(y=f["y"].astype(object).where(f.index != 8, "yes")),
            r"column y must be 0 or 1.*8",
        ),
        (lambda f: f.head(50), r"50 rows; at least 200"),
        (lambda f: f.assign(x3=np.nan), r"column x3 has no values"),
        (lambda f: f.assign(y=1), r"single class"),
    ],
)
def test_bad_training_data_is_refused_naming_column_and_rows(
    small_frame: pd.DataFrame, tmp_path: Path, mutate: object, message: str
) -> None:
    path = _write(tmp_path / "bad.csv", mutate(small_frame))  # type: ignore[operator]
    registry = Registry(tmp_path / "reg", "propensity")
    with pytest.raises(DataValidationError, match=message):
        train_csv(path, registry)
    assert registry.versions() == []


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        read_training_csv(empty, notebook_schema())
    with pytest.raises(DataValidationError, match="no such file"):
        read_training_csv(tmp_path / "nope.csv", notebook_schema())
