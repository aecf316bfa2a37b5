"""Strict number and category parsing (issue 12, defect 8): ASCII digits and the documented formats only.

The strictness must not change a single bit of what the approved model's data parses to: the synthetic
frame and the reference rows are parsed here with the parser as it was before (a frozen copy of its rule)
and with the strict one, column by column.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.model import parsing
from service.model.parsing import (
    MISSING_CODE,
    UNSEEN_CODE,
    category_code,
    category_key,
    category_lookup,
    is_missing,
    parse_category_column,
    parse_number,
    parse_numeric_column,
)
from service.model.schema import example_rows, notebook_schema
from service.model.synthetic import make_synthetic_frame

MONEY_REASON = "not a money amount (e.g. '$6,882.34', '($5,032.58)') or a number"
PERCENT_REASON = "not a percentage (e.g. '62.59%') or a number"
REASON = {"number": "not a number", "money": MONEY_REASON, "percent": PERCENT_REASON}
FORMATS = ("number", "money", "percent")

# --- the parser before strict parsing, frozen as the reference ----------------------------------------------
OLD_MISSING = {t: "nan" for t in ("", "nan", "NaN", "NAN", "null", "Null", "NULL", "None", "none", "NONE")}
OLD_MONEY = str.maketrans({"$": None, ",": None, ")": None, "(": "-"})


def old_clean(value: Any, fmt: str) -> Any:
    if type(value) is not str:
        return value
    if value in OLD_MISSING:
        return "nan"
    if fmt == "money":
        return value.translate(OLD_MONEY)
    if fmt == "percent":
        return value.rstrip().removesuffix("%")
    return value


def old_parse(values: list[Any], fmt: str) -> np.ndarray:
    """The old one-call path (numpy reads what float() reads): the values every old client got."""
    return np.array([old_clean(v, fmt) for v in values], dtype=np.float64)


def bits(values: np.ndarray) -> list[int]:
    out: list[int] = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64).tolist()
    return out


# --- hostile numbers ------------------------------------------------------------------------------------
HOSTILE = [
    "\u0661\u0662",  # Arabic-Indic digits
    "\u06f1\u06f2",  # Extended Arabic-Indic digits
    "\uff11\uff12",  # full-width digits
    "12\uff13",
    "1_000",  # float() reads "_" between digits
    "1_0e1_0",
    "\u00a012",  # no-break space
    "12\u3000",  # ideographic space
    "\u200912",  # thin space
    "12\x1c",  # ASCII file separator: not whitespace here
    "1\x002",  # NUL inside a value
    "0x10",
    "1e",
    ".",
    "+-1",
    "1 2",
]
NON_FINITE = ["inf", "-Infinity", "+inf", "INFINITY", "-nan", "+NaN", "1e999", "-1e400"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", HOSTILE)
def test_non_ascii_digits_underscores_and_odd_blanks_are_refused(value: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_number(value, fmt)
    column = ["1.5", value, "2.5"]
    if fmt == "money":
        column = ["$1.50", value, "($2.50)"]
    values, problems = parse_numeric_column(column, fmt)
    assert [(row, reason, echoed) for row, reason, echoed in problems.items] == [(1, REASON[fmt], value)]
    assert values[1] != values[1]
    assert abs(values[0]) == 1.5 and abs(values[2]) == 2.5


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_spellings_are_refused_as_not_finite(value: str, fmt: str) -> None:
    values, problems = parse_numeric_column(["1", value], fmt)
    assert problems.items == [(1, "not a finite number", value)]
    assert values[0] == 1.0


@pytest.mark.parametrize(
    "value",
    ["(5", "5)", "$(5)", "(5)$", "(5),", "(5)5", "5(5)", "((5))", "(5))", "()", "(", ")", "($5.00", "$5.00)"],
)
def test_money_parentheses_only_as_the_whole_wrapper(value: str) -> None:
    with pytest.raises(ValueError, match="not a money amount"):
        parse_number(value, "money")
    values, problems = parse_numeric_column(["$1.00", value, "($5,032.58)"], "money")
    assert problems.items == [(1, MONEY_REASON, value)]
    assert values[0] == 1.0 and values[2] == -5032.58


def test_unbalanced_parentheses_in_different_rows_do_not_pair_up() -> None:
    # "(" in one row and ")" in another balance over the column, not within a value.
    values, problems = parse_numeric_column(["(5", "$7.00", "5)"], "money")
    assert [row for row, _, _ in problems.items] == [0, 2]
    assert values[1] == 7.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("($5,032.58)", -5032.58),
        ("  ($5,032.58)  ", -5032.58),
        ("($5,032.58)\t", -5032.58),
        ("(5)", -5.0),
        ("(5 )", -5.0),  # the notebook's rule leaves "-5 ", a number
        ("$-4446.82", -4446.82),
        ("$1e3", 1000.0),
    ],
)
def test_money_wrapper_spellings_still_parse(value: str, expected: float) -> None:
    assert parse_number(value, "money") == expected
    values, problems = parse_numeric_column(["$6,882.34 ", value, None], "money")
    assert not problems and values[1] == expected


@pytest.mark.parametrize("value", ["5%%", "%5", "5%5", "5 % %", "%", "5%\u00a0"])
def test_percent_takes_one_trailing_sign(value: str) -> None:
    with pytest.raises(ValueError, match="not a percentage"):
        parse_number(value, "percent")
    values, problems = parse_numeric_column(["62.59%", value, "3.11%"], "percent")
    assert problems.items == [(1, PERCENT_REASON, value)]
    assert values[0] == 62.59 and values[2] == 3.11


@pytest.mark.parametrize(("value", "expected"), [("62.59 %", 62.59), (" 7% ", 7.0), ("-1.5%\n", -1.5)])
def test_percent_blanks_around_the_sign_still_parse(value: str, expected: float) -> None:
    values, problems = parse_numeric_column(["1%", value], "percent")
    assert not problems and values[1] == expected


@pytest.mark.parametrize("value", [" 12 ", "\t12\n", "\x0b12\x0c", "\r12"])
def test_ascii_whitespace_around_a_number_is_allowed(value: str) -> None:
    assert parse_number(value, "number") == 12.0
    values, problems = parse_numeric_column([value, "1"], "number")
    assert not problems and values[0] == 12.0


@pytest.mark.parametrize("value", ["$nan", "(nan)", "nan5", "5nan", "nann", "NaNa"])
def test_missing_words_only_alone(value: str) -> None:
    # A missing spelling inside a number is no missing value: the notebook's translation would have
    # turned "$nan" into "nan".
    values, problems = parse_numeric_column(["nan", value, "NULL", ""], "money")
    assert [row for row, _, _ in problems.items] == [1]
    assert all(v != v for v in values.tolist())


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_exact_missing_spelling_beside_numbers(fmt: str) -> None:
    spellings = ["", "nan", "NaN", "NAN", "null", "Null", "NULL", "None", "none", "NONE", " nan ", "nUlL"]
    column = [x for s in spellings for x in (s, "2")]
    values, problems = parse_numeric_column(column, fmt)
    assert not problems
    assert all(v != v for v in values[0::2].tolist()) and values[1::2].tolist() == [2.0] * len(spellings)


def test_full_width_missing_word_is_not_missing() -> None:
    assert not is_missing("\uff4e\uff41\uff4e")
    _, problems = parse_numeric_column(["\uff4e\uff41\uff4e"], "number")
    assert problems.items == [(0, "not a number", "\uff4e\uff41\uff4e")]


def test_refused_values_are_echoed_truncated() -> None:
    _, problems = parse_numeric_column(["1", "\uff11" * 500, "(" + "5" * 500], "money")
    assert [row for row, _, _ in problems.items] == [1, 2]
    assert all(len(echoed) <= parsing.MAX_ECHO for _, _, echoed in problems.items)
    assert problems.items[1][2].startswith("(555")


# --- the one-call path and the per-value parser agree ----------------------------------------------------
ALPHABET = [
    *"0123456789.eE+-$,()% \t_naNif\x00\x1c",
    *("\u0661", "\uff11", "\xa0", "1_0", "Inf", "nan", "None", "($1.5)", "7%"),
]
ITEMS = st.one_of(
    st.lists(st.sampled_from(ALPHABET), max_size=6).map("".join),
    st.sampled_from([None, 1.5, -0.0, 3, float("nan")]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(ITEMS, min_size=1, max_size=6), st.sampled_from(FORMATS))
def test_column_parser_equals_the_value_parser(column: list[Any], fmt: str) -> None:
    """Whichever path a column takes, each value gets what parse_number gives it (or its error)."""
    values, problems = parse_numeric_column(column, fmt)
    expected_bad = []
    for i, v in enumerate(column):
        try:
            want = parse_number(v, fmt)
        except ValueError:
            expected_bad.append(i)
            want = math.nan
        assert bits(values[i : i + 1]) == bits(np.array([want])) or (values[i] != values[i] and want != want)
    assert [row for row, _, _ in problems.items] == expected_bad


# The strict grammar as the issue states it, written out independently of the code's float()-based check.
BLANK = "[ \t\n\r\x0b\x0c]*"
GRAMMAR = re.compile(f"{BLANK}[+-]?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)(?:[eE][+-]?[0-9]+)?{BLANK}")


def strict_oracle(value: str, fmt: str) -> float | None:
    """The value the strict rules give a string (NaN for missing), None when they refuse it."""
    if value.strip().casefold() in {"", "nan", "null", "none"}:
        return math.nan
    text = value.strip(" \t\n\r\x0b\x0c")
    if fmt == "money":
        if text.startswith("(") and text.endswith(")"):
            text = "-" + text[1:-1]
        if "(" in text or ")" in text:
            return None
        text = text.replace("$", "").replace(",", "")
    elif fmt == "percent":
        text = text.removesuffix("%")
    if not GRAMMAR.fullmatch(text) or math.isinf(float(text)):
        return None
    return float(text)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=7).map("".join), st.sampled_from(FORMATS))
def test_value_parser_is_the_strict_grammar(value: str, fmt: str) -> None:
    want = strict_oracle(value, fmt)
    if want is None:
        with pytest.raises(ValueError):
            parse_number(value, fmt)
    else:
        assert bits(np.array([parse_number(value, fmt)])) == bits(np.array([want]))


@pytest.mark.parametrize(
    ("fmt", "column"),
    [
        (
            "money",
            ["$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "$-4446.82", "12", "nan", "", None],
        ),
        ("percent", ["62.59%", "3.11%", "90.90%", "-1.5%", "62.59", "nan", "", 0.5, None]),
        ("number", ["-1.018506", "5.703058724", "1e-05", "-4e2", ".5", "5.", "nan", "", 3, None]),
    ],
)
def test_documented_spellings_take_the_one_call_path(fmt: str, column: list[Any]) -> None:
    # The per-value parser is the fallback; well-formed columns are converted by numpy in one call.
    cleaned = parsing._clean_text(column, set(map(type, column)), fmt)
    assert cleaned is not None
    fast = np.array(cleaned, dtype=np.float64)
    slow, problems = parse_numeric_column([*column, "bad"], fmt)  # one bad value: the per-value path
    assert [row for row, _, _ in problems.items] == [len(column)]
    assert bits(fast) == bits(slow[:-1])


# --- the approved data parses exactly as before -------------------------------------------------------------
SYNTHETIC_ROWS = 20_000
MISSING_SPELLINGS = ["", "nan", "NaN", "null", "None", None]


@pytest.fixture(scope="module")
def synthetic() -> Any:
    return make_synthetic_frame(SYNTHETIC_ROWS, 12)


def as_client_text(values: list[Any]) -> list[Any]:
    """Every value a string (repr of a number), missing values in every spelling in turn."""
    spelling = itertools.cycle(MISSING_SPELLINGS)
    out: list[Any] = []
    for v in values:
        if isinstance(v, float) and v != v:
            out.append(next(spelling))
        else:
            out.append(v if isinstance(v, str) else repr(v))
    return out


def test_synthetic_frame_parses_bit_for_bit_as_before(synthetic: Any) -> None:
    schema = notebook_schema()
    assert len(schema.numeric) == 96
    for column in schema.numeric:
        fmt = schema.formats.get(column, "number")
        for values in (synthetic[column].tolist(), as_client_text(synthetic[column].tolist())):
            new, problems = parse_numeric_column(values, fmt)
            assert not problems.items, (column, problems.items[:3])
            assert bits(new) == bits(old_parse(values, fmt)), column


def test_reference_rows_parse_bit_for_bit_as_before() -> None:
    schema = notebook_schema()
    rows = example_rows()["rows"]
    for column in schema.numeric:
        fmt = schema.formats.get(column, "number")
        values = [row.get(column) for row in rows]
        new, problems = parse_numeric_column(values, fmt)
        assert not problems.items and bits(new) == bits(old_parse(values, fmt)), column
        one_by_one = np.array([parse_number(v, fmt) for v in values])
        assert bits(one_by_one) == bits(new), column


def test_synthetic_categories_match_as_before(synthetic: Any) -> None:
    schema = notebook_schema()
    for column, levels in schema.categories.items():
        lookup = category_lookup(list(levels))
        old_lookup = {level.strip().casefold(): i for i, level in enumerate(levels)}
        raw = synthetic[column].tolist()
        variants = [raw, [v.upper() if isinstance(v, str) else v for v in raw], [f" {v} " for v in raw]]
        for values in variants:
            codes, problems, unseen = parse_category_column(values, lookup)
            old = [old_lookup.get(v.strip().casefold(), MISSING_CODE) for v in map(str, values)]
            assert not problems and not unseen, column
            assert codes.tolist() == old, column


# --- categories: case-folded, never through compatibility characters -------------------------------------
DAYS = ["friday", "monday", "saturday", "sunday", "thursday", "tuesday", "wednesday"]


@pytest.mark.parametrize(
    "value",
    [
        "tue\u017fday",  # long s: casefold() gives "tuesday"
        "TUE\u017fDAY",
        " tue\u017fday ",
        "\uff54\uff55\uff45\uff53\uff44\uff41\uff59",  # full-width
        "\uff34\uff35\uff25\uff33\uff24\uff21\uff39",
        "\u212a",  # Kelvin sign
        "\ufb01",  # "fi" ligature
        "tuesda\u0443",  # Cyrillic u
    ],
)
def test_compatibility_characters_never_match_an_ascii_level(value: str) -> None:
    lookup = category_lookup([*DAYS, "k", "fi"])
    codes, problems, unseen = parse_category_column(["tuesday", value], lookup)
    assert codes.tolist() == [5, UNSEEN_CODE]
    assert unseen == [(1, value)] and not problems
    assert category_code(value, lookup) is None


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("tuesday", 5),
        ("Tuesday ", 5),
        ("TUESDAY", 5),
        ("\u00a0monday\u3000", 1),  # Unicode blanks are trimmed, the rest is ASCII
        ("nan", MISSING_CODE),
        (" NULL ", MISSING_CODE),
        (None, MISSING_CODE),
        (float("nan"), MISSING_CODE),
        ("blursday", None),
        (3, None),
        (True, None),
    ],
)
def test_category_code(value: Any, level: int | None) -> None:
    assert category_code(value, category_lookup(DAYS)) == level


def test_non_ascii_levels_fold_among_themselves() -> None:
    levels = ["Straße", "Zürich", "tuesday"]
    lookup = category_lookup(levels)
    codes, _, unseen = parse_category_column(
        ["Straße", "STRAßE", "straße", "ZÜRICH", " zürich ", "STRASSE", "strasse", "Zu\u0308rich"], lookup
    )
    # "STRASSE" is ASCII and "Straße" is not: they match only exactly. A decomposed ü is another spelling.
    assert codes.tolist() == [0, 0, 0, 1, 1, UNSEEN_CODE, UNSEEN_CODE, UNSEEN_CODE]
    assert [i for i, _ in unseen] == [5, 6, 7]


def test_an_ascii_level_is_not_reached_through_a_sharp_s() -> None:
    lookup = category_lookup(["strasse"])
    assert category_code("STRASSE", lookup) == 0
    assert category_code("straße", lookup) is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Tuesday ", "tuesday"),
        ("tue\u017fday", None),
        ("\uff34\uff35\uff25\uff33\uff24\uff21\uff39", None),
        ("Zürich", "zürich"),
        ("STRAßE", "straße"),
        ("\u00a0nan", "nan"),
    ],
)
def test_category_key(text: str, key: str | None) -> None:
    assert category_key(text) == key
