"""A calibrated synthetic copy of the exercise_26 data, for tests, benchmarks and drift demos.

The real files belong to the model's owners; what the repository has are the approved model's figures
(notebook_model.json). The synthetic data is built from them so that the notebook recipe run on it gives
back the approved model:

- columns x0..x99 (+ y) exactly as ``pd.read_csv("exercise_26_train.csv")`` gives them;
- each of the 96 numeric columns has the reference train-split mean and, after mean imputation, the
  reference scaler scale. Columns whose mean ± √3·std lands on round bounds that reproduce the moments
  are uniform on those bounds (x10 in [14, 15], x12 in [-10,000, 10,000], ...); the others are normal;
- every numeric column has 1-3% missing values; x31 is the only categorical column with missing values;
- x12 is written as money and x63 as percent strings, in the two vintages of the CSV (2020: "$6,882.34",
  "$-5,032.58", full-precision floats; later: "$6,882.34 ", "($5,032.58)", ~10 significant digits), plus
  a few "$-4446.82" (no thousands separator);
- y ~ Bernoulli(phat) with phat the approved GLM's probability for the row, computed the approved way
  (imputer mean, scaler, dummies of the selected levels, the final coefficients, no intercept). The x31
  frequencies are tuned so that the expected class balance is the real 19,904 / 40,000 positive.

Everything is drawn from ``np.random.default_rng(seed)``: the same (rows, seed) gives the same frame, and
``target=False`` gives the same feature columns without y (like the test file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from service.model.schema import MONEY, PERCENT, notebook_reference, notebook_schema

UNIFORM = "uniform"
NORMAL = "normal"

# Shape classification (see classify_column).
BOUND_TOLERANCE = 0.03  # a rounded bound may move by at most 3% of the width
MEAN_TOLERANCE = 0.02  # the rounded bounds' midpoint within 0.02 reference std of the mean
STD_TOLERANCE = 0.025  # the rounded bounds' std (range/√12) within 2.5% of the reference std

# Missing values: every numeric column gets a share in [MISSING_MIN, MISSING_MAX].
MISSING_MIN = 0.011
MISSING_MAX = 0.029

# x31 frequencies (missing separately). America is the baseline (no dummy) and japan the small level, as
# the reference standard errors of the x31 coefficients indicate; with x5 and x81 uniform, the balance
# between asia (P(y=1) ≈ 0.40) and germany (≈ 0.51) sets E[y] = 19,904 / 40,000 = 49.76%.
# Per-level P(y=1): america 0.538, asia 0.399, germany 0.506, japan 0.697, missing 0.539 (1.2M rows).
# A fit on synthetic data gives x31 standard errors within ~8% of the reference ones
# (japan -2%, asia 0%, germany -8%).
X31_SHARES: dict[str, float] = {
    "america": 0.25,
    "asia": 0.273,
    "germany": 0.377,
    "japan": 0.06,
}
X31_MISSING_SHARE = 0.04

LATER_VINTAGE_SHARE = 0.5  # rows written the later way ("$6,882.34 ", "($5,032.58)", 10 digits)
NO_SEPARATOR_SHARE = 0.02  # x12 written "$-4446.82"
LATER_SIGNIFICANT_DIGITS = 10
TEXT_DECIMALS = 2  # x12 (cents) and x63 (percent, two decimals)


@dataclass(frozen=True)
class ColumnShape:
    """How one numeric column is drawn.

    mean/std are the reference train-split mean and scaler scale (the std after mean imputation).
    Uniform columns are drawn on [low, high]; their missing share is the one that makes the imputed std
    match the reference (clipped to the allowed range). Normal columns get a seeded missing share and are
    drawn with std / sqrt(1 - share), so that after imputation the std is the reference one.
    """

    column: str
    kind: str
    mean: float
    std: float
    low: float = math.nan
    high: float = math.nan

    @property
    def implied_missing_share(self) -> float | None:
        if self.kind != UNIFORM:
            return None
        raw_std = (self.high - self.low) / math.sqrt(12.0)
        implied = 1.0 - (self.std / raw_std) ** 2
        return min(max(implied, MISSING_MIN), MISSING_MAX)


def nice_bounds(mean: float, std: float) -> tuple[float, float, float, float]:
    """(a, b, low, high): a, b = mean ∓ √3·std and the same rounded to a nice unit of the width."""
    a = mean - math.sqrt(3.0) * std
    b = mean + math.sqrt(3.0) * std
    unit = 10.0 ** math.floor(math.log10(b - a)) / 2.0
    low = round(a / unit) * unit + 0.0
    high = round(b / unit) * unit + 0.0
    # Tidy the binary noise of the product (e.g. 0.30000000000000004 -> 0.3).
    decimals = max(0, -math.floor(math.log10(unit)) + 1)
    return a, b, round(low, decimals), round(high, decimals)


def classify_column(column: str, mean: float, std: float) -> ColumnShape:
    """Uniform on round bounds when the bounds round nicely AND reproduce the moments; otherwise normal.

    The bounds round nicely when both rounded bounds are within BOUND_TOLERANCE of the width of the
    computed ones. They reproduce the moments when their midpoint is within MEAN_TOLERANCE std of the mean
    and range/√12 within STD_TOLERANCE of the std (the reference std is taken after mean imputation, so a
    uniform column with 1-3% missing shows a std 0.5-1.5% below range/√12). A column whose bounds round
    nicely by coincidence but whose std does not fit is normal (x1: mean ± √3·std = ±5.17 rounds to ±5, but
    10/√12 is 3.3% below its std; x1 looks like N(0, 3)).
    """
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"{column}: mean and std must be finite and std > 0, got {mean!r}, {std!r}")
    a, b, low, high = nice_bounds(mean, std)
    width = b - a
    rounds_nicely = abs(low - a) <= BOUND_TOLERANCE * width and abs(high - b) <= BOUND_TOLERANCE * width
    if rounds_nicely and high > low:
        mid_error = abs((low + high) / 2.0 - mean) / std
        std_error = abs((high - low) / math.sqrt(12.0) / std - 1.0)
        if mid_error <= MEAN_TOLERANCE and std_error <= STD_TOLERANCE:
            return ColumnShape(column, UNIFORM, mean, std, low, high)
    return ColumnShape(column, NORMAL, mean, std)


@cache
def column_shapes() -> dict[str, ColumnShape]:
    """The shape of every numeric column, in notebook order."""
    ref = notebook_reference()
    means: dict[str, float] = ref["scaler_mean_train_split"]
    scales: dict[str, float] = ref["scaler_scale_train_split"]
    return {c: classify_column(c, means[c], scales[c]) for c in ref["numeric_columns_in_notebook_order"]}


@dataclass(frozen=True)
class _Glm:
    numeric: tuple[str, ...]
    numeric_coef: np.ndarray
    numeric_center: np.ndarray
    numeric_scale: np.ndarray
    numeric_fill: np.ndarray
    dummies: tuple[tuple[str, str, float], ...]  # (column, level, coefficient)


@cache
def _approved_glm() -> _Glm:
    ref = notebook_reference()
    categorical = set(ref["categorical_columns"])
    coefs: dict[str, float] = ref["final_coefficients"]
    numeric: list[str] = []
    dummies: list[tuple[str, str, float]] = []
    for feature in ref["selected_features_in_selection_order"]:
        column, _, level = feature.partition("_")
        if column in categorical:
            dummies.append((column, level, coefs[feature]))
        else:
            numeric.append(feature)
    return _Glm(
        numeric=tuple(numeric),
        numeric_coef=np.array([coefs[c] for c in numeric]),
        numeric_center=np.array([ref["scaler_mean_train_split"][c] for c in numeric]),
        numeric_scale=np.array([ref["scaler_scale_train_split"][c] for c in numeric]),
        numeric_fill=np.array([ref["imputer_mean_train_split"][c] for c in numeric]),
        dummies=tuple(dummies),
    )


def approved_logit(numeric: dict[str, np.ndarray], categories: dict[str, np.ndarray]) -> np.ndarray:
    """The approved GLM's linear predictor for parsed columns (numbers with NaN; category strings/NaN)."""
    glm = _approved_glm()
    values = np.column_stack([numeric[c] for c in glm.numeric])
    values = np.where(np.isnan(values), glm.numeric_fill, values)
    logit: np.ndarray = ((values - glm.numeric_center) / glm.numeric_scale) @ glm.numeric_coef
    for column, level, coef in glm.dummies:
        logit = logit + coef * (categories[column] == level)
    return logit


def round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """Round to `digits` significant digits: the double nearest to the decimal, as f"{v:.{digits}g}" gives.

    Vectorised: k / 10**d with k an integer below 10**digits and 10**d exact (0 <= d <= 22), so the
    division is correctly rounded; the rare values outside that range go through the string formatter.
    """
    out = np.array(values, dtype=np.float64, copy=True)
    todo = np.isfinite(out) & (out != 0.0)
    v = out[todo]
    shift = digits - 1 - np.floor(np.log10(np.abs(v))).astype(np.int64)
    exact = (shift >= 0) & (shift <= 22)
    scale = 10.0 ** shift[exact]
    rounded = v.copy()
    rounded[exact] = np.rint(v[exact] * scale) / scale
    rounded[~exact] = [float(f"{x:.{digits}g}") for x in v[~exact]]
    out[todo] = rounded
    return out


def _money_text(value: float, later: bool, no_separator: bool) -> str | float:
    if value != value:
        return math.nan
    if no_separator:
        return f"${value:.2f}"
    if not later:
        return f"${value:,.2f}"
    return f"${value:,.2f} " if value >= 0 else f"(${-value:,.2f})"


def _percent_text(value: float) -> str | float:
    return math.nan if value != value else f"{value:.2f}%"


def _check_rows(rows: Any) -> int:
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)):
        raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    return int(rows)


def _draw_numeric(
    rng: np.random.Generator, n: int, later: np.ndarray, formats: dict[str, str]
) -> dict[str, np.ndarray]:
    """The 96 numeric columns in raw units, NaN for missing (text formats rounded as they are written)."""
    numeric: dict[str, np.ndarray] = {}
    for column, shape in column_shapes().items():
        share = shape.implied_missing_share
        drawn_share = rng.uniform(MISSING_MIN, MISSING_MAX)  # drawn for every column: stable streams
        if share is None:
            share = drawn_share
        if shape.kind == UNIFORM:
            values = rng.uniform(shape.low, shape.high, n)
        else:
            values = rng.normal(shape.mean, shape.std / math.sqrt(1.0 - share), n)
        if formats.get(column) in (MONEY, PERCENT):
            values = np.round(values, TEXT_DECIMALS) + 0.0  # as written ("+ 0.0": no "-0.00")
        else:
            values[later] = round_significant(values[later], LATER_SIGNIFICANT_DIGITS)
        missing = rng.choice(n, size=round(share * n), replace=False)
        values[missing] = np.nan
        numeric[column] = values
    return numeric


def _draw_categories(
    rng: np.random.Generator, n: int, levels_by_column: dict[str, tuple[str, ...]]
) -> dict[str, np.ndarray]:
    categories: dict[str, np.ndarray] = {}
    for column, levels in levels_by_column.items():
        names = np.array([*levels, math.nan], dtype=object)
        if column == "x31":
            shares = [X31_SHARES[level] for level in levels]
            codes = rng.choice(len(levels) + 1, size=n, p=[*shares, X31_MISSING_SHARE])
        else:
            codes = rng.integers(0, len(levels), size=n)
        categories[column] = names[codes]
    return categories


def _as_written(
    column: str, fmt: str | None, values: np.ndarray, later: np.ndarray, no_separator: np.ndarray
) -> Any:
    """One numeric column as the CSV has it: money and percent as text, the rest as floats."""
    if fmt == MONEY:
        return [
            _money_text(v, w, s)
            for v, w, s in zip(values.tolist(), later.tolist(), no_separator.tolist(), strict=True)
        ]
    if fmt == PERCENT:
        return [_percent_text(v) for v in values.tolist()]
    return values


def make_synthetic_frame(rows: int, seed: int, *, target: bool = True) -> pd.DataFrame:
    """`rows` synthetic rows of exercise_26, as pd.read_csv of the train file (target=True) or test file.

    Numeric columns are float64 with NaN for missing (later-vintage rows already rounded to 10
    significant digits, so the frame equals the CSV written by write_synthetic_csv read back); x12, x63 and
    the categorical columns are strings with NaN for missing; y is int64 0/1.
    """
    n = _check_rows(rows)
    schema = notebook_schema()
    rng = np.random.default_rng(seed)
    later = rng.random(n) < LATER_VINTAGE_SHARE
    no_separator = rng.random(n) < NO_SEPARATOR_SHARE
    numeric = _draw_numeric(rng, n, later, schema.formats)
    categories = _draw_categories(rng, n, schema.categories)
    logit = approved_logit(numeric, categories)
    phat = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < phat).astype(np.int64)

    data: dict[str, Any] = {
        column: categories[column]
        if column in categories
        else _as_written(column, schema.formats.get(column), numeric[column], later, no_separator)
        for column in schema.columns
    }
    if target:
        data[schema.target] = y
    frame = pd.DataFrame(data)
    for column in schema.columns:
        if column in categories or column in schema.formats:
            frame[column] = frame[column].astype("str")
    return frame


def write_synthetic_csv(path: Path, rows: int, seed: int, *, target: bool = True) -> None:
    """Write make_synthetic_frame(rows, seed, target=target) as a CSV (no index; missing = empty cell).

    Floats are written at full (round-trip) precision; later-vintage rows carry values already rounded to
    10 significant digits, so they come out with at most 10 significant digits.
    """
    frame = make_synthetic_frame(rows, seed, target=target)
    frame.to_csv(Path(path), index=False)
