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
    if not s:
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
        return value
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


_NUMERIC_TYPES = frozenset({float, int, type(None)})
_TEXT_TYPES = frozenset({float, int, str, type(None)})
# Exact spellings of "missing" mapped to a token numpy reads as NaN (other spellings take the slow path).
_MISSING_AS_NAN = {
    t: "nan" for t in ("", "nan", "NaN", "NAN", "null", "Null", "NULL", "None", "none", "NONE")
}


def _clean_text(values: Sequence[Any], fmt: str) -> list[Any]:
    missing = _MISSING_AS_NAN.get
    if fmt == MONEY:
        return [(missing(v) or v.translate(_MONEY_TABLE)) if type(v) is str else v for v in values]
    if fmt == PERCENT:
        return [(missing(v) or v.rstrip().removesuffix("%")) if type(v) is str else v for v in values]
    return [(missing(v) or v) if type(v) is str else v for v in values]


def parse_numeric_column(values: Sequence[Any], fmt: str = "number") -> tuple[np.ndarray, ColumnProblems]:
    """Raw values of one numeric column -> float64 array (NaN = missing) and the values that failed.

    Fast path: numbers, None and well-formed strings are converted by numpy in one call (numpy reads a
    Python str with the same grammar as float()); anything that fails or is not finite falls back to the
    per-value parser, which also produces the error messages.
    """
    kinds = set(map(type, values))
    if kinds <= _TEXT_TYPES:
        try:
            arr = np.array(values if kinds <= _NUMERIC_TYPES else _clean_text(values, fmt), dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            pass
        else:
            if not np.isinf(arr).any():
                return arr, ColumnProblems()
    problems = ColumnProblems()
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = parse_number(v, fmt)
        except (ValueError, OverflowError) as exc:
            reason = str(exc) if type(exc) is ValueError else "not a finite number"
            problems.add(i, reason, v)
            out[i] = math.nan
    return out, problems


def category_lookup(levels: Sequence[str]) -> dict[str, int]:
    """Trimmed, case-folded level (and the level exactly as learned) -> index in `levels`."""
    lookup = {level.strip().casefold(): i for i, level in enumerate(levels)}
    lookup.update({level: i for i, level in enumerate(levels)})
    return lookup


MISSING_CODE = -1
UNSEEN_CODE = -2


def parse_category_column(
    values: Sequence[Any], lookup: dict[str, int]
) -> tuple[np.ndarray, ColumnProblems, list[tuple[int, str]]]:
    """Raw values of one categorical column -> level codes (-1 missing, -2 unseen), bad values, unseen values.

    `lookup` maps trimmed, case-folded levels to codes. Values spelled exactly like a key, or exactly like
    a level's canonical form, are matched in one dictionary pass; the rest take the per-value path.
    """
    problems = ColumnProblems()
    unseen: list[tuple[int, str]] = []
    get = lookup.get
    try:
        fast = [get(v, -9) if type(v) is str else -9 for v in values]
    except TypeError:  # pragma: no cover - every value is a str here, so hashable
        fast = [-9] * len(values)
    codes = np.array(fast, dtype=np.int64)
    for i in np.flatnonzero(codes == -9).tolist():
        v = values[i]
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
