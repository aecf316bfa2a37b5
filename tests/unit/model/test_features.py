"""The sklearn transformers: estimator contract, notebook semantics, one fitted Pipeline."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from service.errors import DataValidationError
from service.model.features import (
    L1TopKSelector,
    NotebookDummies,
    RawInputParser,
    UnseenCategoryWarning,
    build_pipeline,
)
from service.model.schema import notebook_schema

# Checks that do not apply, with the reason. The parser and the encoder read frames by column NAME: a frame
# with fewer columns is valid input (absent columns are missing values, the API contract), and a 1-D input
# is a frame-less list of values they reject with their own message.
FRAME_BY_NAME = "frames are read by column name; absent columns are missing values by design"
EXPECTED_FAILED: dict[type, dict[str, str]] = {
    L1TopKSelector: {"check_fit2d_1feature": "k=2 features cannot be kept from 1 feature"},
    RawInputParser: {
        "check_n_features_in_after_fitting": FRAME_BY_NAME,
        "check_fit2d_predict1d": FRAME_BY_NAME,
        "check_transformer_preserve_dtypes": "always returns a frame: float columns beside string categories",
    },
    NotebookDummies: {
        "check_n_features_in_after_fitting": FRAME_BY_NAME,
        "check_fit2d_predict1d": FRAME_BY_NAME,
    },
}


def _expected_failed(estimator: object) -> dict[str, str]:
    return EXPECTED_FAILED.get(type(estimator), {})


# L1TopKSelector.fit names the columns of an array input x0..xN in `feature_names_in_` (so that its
# selection reads like the notebook's), and sklearn's validate_data then warns on every later array input.
# The checks feed arrays only; the pipeline always feeds frames, where the warning cannot arise.
@pytest.mark.filterwarnings("ignore:X does not have valid feature names, but L1TopKSelector:UserWarning")
@parametrize_with_checks(  # type: ignore[untyped-decorator]  # (sklearn ships no annotations for it)
    [L1TopKSelector(k=2), RawInputParser(), NotebookDummies()],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_estimator_checks(estimator: object, check: Callable[[object], None]) -> None:
    check(estimator)


def test_parser_formats_and_missing() -> None:
    frame = pd.DataFrame(
        {
            "x1": ["1.5", None, "nan", 2],
            "x12": ["$6,882.34 ", "($5,032.58)", "$-5,032.58", "$-4446.82"],
            "x63": ["62.59%", "", "3.11%", None],
            "x5": [" Tuesday", "monday", None, "nan"],
        }
    )
    parser = RawInputParser(formats={"x12": "money", "x63": "percent"}, categorical=["x5"]).fit(frame)
    out = parser.transform(frame)
    assert list(out.columns) == ["x1", "x12", "x63", "x5"]
    assert out["x12"].tolist() == [6882.34, -5032.58, -5032.58, -4446.82]
    np.testing.assert_array_equal(out["x1"].to_numpy(), [1.5, np.nan, np.nan, 2.0])
    np.testing.assert_array_equal(out["x63"].to_numpy(), [62.59, np.nan, 3.11, np.nan])
    assert out["x5"].tolist()[:2] == ["Tuesday", "monday"] and out["x5"].isna().tolist()[2:] == [True, True]


def test_parser_names_column_and_rows() -> None:
    frame = pd.DataFrame({"x1": ["1", "oops", "2", "bad"]})
    parser = RawInputParser().fit(frame)
    with pytest.raises(DataValidationError, match=r"column x1: 2 value\(s\).*1 \('oops'.*3 \('bad'"):
        parser.transform(frame)


def test_dummies_match_pandas_get_dummies() -> None:
    values = pd.Series(["tuesday", "friday", None, "monday", "friday", "sunday"], name="x5")
    enc = NotebookDummies().fit(values.to_frame())
    ours = pd.DataFrame(enc.transform(values.to_frame()), columns=enc.get_feature_names_out())
    theirs = pd.get_dummies(values, drop_first=True, prefix="x5", prefix_sep="_", dummy_na=True).astype(float)
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)


def test_dummies_unseen_level_is_missing_and_reported() -> None:
    enc = NotebookDummies().fit(pd.DataFrame({"x31": ["america", "asia", "germany"]}))
    with pytest.warns(UnseenCategoryWarning, match="x31: 1 unseen"):
        out = enc.transform(pd.DataFrame({"x31": ["Asia ", "mars"]}))
    assert list(enc.get_feature_names_out()) == ["x31_asia", "x31_germany", "x31_nan"]
    assert out.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_selector_keeps_largest_squared_l1_coefficients_in_order() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, 6)), columns=[f"f{i}" for i in range(6)])
    y = (X["f3"] * 2 - X["f1"] * 1 + 0.5 * X["f5"] + rng.logistic(size=2000) > 0).astype(int)
    sel = L1TopKSelector(k=3, random_state=0).fit(X, y)
    ref = LogisticRegression(l1_ratio=1.0, fit_intercept=False, solver="liblinear", random_state=0).fit(X, y)
    expected = pd.Series(ref.coef_.ravel() ** 2, index=X.columns).nlargest(3).index.tolist()
    assert sel.selected_features_ == expected == ["f3", "f1", "f5"]
    assert list(sel.set_output(transform="pandas").transform(X).columns) == expected


def test_selector_fixed_features() -> None:
    X = pd.DataFrame(np.eye(3), columns=["a", "b", "c"])
    sel = L1TopKSelector(features=["c", "a"]).fit(X)
    assert sel.transform(X).tolist() == [[0, 1], [0, 0], [1, 0]]
    with pytest.raises(ValueError, match="not in the input"):
        L1TopKSelector(features=["zz"]).fit(X)


def test_one_pipeline_object_end_to_end() -> None:
    schema = notebook_schema()
    pipe = build_pipeline(schema)
    assert isinstance(pipe, Pipeline)
    assert [name for name, _ in pipe.steps] == ["parse", "prepare", "select"]


def test_set_output_default_returns_arrays() -> None:
    frame = pd.DataFrame({"x1": ["1", "2"], "x5": ["a", "b"]})
    parser = RawInputParser(categorical=["x5"]).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(parser.get_feature_names_out()) == ["x1", "x5"]
