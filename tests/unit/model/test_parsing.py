"""Value parsing shared by the reference pipeline and the fast path."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.model.parsing import (
    MISSING_CODE,
    UNSEEN_CODE,
    category_lookup,
    parse_category_column,
    parse_number,
    parse_numeric_column,
)


def notebook_money(text: str) -> float:
    """The notebook's own rule, written independently of the code under test."""
    return float(text.replace("$", "").replace(",", "").replace(")", "").replace("(", "-"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$6,882.34", 6882.34),
        ("$6,882.34 ", 6882.34),
        ("$-5,032.58", -5032.58),
        ("($5,032.58)", -5032.58),
        ("$-4446.82", -4446.82),
        ("$0.00", 0.0),
        ("$1,234,567.89", 1234567.89),
        ("6882.34", 6882.34),
        (" $12.5 ", 12.5),
        (6882.34, 6882.34),
        (-12, -12.0),
    ],
)
def test_money_formats(text: object, expected: float) -> None:
    assert parse_number(text, "money") == expected
    values, problems = parse_numeric_column([text], "money")
    assert not problems and values[0] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("62.59%", 62.59),
        ("3.11%", 3.11),
        ("90.90%", 90.9),
        ("-1.5%", -1.5),
        ("62.59", 62.59),
        (62.59, 62.59),
        ("0%", 0.0),
    ],
)
def test_percent_formats(text: object, expected: float) -> None:
    assert parse_number(text, "percent") == expected
    values, problems = parse_numeric_column(["1%", text], "percent")
    assert not problems and values[1] == expected


@pytest.mark.parametrize(
    "spelling", [None, "", "nan", "NaN", "null", "None", "NULL", " nan ", "  ", float("nan")]
)
@pytest.mark.parametrize("fmt", ["number", "money", "percent"])
def test_missing_spellings(spelling: object, fmt: str) -> None:
    assert math.isnan(parse_number(spelling, fmt))
    values, problems = parse_numeric_column([spelling, "1"], fmt)
    assert not problems and math.isnan(values[0]) and values[1] == 1.0


@pytest.mark.parametrize(
    ("value", "fmt", "reason"),
    [
        ("abc", "number", "not a number"),
        ("12 dollars", "money", "not a money amount"),
        ("62.59 percent", "percent", "not a percentage"),
        ("inf", "number", "not a finite number"),
        ("-Infinity", "number", "not a finite number"),
        ("1e999", "number", "not a finite number"),
        (10**400, "number", "not a finite number"),
        (True, "number", "boolean"),
        ({"a": 1}, "money", "an object"),
        ([1, 2], "percent", "an array"),
        ("($-5.00)", "money", "not a money amount"),
        ("62.59%", "money", "not a money amount"),
        ("$5", "percent", "not a percentage"),
    ],
)
def test_bad_values_are_reported_with_row_and_reason(value: object, fmt: str, reason: str) -> None:
    values, problems = parse_numeric_column([1.0, value, 2.0], fmt)
    assert [row for row, _, _ in problems.items] == [1]
    assert reason in problems.items[0][1]
    assert values[0] == 1.0 and values[2] == 2.0


def test_echoed_value_is_truncated() -> None:
    _, problems = parse_numeric_column(["x" * 10_000], "number")
    assert len(problems.items[0][2]) <= 40


def test_fast_and_slow_paths_agree() -> None:
    # All numbers take numpy's path; one bad value sends the whole column through the per-value path.
    good = [1.5, "2.25", None, "", "nan", 3, "-4e2"]
    fast, p1 = parse_numeric_column(good, "number")
    slow, p2 = parse_numeric_column([*good, "bad"], "number")
    assert not p1 and [r for r, _, _ in p2.items] == [7]
    np.testing.assert_array_equal(fast, slow[:-1])


cents = st.integers(min_value=-99_999_999, max_value=99_999_999)


@given(cents)
def test_money_vintages_property(c: int) -> None:
    value = c / 100
    body = f"{abs(value):,.2f}"
    spellings = [
        f"${value:,.2f}",  # 2020 vintage: "$-5,032.58"
        f"${body} " if value >= 0 else f"(${body})",  # later vintage: trailing space / accounting negative
        f"${value:.2f}",  # no thousands separator
    ]
    for text in spellings:
        assert parse_number(text, "money") == notebook_money(text) == float(f"{value:.2f}")


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_percent_property(x: float) -> None:
    assert parse_number(f"{x!r}%", "percent") == x
    assert parse_number(repr(x), "number") == x


def test_categories_trim_and_casefold() -> None:
    lookup = category_lookup(["friday", "monday", "tuesday"])
    codes, problems, unseen = parse_category_column(
        ["tuesday", "Tuesday ", "TUESDAY", " monday", None, "", "nan", "blursday", 3, float("nan")], lookup
    )
    assert codes.tolist() == [
        2,
        2,
        2,
        1,
        MISSING_CODE,
        MISSING_CODE,
        MISSING_CODE,
        UNSEEN_CODE,
        MISSING_CODE,
        MISSING_CODE,
    ]
    assert unseen == [(7, "blursday")]
    assert [(r, reason) for r, reason, _ in problems.items] == [(8, "expected a string category, got int")]


def test_capitalised_levels_match_any_case() -> None:
    lookup = category_lookup(["April", "Germany"])
    codes, _, _ = parse_category_column(["april", "APRIL", "germany", "Germany "], lookup)
    assert codes.tolist() == [0, 0, 1, 1]
