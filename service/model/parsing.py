"""Column-wise parsing of raw values, shared by the sklearn reference pipeline and the fast scoring path.

Every function takes the raw values of ONE column (a list, as decoded from JSON or read from a CSV) and
returns parsed values plus the problems found, so a caller can report every bad row at once.

Accepted spellings:
- missing: None, an absent key, float NaN, and the strings "", "nan", "NaN", "null", "None" (any case,
  surrounding whitespace ignored);
- numbers: JSON numbers or numeric strings; non-finite values are rejected;
- money (x12): "$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "$-4446.82", or a plain number;
  the notebook's rule: drop "$" and ",", ")" -> "", "(" -> "-", then float;
- percent (x63): "62.59%" means 62.59 (percent units), or a plain number;
- categories: trimmed and case-folded before matching a known level ("Tuesday " -> "tuesday").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.model.schema import MONEY, PERCENT

MISSING_TOKENS = frozenset({"", "nan", "null", "none"})
MAX_ECHO = 40  # characters of an offending value echoed back in an error

_MONEY_TABLE = str.maketrans({"$": None, ",": None, ")": None, "(": "-"})


def truncate(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN
    if isinstance(value, str):
        return value.strip().casefold() in MISSING_TOKENS
    return False


@dataclass
class ColumnProblems:
    """(row index, reason, truncated value) for each value that could not be parsed."""

    items: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, row: int, reason: str, value: Any) -> None:
        self.items.append((row, reason, truncate(value)))

    def __bool__(self) -> bool:
        return bool(self.items)


def _text_to_float(text: str, fmt: str) -> float:
    s = text.strip()
    if fmt == MONEY:
        s = s.translate(_MONEY_TABLE).strip()
    elif fmt == PERCENT and s.endswith("%"):
        s = s[:-1].strip()
    if not s or "_" in s:
        raise ValueError(s)
    return float(s)


def _reason(fmt: str) -> str:
    if fmt == MONEY:
        return "not a money amount (e.g. '$6,882.34', '($5,032.58)') or a number"
    if fmt == PERCENT:
        return "not a percentage (e.g. '62.59%') or a number"
    return "not a number"


def parse_number(value: Any, fmt: str) -> float:
    """One value -> float (NaN for missing). Raises ValueError with a reason for anything else."""
    if value is None:
        return math.nan
    kind = type(value)
    if kind is float:
        if value != value:
            return math.nan
        if math.isinf(value):
            raise ValueError("not a finite number")
        return value  # type: ignore[no-any-return]
    if kind is int:
        out = float(value)  # a huge int raises OverflowError; the column parser reports it
        if math.isinf(out):
            raise ValueError("not a finite number")
        return out
    if kind is str:
        if value.strip().casefold() in MISSING_TOKENS:
            return math.nan
        try:
            out = _text_to_float(value, fmt)
        except ValueError:
            raise ValueError(_reason(fmt)) from None
        if not math.isfinite(out):
            raise ValueError("not a finite number")
        return out
    if isinstance(value, (np.floating, np.integer)):
        return parse_number(value.item(), fmt)
    raise ValueError(f"expected a number or a string, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def parse_numeric_column(values: Sequence[Any], fmt: str = "number") -> tuple[np.ndarray, ColumnProblems]:
    """Raw values of one numeric column -> float64 array (NaN = missing) and the values that failed."""
    problems = ColumnProblems()
    # Fast path: a column of JSON numbers (the common case for plain columns).
    if all(type(v) is float for v in values):
        arr = np.array(values, dtype=np.float64)
        if np.isfinite(arr[~np.isnan(arr)]).all():
            return arr, problems
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = parse_number(v, fmt)
        except (ValueError, OverflowError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else "not a finite number"
            problems.add(i, reason, v)
            out[i] = math.nan
    return out, problems


def category_lookup(levels: Sequence[str]) -> dict[str, int]:
    """Case-folded, trimmed level -> index in `levels`."""
    return {level.strip().casefold(): i for i, level in enumerate(levels)}


MISSING_CODE = -1
UNSEEN_CODE = -2


def parse_category_column(
    values: Sequence[Any], lookup: dict[str, int]
) -> tuple[np.ndarray, ColumnProblems, list[tuple[int, str]]]:
    """Raw values of one categorical column -> level codes (-1 missing, -2 unseen), bad values, unseen values."""
    problems = ColumnProblems()
    unseen: list[tuple[int, str]] = []
    codes = np.empty(len(values), dtype=np.int64)
    get = lookup.get
    for i, v in enumerate(values):
        if type(v) is str:
            key = v.strip().casefold()
            code = get(key)
            if code is not None:
                codes[i] = code
            elif key in MISSING_TOKENS:
                codes[i] = MISSING_CODE
            else:
                codes[i] = UNSEEN_CODE
                unseen.append((i, truncate(v)))
        elif v is None or (type(v) is float and v != v):
            codes[i] = MISSING_CODE
        else:
            codes[i] = MISSING_CODE
            problems.add(i, f"expected a string category, got {_json_type(v)}", v)
    return codes, problems, unseen
