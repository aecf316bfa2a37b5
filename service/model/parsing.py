"""Column-wise parsing of raw values, shared by the sklearn reference pipeline and the fast scoring path.

Every function takes the raw values of ONE column (a list, as decoded from JSON or read from a CSV) and
returns parsed values plus the problems found, so a caller can report every bad row at once.

Accepted spellings (anything else is reported, never coerced):
- missing: None, an absent key, float NaN, and the strings "", "nan", "NaN", "null", "None" (any case,
  surrounding whitespace ignored);
- numbers: JSON numbers or numeric strings in ASCII: an optional sign, digits with an optional decimal
  point, an optional exponent ("-12", "3.5", ".5", "1e-3"), surrounding ASCII whitespace allowed; no other
  digits (Arabic-Indic, full-width), no "_" separators, no "inf"/"nan" spelled as a value; non-finite
  values are rejected;
- money (x12): "$6,882.34", "$6,882.34 ", "$-5,032.58", "($5,032.58)", "$-4446.82", or a plain number;
  the notebook's rule: drop "$" and ",", ")" -> "", "(" -> "-", then a number; parentheses only as the
  accounting wrapper of the whole value;
- percent (x63): "62.59%" means 62.59 (percent units), or a plain number; one trailing "%";
- categories: trimmed and case-folded before matching a known level ("Tuesday " -> "tuesday"), but a
  value is never folded through compatibility characters: "tue\\u017fday" (long s), the Kelvin sign or a
  ligature match no ASCII level (see `category_key`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.model.schema import MONEY, PERCENT, PLAIN

MISSING_TOKENS = frozenset({"", "nan", "null", "none"})
MAX_ECHO = 40  # characters of an offending value echoed back in an error

ASCII_WHITESPACE = " \t\n\r\x0b\x0c"  # what float() and numpy trim around a number, as ASCII goes
_NON_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.ASCII | re.IGNORECASE)
# Exact spellings of "missing" (the common ones; other spellings are found by `is_missing`), mapped to a
# token numpy reads as NaN.
_MISSING_AS_NAN = {
    t: "nan" for t in ("", "nan", "NaN", "NAN", "null", "Null", "NULL", "None", "none", "NONE")
}
MISSING_SPELLINGS = tuple(_MISSING_AS_NAN)  # a value spelled exactly so is missing, first of all


def truncate(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def category_key(text: str) -> str | None:
    """`text` trimmed and case-folded for matching, or None when it may only match exactly.

    ASCII text is lower-cased. Other text is folded only when it holds no compatibility characters (it is
    NFKC-normal: no long s, Kelvin sign, ligature or full-width form), and never onto ASCII: where
    casefold() would give ASCII ("Straße" -> "strasse") it is lower-cased instead ("straße"). So a value
    that is not ASCII matches an ASCII level only by being exactly that level.
    """
    s = text.strip()
    if s.isascii():
        return s.lower()
    if not unicodedata.is_normalized("NFKC", s):
        return None
    folded = s.casefold()
    if folded.isascii():
        folded = s.lower()
    return None if folded.isascii() else folded


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN
    if isinstance(value, str):
        return category_key(value) in MISSING_TOKENS
    return False


@dataclass
class ColumnProblems:
    """(row index, reason, truncated value) for each value that could not be parsed."""

    items: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, row: int, reason: str, value: Any) -> None:
        self.items.append((row, reason, truncate(value)))

    def __bool__(self) -> bool:
        return bool(self.items)


def _reason(fmt: str) -> str:
    if fmt == MONEY:
        return "not a money amount (e.g. '$6,882.34', '($5,032.58)') or a number"
    if fmt == PERCENT:
        return "not a percentage (e.g. '62.59%') or a number"
    return "not a number"


def _number_text(value: str, fmt: str) -> str | None:
    """The number `value` spells in `fmt`, as text: the notebook's money rule ("$" and "," dropped, the
    accounting "(...)" -> "-..."; None for parentheses anywhere else) or a percent without its one
    trailing "%"."""
    if fmt == MONEY:
        text = value.strip(ASCII_WHITESPACE)
        if text.startswith("(") and text.endswith(")"):
            text = "-" + text[1:-1]
        if "(" in text or ")" in text:
            return None
        return text.replace("$", "").replace(",", "")
    if fmt == PERCENT:
        return value.strip(ASCII_WHITESPACE).removesuffix("%")
    return value


def _parse_text(value: str, fmt: str) -> float:
    """A string -> float (NaN when missing), by the strict grammar: an optional sign, digits with an
    optional decimal point, an optional exponent, ASCII whitespace around ("-12", "3.5", ".5", "1e-3").

    That is float()'s grammar narrowed to ASCII without "_" and without the letter n, which every
    spelling of inf, infinity and nan holds; float() then reads it exactly as numpy does.
    """
    if value in _MISSING_AS_NAN:
        return math.nan
    text = _number_text(value, fmt)
    if text is None:
        raise ValueError(_reason(fmt))
    if text.isascii() and "_" not in text and "n" not in text and "N" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    if is_missing(value):
        return math.nan
    if _NON_FINITE.fullmatch(text.strip(ASCII_WHITESPACE)):
        raise ValueError("not a finite number")
    raise ValueError(_reason(fmt))


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
        out = _parse_text(value, fmt)
        if math.isinf(out):
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


# --- the bulk path: a whole column's strings checked and converted in a few C-level passes ---------------
_NUMERIC_TYPES = frozenset({float, int, type(None)})
_TEXT_TYPES = frozenset({float, int, str, type(None)})
# Joins a column's strings. A string holding one is still refused: numpy refuses it as a number, and the
# money and percent translations are split back and counted.
_SEP = b"\x00"
_WS_BYTES = ASCII_WHITESPACE.encode()
_NUMBER_BYTES = b"0123456789.eE+-"
# What each format's strings may hold: bytes.translate(None, allowed) keeps only the other characters.
_ALLOWED_PLAIN = _NUMBER_BYTES + _WS_BYTES + _SEP
_ALLOWED = {PLAIN: _ALLOWED_PLAIN, MONEY: _ALLOWED_PLAIN + b"$,()", PERCENT: _ALLOWED_PLAIN + b"%"}
_SPELLED_MISSING = tuple(t for t in _MISSING_AS_NAN if t)
# Money's shape: whitespace dropped, every other character but "(" and ")" an "x", so "($5.00) " -> "(x)".
_MONEY_SHAPE = bytes.maketrans(_NUMBER_BYTES + b"$,", b"x" * (len(_NUMBER_BYTES) + 2))
# The notebook's rules as one translation of the joined text: money "(" -> "-", drop "$", "," and ")";
# percent "%" -> " " (float() ignores the space; "%" is known by then to be the last non-blank).
_TO_NUMBER = {
    MONEY: (bytes.maketrans(b"(", b"-"), b"$,)"),
    PERCENT: (bytes.maketrans(b"%", b" "), b""),
}


def _letters_spell_missing(strings: Sequence[str], joined: bytes, fmt: str) -> bool:
    """True when every character a number cannot hold belongs to a value spelled exactly like a missing
    token ("nan", "NULL", ...): counting those values accounts for every such character."""
    allowed = _ALLOWED.get(fmt, _ALLOWED_PLAIN)
    left = joined.translate(None, allowed)
    present = set(left)
    owned = 0
    for spelling in _SPELLED_MISSING:
        letters = spelling.encode().translate(None, allowed)
        if present.issuperset(letters):
            owned += strings.count(spelling) * len(letters)
    return owned == len(left)


def _parentheses_wrap(joined: bytes) -> bool:
    """Every "(" opens its value and every ")" closes it, as a pair: the "($5,032.58)" wrapper only."""
    if b"(" not in joined and b")" not in joined:
        return True
    shape = _SEP + joined.translate(_MONEY_SHAPE, _WS_BYTES) + _SEP
    marks = shape.translate(None, b"x")  # separators and parentheses: a wrapped value is "()"
    opens = marks.count(b"(")
    return opens == marks.count(b")") == marks.count(b"()") == shape.count(b"\x00(") == shape.count(b")\x00")


def _one_trailing_percent(joined: bytes) -> bool:
    if b"%" not in joined:
        return True
    shape = joined.translate(None, _WS_BYTES) + _SEP
    return shape.count(b"%") == shape.count(b"%\x00")


def _strict_bytes(strings: Sequence[str], fmt: str) -> bytes | None:
    """The column's strings joined by NUL, or None (the per-value parser decides) when one of them may be
    something numpy would read but the strict grammar refuses.

    numpy reads a str with float()'s grammar, which beyond the strict one admits non-ASCII digits and
    blanks, "_" between digits, and "inf"/"infinity"/"nan" in any case (each spelled with an "n"). So the
    text must be ASCII without "_", every "n" must be in a value spelled exactly like a missing token, and
    money and percent must have the shapes the notebook's translation would hide ("(5" -> "-5",
    "5%%" -> "5  ").
    """
    text = "\x00".join(strings)
    if not text.isascii() or "_" in text:
        return None
    joined = text.encode("ascii")
    if (b"n" in joined or b"N" in joined) and not _letters_spell_missing(strings, joined, fmt):
        return None
    if fmt == MONEY and not _parentheses_wrap(joined):
        return None
    if fmt == PERCENT and not _one_trailing_percent(joined):
        return None
    return joined


def _clean_text(values: Sequence[Any], kinds: set[type], fmt: str) -> list[Any] | None:
    """The column with every string replaced by text numpy reads as float(), or None (per-value path)."""
    strings = values if kinds == {str} and isinstance(values, list) else [v for v in values if type(v) is str]
    joined = _strict_bytes(strings, fmt)
    if joined is None:
        return None
    missing = _MISSING_AS_NAN.get  # missing(raw, text): "nan" for a missing spelling, else text
    if fmt not in _TO_NUMBER:
        return [missing(v, v) if type(v) is str else v for v in values]
    table, drop = _TO_NUMBER[fmt]
    texts = joined.translate(table, drop).decode("ascii").split("\x00")
    if len(texts) != len(strings):  # a NUL inside a string
        return None
    if kinds == {str}:
        return [missing(v, t) for v, t in zip(values, texts, strict=True)]
    take = iter(texts).__next__
    return [missing(v, take()) if type(v) is str else v for v in values]


def parse_numeric_column(values: Sequence[Any], fmt: str = "number") -> tuple[np.ndarray, ColumnProblems]:
    """Raw values of one numeric column -> float64 array (NaN = missing) and the values that failed.

    Fast path: numbers, None and strings that pass the bulk check are converted by numpy in one call
    (numpy reads a Python str with the grammar float() reads, which the bulk check narrows to ASCII
    digits); anything that fails or is not finite falls back to the per-value parser, which also
    produces the error messages.
    """
    kinds = set(map(type, values))
    if kinds <= _TEXT_TYPES:
        cleaned = values if kinds <= _NUMERIC_TYPES else _clean_text(values, kinds, fmt)
        try:
            arr = None if cleaned is None else np.array(cleaned, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            pass
        else:
            if arr is not None and not np.isinf(arr).any():
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


# --- categories ---------------------------------------------------------------------------------------------
def category_lookup(levels: Sequence[str]) -> dict[str, int]:
    """`category_key` of each level (and the level exactly as learned) -> index in `levels`."""
    keys = ((category_key(level), i) for i, level in enumerate(levels))
    lookup = {key: i for key, i in keys if key is not None}
    lookup.update({level: i for i, level in enumerate(levels)})
    return lookup


MISSING_CODE = -1
UNSEEN_CODE = -2


def category_code(value: Any, lookup: dict[str, int]) -> int | None:
    """One raw value's level code, MISSING_CODE if it is missing, None for anything else (an unseen
    level, a value that is not a string). An exact hit is one dictionary lookup; the rest is folded."""
    if type(value) is str:
        code = lookup.get(value)
        if code is not None:
            return code
        key = category_key(value)
        if key is None:
            return None
        code = lookup.get(key)
        if code is None and key in MISSING_TOKENS:
            return MISSING_CODE
        return code
    if value is None or (type(value) is float and value != value):
        return MISSING_CODE
    return None


def parse_category_column(
    values: Sequence[Any], lookup: dict[str, int]
) -> tuple[np.ndarray, ColumnProblems, list[tuple[int, str]]]:
    """Raw values of one categorical column -> level codes (-1 missing, -2 unseen), bad values, unseen values.

    `lookup` comes from `category_lookup`. Values spelled exactly like a key, or exactly like a level's
    canonical form, are matched in one dictionary pass; the rest take the per-value path.
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
        code = category_code(v, lookup)
        if code is not None:
            codes[i] = code
        elif type(v) is str:
            codes[i] = UNSEEN_CODE
            unseen.append((i, truncate(v)))
        else:
            codes[i] = MISSING_CODE
            problems.add(i, f"expected a string category, got {_json_type(v)}", v)
    return codes, problems, unseen
