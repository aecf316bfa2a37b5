"""The calibrated synthetic copy of the exercise_26 data (service.model.synthetic)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.model.parsing import parse_numeric_column
from service.model.schema import MONEY, PERCENT, example_rows, notebook_reference, notebook_schema
from service.model.synthetic import (
    NORMAL,
    UNIFORM,
    X31_MISSING_SHARE,
    X31_SHARES,
    approved_logit,
    classify_column,
    column_shapes,
    make_synthetic_frame,
    round_significant,
    write_synthetic_csv,
)

ROWS = 40_000
SEED = 26
CATEGORICAL = ("x5", "x31", "x81", "x82")
REAL_BALANCE = 19_904 / 40_000

# x12 spellings. The no-separator form is only recognisable from 1,000 up ("$-446.82" is also 2020 style).
MONEY_2020 = re.compile(r"^\$-?\d{1,3}(,\d{3})*\.\d\d$")
MONEY_LATER_POSITIVE = re.compile(r"^\$\d{1,3}(,\d{3})*\.\d\d $")
MONEY_LATER_NEGATIVE = re.compile(r"^\(\$\d{1,3}(,\d{3})*\.\d\d\)$")
MONEY_NO_SEPARATOR = re.compile(r"^\$-?\d{4,}\.\d\d$")
PERCENT_TEXT = re.compile(r"^\d{1,3}\.\d\d%$")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_synthetic_frame(ROWS, SEED)


@pytest.fixture(scope="module")
def parsed(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The numeric columns as the notebook parses them (x12 money, x63 percent)."""
    schema = notebook_schema()
    out: dict[str, np.ndarray] = {}
    for column in schema.numeric:
        fmt = schema.formats.get(column)
        if fmt in (MONEY, PERCENT):
            values, problems = parse_numeric_column(frame[column].tolist(), fmt)
            assert not problems
            out[column] = values
        else:
            out[column] = frame[column].to_numpy()
    return out


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "synthetic.csv"
    write_synthetic_csv(path, 4_000, 7)
    return path


def _significant_digits(cell: str) -> int:
    mantissa = cell.lstrip("-").lower().split("e")[0].replace(".", "")
    return len(mantissa.strip("0")) or 1


# -- shape of the frame ---------------------------------------------------------------------------------


def test_columns_and_dtypes(frame: pd.DataFrame) -> None:
    schema = notebook_schema()
    assert list(frame.columns) == [f"x{i}" for i in range(100)] + ["y"]
    assert len(frame) == ROWS
    strings = {"x12", "x63", *CATEGORICAL}
    for column in schema.columns:
        if column in strings:
            assert pd.api.types.is_string_dtype(frame[column].dtype), column
            assert not pd.api.types.is_numeric_dtype(frame[column].dtype), column
        else:
            assert frame[column].dtype == np.float64, column
    assert frame["y"].dtype == np.int64
    assert set(frame["y"].unique()) == {0, 1}


def test_target_false_is_the_test_file_layout(frame: pd.DataFrame) -> None:
    features = make_synthetic_frame(ROWS, SEED, target=False)
    assert list(features.columns) == [f"x{i}" for i in range(100)]
    pd.testing.assert_frame_equal(features, frame.drop(columns=["y"]), check_exact=True)


def test_csv_reads_back_as_the_frame(csv_file: Path) -> None:
    read = pd.read_csv(csv_file)
    pd.testing.assert_frame_equal(read, make_synthetic_frame(4_000, 7), check_exact=True)
    assert csv_file.read_text().count("\n") == 4_001  # header + rows, no index column
    assert csv_file.read_text().splitlines()[0] == ",".join([f"x{i}" for i in range(100)] + ["y"])


def test_test_file_layout_csv(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    write_synthetic_csv(path, 50, 3, target=False)
    read = pd.read_csv(path)
    assert list(read.columns) == [f"x{i}" for i in range(100)]
    pd.testing.assert_frame_equal(read, make_synthetic_frame(50, 3, target=False), check_exact=True)


# -- the two CSV vintages -------------------------------------------------------------------------------


def test_money_vintages_in_csv_text(csv_file: Path) -> None:
    with csv_file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cells = [row["x12"] for row in rows if row["x12"] != ""]
    forms = {"2020": 0, "2020 negative": 0, "later positive": 0, "later negative": 0, "no separator": 0}
    for cell in cells:
        if MONEY_NO_SEPARATOR.match(cell):
            forms["no separator"] += 1
        elif MONEY_2020.match(cell):
            forms["2020"] += 1
            forms["2020 negative"] += cell.startswith("$-")
        elif MONEY_LATER_POSITIVE.match(cell):
            forms["later positive"] += 1
        elif MONEY_LATER_NEGATIVE.match(cell):
            forms["later negative"] += 1
        else:
            pytest.fail(f"unexpected money spelling {cell!r}")
    n = len(cells)
    later = forms["later positive"] + forms["later negative"]
    assert 0.42 < forms["2020"] / n < 0.58  # ~half 2020 vintage ...
    assert 0.42 < later / n < 0.58  # ... and ~half later vintage
    assert 0.18 < forms["2020 negative"] / n < 0.32  # both signs in both vintages
    assert 0.18 < forms["later negative"] / n < 0.32
    assert 0.18 < forms["later positive"] / n < 0.32
    assert 0.01 < forms["no separator"] / n < 0.03  # ~2% (x 0.9: only from 1,000 up)
    assert any(c.startswith("$-") for c in cells if MONEY_NO_SEPARATOR.match(c))


def test_numeric_precision_follows_the_row_vintage(csv_file: Path) -> None:
    with csv_file.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    plain = [c for c in notebook_schema().numeric if c not in ("x12", "x63")]
    digits = {"2020": [], "later": []}  # type: dict[str, list[int]]
    for row in rows:
        money = row["x12"]
        if money == "" or MONEY_NO_SEPARATOR.match(money):
            continue
        vintage = "2020" if MONEY_2020.match(money) else "later"
        digits[vintage].extend(_significant_digits(row[c]) for c in plain if row[c] != "")
    assert max(digits["later"]) <= 10
    assert np.mean(digits["later"]) > 9.5  # ~10 significant digits, not fewer
    assert np.mean(np.array(digits["2020"]) > 10) > 0.95  # full precision
    assert max(digits["2020"]) >= 16


def test_round_significant_matches_the_string_formatter() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0, 1, 2_000), rng.uniform(-1e4, 1e4, 2_000), rng.normal(0, 1e-9, 50), [0.0, 1e-20, 1e12]]
    )
    expected = np.array([float(f"{v:.10g}") for v in values])
    assert np.array_equal(round_significant(values, 10), expected)
    assert np.isnan(round_significant(np.array([np.nan]), 10)).all()


def test_percent_format(frame: pd.DataFrame, parsed: dict[str, np.ndarray]) -> None:
    cells = frame["x63"].dropna()
    assert all(PERCENT_TEXT.match(c) for c in cells)
    values = parsed["x63"][~np.isnan(parsed["x63"])]
    assert values.min() >= 0.0 and values.max() <= 100.0
    assert 45 < values.mean() < 55  # percent units, not fractions


# -- categories and missing values ----------------------------------------------------------------------


def test_categorical_levels_exactly(frame: pd.DataFrame) -> None:
    ref = notebook_reference()["categorical_columns"]
    for column in CATEGORICAL:
        assert set(frame[column].dropna()) == set(ref[column]["levels"]), column
    for column in ("x5", "x81", "x82"):
        assert frame[column].notna().all(), column
    shares = {c: frame[c].value_counts(normalize=True) for c in ("x5", "x81", "x82")}
    assert np.allclose(shares["x5"], 1 / 7, atol=0.01)
    assert np.allclose(shares["x81"], 1 / 12, atol=0.008)
    assert np.allclose(shares["x82"], 1 / 2, atol=0.015)


def test_x31_missing_share_and_frequencies(frame: pd.DataFrame) -> None:
    missing = frame["x31"].isna().mean()
    assert 0.02 < missing < 0.06
    assert abs(missing - X31_MISSING_SHARE) < 0.005
    shares = frame["x31"].value_counts(normalize=False) / ROWS
    for level, share in X31_SHARES.items():
        assert abs(shares[level] - share) < 0.01, level
    assert shares["asia"] > 0.25 and shares["germany"] > 0.3
    assert 0.2 <= shares["america"] <= 0.26
    assert 0.04 < shares["japan"] < 0.08
    assert sum(X31_SHARES.values()) + X31_MISSING_SHARE == pytest.approx(1.0)


def test_missing_share_per_numeric_column(frame: pd.DataFrame) -> None:
    schema = notebook_schema()
    shares = frame[list(schema.numeric)].isna().mean()
    assert len(shares) == 96
    assert shares.min() >= 0.01 and shares.max() <= 0.03, shares.describe()
    assert shares.std() > 0.003  # varies per column
    per_row = frame[list(schema.numeric)].isna().sum(axis=1).mean()
    assert 1.0 <= per_row <= 3.0
    assert frame["y"].notna().all()


# -- moments and shapes ---------------------------------------------------------------------------------


def test_moments_match_the_reference(parsed: dict[str, np.ndarray]) -> None:
    ref = notebook_reference()
    means, scales = ref["scaler_mean_train_split"], ref["scaler_scale_train_split"]
    worst_mean = worst_std = worst_imputed = 0.0
    for column in ref["numeric_columns_in_notebook_order"]:
        values = parsed[column]
        present = values[~np.isnan(values)]
        mean_error = abs(present.mean() - means[column]) / scales[column]
        std_error = abs(present.std(ddof=1) / scales[column] - 1)
        # What the notebook's StandardScaler sees: the column after mean imputation.
        imputed = np.where(np.isnan(values), present.mean(), values)
        imputed_error = abs(imputed.std() / scales[column] - 1)
        assert mean_error < 0.05, (column, mean_error)
        assert std_error < 0.03, (column, std_error)
        assert imputed_error < 0.015, (column, imputed_error)
        worst_mean = max(worst_mean, mean_error)
        worst_std = max(worst_std, std_error)
        worst_imputed = max(worst_imputed, imputed_error)
    assert worst_mean < 0.05 and worst_std < 0.03 and worst_imputed < 0.015


def test_shape_classification() -> None:
    shapes = column_shapes()
    assert len(shapes) == 96
    expected = {
        "x10": (14, 15),
        "x12": (-10_000, 10_000),
        "x91": (-0.25, 0.75),
        "x53": (-0.1, 0.9),
        "x7": (0, 100),
    }
    for column, (low, high) in expected.items():
        assert shapes[column].kind == UNIFORM, column
        assert (shapes[column].low, shapes[column].high) == (low, high), column
    # x1: ±√3·std = ±5.17 rounds to ±5, but U[-5, 5] would be 3.3% too narrow: N(0, 3).
    for column in ("x0", "x2", "x99", "x1"):
        assert shapes[column].kind == NORMAL, column
    assert classify_column("u", 0.5, 1 / math.sqrt(12)).kind == UNIFORM
    assert classify_column("n", 0.0, 1.0).kind == NORMAL
    with pytest.raises(ValueError):
        classify_column("bad", 0.0, 0.0)


def test_drawn_shapes(parsed: dict[str, np.ndarray]) -> None:
    shapes = column_shapes()
    for column in ("x10", "x12", "x91", "x53", "x7"):
        values = parsed[column][~np.isnan(parsed[column])]
        shape = shapes[column]
        width = shape.high - shape.low
        assert shape.low <= values.min() < shape.low + 0.001 * width, column
        assert shape.high - 0.001 * width < values.max() <= shape.high, column
        assert pd.Series(values).kurt() == pytest.approx(-1.2, abs=0.05), column
    for column in ("x0", "x2", "x99"):
        values = pd.Series(parsed[column]).dropna()
        assert values.kurt() == pytest.approx(0.0, abs=0.1), column
        assert abs(values.skew()) < 0.05, column
    assert pd.Series(parsed["x2"]).mean() == pytest.approx(5.0, abs=0.02)
    assert pd.Series(parsed["x99"]).std() == pytest.approx(100.0, rel=0.02)


# -- the target -----------------------------------------------------------------------------------------


def test_approved_logit_reproduces_the_reference_rows() -> None:
    examples = example_rows()
    schema = notebook_schema()
    rows = examples["rows"]
    numeric = {
        c: parse_numeric_column([row.get(c) for row in rows], schema.formats.get(c, "number"))[0]
        for c in schema.numeric
    }
    categories = {c: np.array([row.get(c) for row in rows], dtype=object) for c in CATEGORICAL}
    phat = 1 / (1 + np.exp(-approved_logit(numeric, categories)))
    expected = [e["phat"] for e in examples["expected"]]
    np.testing.assert_allclose(phat, expected, rtol=0, atol=1e-9)


def test_class_balance(frame: pd.DataFrame, parsed: dict[str, np.ndarray]) -> None:
    assert abs(frame["y"].mean() - REAL_BALANCE) < 0.02
    categories = {c: frame[c].to_numpy(dtype=object) for c in CATEGORICAL}
    phat = 1 / (1 + np.exp(-approved_logit(parsed, categories)))
    assert abs(phat.mean() - REAL_BALANCE) < 0.006  # tuned in expectation
    # y follows the GLM: positives are much likelier where phat is high.
    high = phat > 0.712
    assert frame["y"][high].mean() == pytest.approx(phat[high].mean(), abs=0.02)
    assert frame["y"][~high].mean() == pytest.approx(phat[~high].mean(), abs=0.02)


# -- determinism and arguments --------------------------------------------------------------------------


def test_same_seed_same_frame_other_seed_differs(frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        make_synthetic_frame(2_000, 5), make_synthetic_frame(2_000, 5), check_exact=True
    )
    other = make_synthetic_frame(2_000, 6)
    same = make_synthetic_frame(2_000, 5)
    assert not other.equals(same)
    assert not np.allclose(other["x0"].fillna(0), same["x0"].fillna(0))


@pytest.mark.parametrize("rows", [0, -1, 2.5, "10", True])
def test_rows_must_be_a_positive_integer(rows: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_synthetic_frame(rows, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        write_synthetic_csv(tmp_path / "x.csv", rows, 1)  # type: ignore[arg-type]
    assert not (tmp_path / "x.csv").exists()


def test_one_row() -> None:
    one = make_synthetic_frame(1, 0)
    assert one.shape == (1, 101)
    assert one["x12"].dtype == make_synthetic_frame(100, 0)["x12"].dtype


@pytest.mark.slow
def test_100k_rows_have_the_layout_of_a_small_frame() -> None:
    """A benchmark-sized frame has the columns and dtypes of a small one (its speed is not asserted)."""
    big = make_synthetic_frame(100_000, 1)
    assert big.shape == (100_000, 101)
    assert big.dtypes.to_dict() == make_synthetic_frame(100, 1).dtypes.to_dict()


@pytest.mark.slow
def test_glm_coefficients_are_recovered(frame: pd.DataFrame, parsed: dict[str, np.ndarray]) -> None:
    """Logit on the approved inputs of 40,000 rows: every coefficient within 3 SE of the reference."""
    import statsmodels.api as sm

    ref = notebook_reference()
    selected = ref["selected_features_in_selection_order"]
    fill, center = ref["imputer_mean_train_split"], ref["scaler_mean_train_split"]
    scale = ref["scaler_scale_train_split"]
    columns = {}
    for feature in selected:
        column, _, level = feature.partition("_")
        if level:
            columns[feature] = (frame[column] == level).astype(float).to_numpy()
        else:
            values = np.where(np.isnan(parsed[column]), fill[column], parsed[column])
            columns[feature] = (values - center[column]) / scale[column]
    fit = sm.Logit(frame["y"].to_numpy(), pd.DataFrame(columns)).fit(disp=0)
    coef = pd.Series(ref["final_coefficients"])[selected]
    se = pd.Series(ref["final_standard_errors"])[selected]
    z = (fit.params - coef) / se
    assert z.abs().max() < 3, z.abs().sort_values().tail()
