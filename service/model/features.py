"""Feature processing as scikit-learn transformers, assembled into ONE Pipeline.

raw frame -> RawInputParser (money/percent/missing parsing, category trimming)
          -> ColumnTransformer(mean imputation + standard scaling of the numeric columns,
                               NotebookDummies for the categorical columns)
          -> L1TopKSelector (keep the k features with the largest squared L1-logistic coefficient)

The Pipeline is the reference implementation; the compiled scorer in service.serving.scorer must match it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags, Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from service.errors import DataValidationError
from service.model.parsing import (
    MISSING_CODE,
    UNSEEN_CODE,
    category_code,
    category_lookup,
    is_missing,
    parse_numeric_column,
)
from service.model.schema import InputSchema

MAX_ROWS_NAMED = 5


class UnseenCategoryWarning(UserWarning):
    """A categorical value that was not seen in training; it is encoded as missing."""


def _as_frame(X: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    arr = np.asarray(X, dtype=object)
    if arr.ndim != 2:
        raise ValueError(f"Expected 2D input, got array with shape {arr.shape}")
    names = list(columns) if columns is not None else [f"x{i}" for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=names)


class RawInputParser(TransformerMixin, BaseEstimator):
    """Parse raw exercise_26 columns: numbers, money and percent strings, missing spellings, categories.

    Numeric columns come out as float64 (NaN = missing); categorical columns as trimmed strings or NaN.
    Columns absent from the input are treated as entirely missing. A value that cannot be parsed raises
    DataValidationError naming the column and the first offending rows.

    Parameters
    ----------
    formats : dict column -> "money" | "percent"; other numeric columns are plain numbers.
    categorical : the categorical columns (passed through, trimmed).
    """

    def __init__(self, formats: dict[str, str] | None = None, categorical: Sequence[str] | None = None):
        self.formats = formats
        self.categorical = categorical

    def fit(self, X: Any, y: Any = None) -> RawInputParser:
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        else:
            validate_data(self, X, dtype=None, ensure_all_finite=False, reset=True)
        frame = _as_frame(X, getattr(self, "feature_names_in_", None))
        self.n_features_in_ = frame.shape[1]
        categorical = set(self.categorical or ())
        self.categorical_columns_ = [c for c in frame.columns if c in categorical]
        self.numeric_columns_ = [c for c in frame.columns if c not in categorical]
        return self

    def transform(self, X: Any) -> pd.DataFrame:
        check_is_fitted(self, "numeric_columns_")
        names = getattr(self, "feature_names_in_", None)
        if isinstance(X, pd.DataFrame):
            frame = X
        else:
            arr = np.asarray(X, dtype=object)
            if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {arr.shape[-1]} features, but RawInputParser expects {self.n_features_in_}"
                )
            frame = _as_frame(arr, names)
        formats = self.formats or {}
        out: dict[str, Any] = {}
        for column in self.numeric_columns_:
            if column not in frame.columns:
                out[column] = np.full(len(frame), np.nan)
                continue
            values, problems = parse_numeric_column(frame[column].tolist(), formats.get(column, "number"))
            if problems:
                rows = ", ".join(
                    f"{frame.index[i]} ({v!r}: {r})" for i, r, v in problems.items[:MAX_ROWS_NAMED]
                )
                raise DataValidationError(
                    f"column {column}: {len(problems.items)} value(s) cannot be parsed; first rows: {rows}"
                )
            out[column] = values
        for column in self.categorical_columns_:
            raw = frame[column].tolist() if column in frame.columns else [None] * len(frame)
            out[column] = np.array([np.nan if is_missing(v) else str(v).strip() for v in raw], dtype=object)
        return pd.DataFrame(out, index=frame.index, columns=self.get_feature_names_out())

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN means missing
        tags.input_tags.string = True  # money/percent strings and categories are the point
        tags.input_tags.categorical = True
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "numeric_columns_")
        return np.asarray(self.numeric_columns_ + self.categorical_columns_, dtype=object)


class NotebookDummies(TransformerMixin, BaseEstimator):
    """pandas.get_dummies(col, drop_first=True, dummy_na=True) per column, as a fitted transformer.

    Levels are learned at fit and sorted the way pandas sorts them; the first is the baseline (all zeros).
    `<col>_nan` is 1 for a missing value. Matching at transform trims and case-folds. An unseen level
    never crashes: it is encoded like a missing value and reported with an UnseenCategoryWarning.
    """

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN means missing
        tags.input_tags.string = True  # money/percent strings and categories are the point
        tags.input_tags.categorical = True
        return tags

    def fit(self, X: Any, y: Any = None) -> NotebookDummies:
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        else:
            validate_data(self, X, dtype=None, ensure_all_finite=False, reset=True)
        frame = _as_frame(X, getattr(self, "feature_names_in_", None))
        self.n_features_in_ = frame.shape[1]
        self.levels_: dict[str, list[Any]] = {}
        for column in frame.columns:
            present = [v for v in frame[column].tolist() if not is_missing(v)]
            self.levels_[str(column)] = sorted({str(v).strip() for v in present})
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "levels_")
        names: list[str] = []
        for column, levels in self.levels_.items():
            names += [f"{column}_{level}" for level in levels[1:]] + [f"{column}_nan"]
        return np.asarray(names, dtype=object)

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "levels_")
        if isinstance(X, pd.DataFrame):
            frame = X
        else:
            arr = np.asarray(X, dtype=object)
            if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {arr.shape[-1]} features, but NotebookDummies expects {self.n_features_in_}"
                )
            frame = _as_frame(arr, list(self.levels_))
        blocks = []
        for column, levels in self.levels_.items():
            codes = self._codes(frame[column].tolist(), levels, column)
            block = np.zeros((len(codes), len(levels)), dtype=np.float64)
            rows = np.arange(len(codes))
            seen = codes > 0
            block[rows[seen], codes[seen] - 1] = 1.0
            block[:, -1] = (codes == MISSING_CODE) | (codes == UNSEEN_CODE)
            blocks.append(block)
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    @staticmethod
    def _codes(values: list[Any], levels: list[Any], column: str) -> np.ndarray:
        lookup = category_lookup([str(level) for level in levels])
        codes = np.empty(len(values), dtype=np.int64)
        unseen: list[str] = []
        for i, v in enumerate(values):
            if is_missing(v):
                codes[i] = MISSING_CODE
                continue
            code = category_code(str(v), lookup)
            if code is None:
                codes[i] = UNSEEN_CODE
                unseen.append(str(v))
            else:
                codes[i] = code
        if unseen:
            warnings.warn(
                UnseenCategoryWarning(
                    f"column {column}: {len(unseen)} unseen level(s) encoded as missing, e.g. {unseen[:3]}"
                ),
                stacklevel=3,
            )
        return codes


class L1TopKSelector(SelectorMixin, BaseEstimator):
    """Keep the k features with the largest squared coefficient of an L1 logistic regression.

    The notebook's recipe: LogisticRegression(penalty='l1', fit_intercept=False, solver='liblinear')
    then `nlargest(k)` of the squared coefficients. `features` fixes the selection instead (used to rebuild
    an approved model from its published figures). `selected_features_` keeps the selection order
    (largest first); transform returns the features in that order.

    With `Cs`, the L1 strength is chosen first by `cv`-fold stratified cross-validation (log loss) over
    those values (`C_` is the choice; with `C` fixed, `C_ == C`), and only features with a non-zero
    coefficient are kept: fewer than k when the chosen penalty zeroes more.
    """

    def __init__(
        self,
        k: int = 25,
        C: float = 1.0,
        features: Sequence[str] | None = None,
        max_iter: int = 100,
        random_state: int | None = None,
        Cs: Sequence[float] | None = None,
        cv: int = 5,
    ):
        self.k = k
        self.C = C
        self.features = features
        self.max_iter = max_iter
        self.random_state = random_state
        self.Cs = Cs
        self.cv = cv

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self.features is None
        tags.classifier_tags = ClassifierTags(multi_class=False)  # a binary target, like the GLM's
        return tags

    def fit(self, X: Any, y: Any = None) -> L1TopKSelector:
        names = np.asarray(X.columns, dtype=object) if isinstance(X, pd.DataFrame) else None
        arr = validate_data(self, X, dtype=np.float64, reset=True)
        if names is None:
            names = np.asarray([f"x{i}" for i in range(arr.shape[1])], dtype=object)
        self.feature_names_in_ = names
        if self.features is not None:
            missing = [f for f in self.features if f not in set(names)]
            if missing:
                raise ValueError(f"fixed features not in the input: {missing}")
            order = [int(np.flatnonzero(names == f)[0]) for f in self.features]
            self.l1_coef_ = None
            self.n_iter_ = 0
            self.C_ = self.C
        else:
            if y is None:
                raise ValueError("requires y to be passed, but the target y is None")
            if np.unique(np.asarray(y)).size < 2:
                raise ValueError("L1 selection needs both classes in y; got one class")
            if not 1 <= self.k <= arr.shape[1]:
                raise ValueError(f"k={self.k} must be between 1 and the number of features ({arr.shape[1]})")
            model = self._l1_model()
            model.fit(arr, y)
            self.C_ = float(model.C_) if self.Cs is not None else self.C
            squared = model.coef_.ravel() ** 2
            # nlargest keeps the first occurrence among ties: a stable sort on the negated value does too.
            order = [int(i) for i in np.argsort(-squared, kind="stable")[: self.k]]
            if self.Cs is not None:
                order = [i for i in order if squared[i] > 0] or order[:1]
            self.l1_coef_ = model.coef_.ravel().copy()
            self.n_iter_ = int(np.max(model.n_iter_))
        self.order_ = np.asarray(order, dtype=np.int64)
        self.selected_features_ = [str(names[i]) for i in order]
        return self

    def _l1_model(self) -> LogisticRegression | LogisticRegressionCV:
        common: dict[str, Any] = {
            "fit_intercept": False,
            "solver": "liblinear",
            "max_iter": self.max_iter,
            "random_state": self.random_state,
        }
        if self.Cs is None:
            return LogisticRegression(l1_ratio=1.0, C=self.C, **common)
        return LogisticRegressionCV(
            Cs=list(self.Cs),
            l1_ratios=(1.0,),
            cv=StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state or 0),
            scoring="neg_log_loss",
            use_legacy_attributes=False,
            **common,
        )

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "order_")
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.order_] = True
        return mask

    def transform(self, X: Any) -> Any:
        check_is_fitted(self, "order_")
        arr = validate_data(self, X, dtype=np.float64, reset=False)
        return arr[:, self.order_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "order_")
        return np.asarray(self.selected_features_, dtype=object)


def _source(name: str) -> str | None:
    """The categorical column an indicator feature comes from ("x81_July" -> "x81"); None for numeric."""
    column, sep, _ = name.partition("_")
    return column if sep else None


class PairwiseInteractions(TransformerMixin, BaseEstimator):
    """Append the products of pairs of the input features, named "a*b", after the inputs themselves.

    Pairs of indicators of the same categorical column ("x81_July*x81_May") are zero by construction and
    are skipped, as are products that are constant on the fitting rows (no information, and a singular
    design for the GLM). `pairs_` holds the kept (i, j) column pairs.
    """

    def __init__(self, separator: str = "*"):
        self.separator = separator

    def fit(self, X: Any, y: Any = None) -> PairwiseInteractions:
        arr = validate_data(self, X, dtype=np.float64, reset=True)
        names = [str(n) for n in getattr(self, "feature_names_in_", [f"x{i}" for i in range(arr.shape[1])])]
        pairs = []
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                source = _source(names[i])
                if source is not None and source == _source(names[j]):
                    continue
                if np.ptp(arr[:, i] * arr[:, j]) == 0:
                    continue
                pairs.append((i, j))
        self.input_names_ = names
        self.pairs_ = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "pairs_")
        arr = validate_data(self, X, dtype=np.float64, reset=False)
        products = arr[:, self.pairs_[:, 0]] * arr[:, self.pairs_[:, 1]]
        return np.hstack([arr, products])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "pairs_")
        names = self.input_names_
        products = [f"{names[i]}{self.separator}{names[j]}" for i, j in self.pairs_.tolist()]
        return np.asarray([*names, *products], dtype=object)


def build_pipeline(
    schema: InputSchema,
    *,
    k: int = 25,
    C: float = 1.0,
    impute_strategy: str = "mean",
    features: Sequence[str] | None = None,
    Cs: Sequence[float] | None = None,
    cv: int = 5,
    interactions: bool = False,
    random_state: int | None = None,
) -> Pipeline:
    """The notebook's preprocessing and selection as one (unfitted) Pipeline with pandas output.

    The options are the study's alternatives (service/model/training.py RECIPES): L1 strength chosen by
    cross-validation (`Cs`, `cv`), median imputation, pairwise interactions of the selected features.
    """
    numeric = Pipeline([("impute", SimpleImputer(strategy=impute_strategy)), ("scale", StandardScaler())])
    prepare = ColumnTransformer(
        [
            ("numeric", numeric, list(schema.numeric)),
            ("dummies", NotebookDummies(), list(schema.categorical)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    pipeline = Pipeline(
        [
            ("parse", RawInputParser(formats=dict(schema.formats), categorical=list(schema.categorical))),
            ("prepare", prepare),
            ("select", L1TopKSelector(k=k, C=C, features=features, Cs=Cs, cv=cv, random_state=random_state)),
        ]
    )
    if interactions:
        pipeline.steps.append(("interact", PairwiseInteractions()))
    return pipeline.set_output(transform="pandas")
