"""A CSV column held as an Arrow string array, parsed with Arrow's kernels to exactly what
service/model/parsing.py gives for the same strings (the file scorer's CSV fast path, no Python string a
cell).

Numbers. A value spelled exactly like a missing token ("", "nan", "NULL", ...) is NaN, as `_parse_text`
says first of all. Every other value takes the notebook's rule for its format (money: ASCII whitespace
trimmed, the accounting "(...)" -> "-...", every "$" and "," dropped; percent: trimmed, one trailing "%"
dropped) and is cast by Arrow when the text is in the strict grammar: ASCII digits, one optional sign, an
optional decimal point, an optional exponent, nothing else. On that grammar Python's float() and Arrow's
cast (fast_float) read the same decimal number and both round it correctly to the nearest double (ties to
even), so the bits are float()'s. Whether every text of the column is in the grammar is first asked of
the whole column at once (only the grammar's characters, and a cast that succeeds: fast_float takes no
other text made of them); a column that fails is matched value by value (RE2). A value outside the grammar
(a bad value, a missing value spelled another way, whitespace inside), or one whose number is not finite,
is parsed by `parse_numeric_column` itself, which gives its value or its problem. tests/unit/files holds
this module to `parse_numeric_column` on values of every kind.

Categories: the distinct strings of the column are looked up once each (`parse_category_column`) and the
codes spread back to the rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.model.parsing import (
    ASCII_WHITESPACE,
    MISSING_SPELLINGS,
    UNSEEN_CODE,
    ColumnProblems,
    parse_category_column,
    parse_numeric_column,
)
from service.model.schema import MONEY, PERCENT

# Arrays cross between numpy and Arrow by their buffers: pa.array(), pa.scalar() and to_numpy() import
# pandas (150 ms of every run's start-up, 50 MB a process) to ask whether the object is a pandas one.


def string_array(values: list[str]) -> pa.Array:
    """The strings as an Arrow string array."""
    data = [v.encode() for v in values]
    ends = np.cumsum([0, *map(len, data)], dtype=np.int32)
    buffers = [None, pa.py_buffer(ends), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def _index_array(rows: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(pa.int64(), rows.size, [None, pa.py_buffer(rows.astype(np.int64))])


def _numpy(array: Any, dtype: Any) -> np.ndarray:
    """A fixed-width Arrow array without nulls as a numpy array (a copy: the result is written to)."""
    assert array.null_count == 0
    return np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset : array.offset + len(array)].copy()


def _bools(array: Any) -> np.ndarray:
    """A boolean Arrow array without nulls (bit-packed, least significant bit first) as numpy bools."""
    assert array.null_count == 0
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(bool)


_MISSING = string_array(list(MISSING_SPELLINGS))
_ZERO = string_array(["0"])[0]
_GRAMMAR_BYTES = b"0123456789.eE+-"
STRICT_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def _number_texts(raw: pa.Array, fmt: str) -> pa.Array:
    """What `_number_text` makes of each value (for the values in the grammar afterwards: those of
    others may differ, they are parsed by the per-value parser)."""
    if fmt == MONEY:
        text = pc.utf8_trim(raw, ASCII_WHITESPACE)
        text = pc.replace_substring_regex(text, r"^\((.*)\)$", r"-\1")
        return pc.replace_substring_regex(text, r"[$,]", "")
    if fmt == PERCENT:
        return pc.replace_substring_regex(pc.utf8_trim(raw, ASCII_WHITESPACE), r"%$", "")
    return raw


def _only_grammar_bytes(text: pa.Array) -> bool:
    """No byte of the array's text is outside the strict grammar's characters."""
    _, offsets, data = text.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    used = memoryview(data)[int(ends[0]) : int(ends[-1])]
    return not bytes(used).translate(None, _GRAMMAR_BYTES)


def _cast(text: pa.Array) -> np.ndarray | None:
    try:
        return _numpy(pc.cast(text, pa.float64()), np.float64)
    except pa.ArrowInvalid:
        return None


def parse_numbers(raw: pa.Array, fmt: str) -> tuple[np.ndarray, ColumnProblems]:
    """`parse_numeric_column(raw.to_pylist(), fmt)`, bit for bit, problems included."""
    missing = pc.is_in(raw, value_set=_MISSING)
    text = pc.if_else(missing, _ZERO, _number_texts(raw, fmt))
    values = _cast(text) if _only_grammar_bytes(text) else None
    if values is None:  # some text is not a number of the grammar: which ones, value by value
        ok = pc.match_substring_regex(text, STRICT_NUMBER)
        values = _cast(pc.if_else(ok, text, _ZERO))
        assert values is not None, "a text of the strict grammar that Arrow does not cast"
        exact = ~_bools(ok)
    else:
        exact = np.zeros(len(raw), dtype=bool)
    is_missing = _bools(missing)
    values[is_missing] = np.nan
    exact |= np.isinf(values)
    exact &= ~is_missing
    problems = ColumnProblems()
    if exact.any():  # parsed by the parser itself: its value, or its problem
        rows = np.flatnonzero(exact)
        parsed, found = parse_numeric_column(raw.take(_index_array(rows)).to_pylist(), fmt)
        values[rows] = parsed
        problems.items = [(int(rows[i]), reason, value) for i, reason, value in found.items]
    return values, problems


def parse_categories(
    raw: pa.Array, lookup: dict[str, int]
) -> tuple[np.ndarray, ColumnProblems, list[tuple[int, str]]]:
    """`parse_category_column(raw.to_pylist(), lookup)`: each distinct string looked up once."""
    encoded: Any = pc.dictionary_encode(raw)
    levels, problems, unseen_levels = parse_category_column(encoded.dictionary.to_pylist(), lookup)
    indices = _numpy(encoded.indices, np.int32)
    codes = levels[indices]
    unseen: list[tuple[int, str]] = []
    if unseen_levels:
        shown = dict(unseen_levels)
        unseen = [(i, shown[int(indices[i])]) for i in np.flatnonzero(codes == UNSEEN_CODE).tolist()]
    return codes, problems, unseen
