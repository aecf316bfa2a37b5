"""A row's keys against the served model's columns: what is refused, what is only reported.

- A row with none of the model's columns as a key (`{}`, `{"data": {...}}`, a pandas orient other than
  records) is refused: every input would be imputed, a plausible wrong answer. The reason names the keys
  it has, the fix when the shape is recognisable, and the columns a row holds.
- A key that is not a model column but spells one after NFKC, case-folding and dropping whitespace, "_"
  and "-" (`X5`, ` x12`, `x_12`) is refused where that column is absent (it would be imputed), naming
  the column it resembles; beside the column itself it is only an unknown key.
- A model column that is absent is imputed (null or absent is the documented "missing"), and reported.
- Any other key outside the input schema is ignored, and reported.

Only rows that are not clean (a key outside the schema, a model column absent) get here: the batches
check the clean case first (service/serving/batch.py). Headers name what was reported, bounded.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import Any
from urllib.parse import quote

from service.errors import FieldError
from service.model.parsing import truncate

KEYS_NAMED = 5  # keys of a refused row named in its reason
HEADER_ITEMS = 10  # items named in one response header
_DROPPED = str.maketrans("", "", "_- \t\n\r\x0b\x0c")
# Bodies of other scoring protocols: named in the hint, which must stay true when /predict is the wrong
# door for them whatever other doors exist.
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _fold(key: str) -> str:
    return unicodedata.normalize("NFKC", key).casefold().translate(_DROPPED)


_fold_short = lru_cache(maxsize=4096)(_fold)  # the keys of a batch's rows repeat row after row


def fold_key(key: str) -> str:
    """A key as near misses are matched: NFKC, case-folded, without whitespace, "_" and "-"."""
    return _fold_short(key) if len(key) <= 64 else _fold(key)  # long keys are not kept


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class ColumnNames:
    """The served model's raw columns (`used`), the input schema's (`known`, a superset), and the folded
    spelling of each used column."""

    used: tuple[str, ...]
    known: frozenset[str]
    used_set: frozenset[str] = field(init=False)
    resembling: dict[str, str] = field(init=False)
    ordered: tuple[str, ...] = field(init=False)  # `used` in natural order: x5 before x12
    near_miss: dict[str, str] = field(init=False)  # column -> the reason for a key resembling it
    expected: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "used_set", frozenset(self.used))
        object.__setattr__(self, "known", self.known | self.used_set)
        resembling: dict[str, str] = {}
        for column in self.used:
            resembling.setdefault(fold_key(column), column)
        object.__setattr__(self, "resembling", resembling)
        near_miss = {
            c: f"not a column of the model, but it resembles {c!r}: keys are spelled exactly (case, spaces, "
            f"'_'); send it as {c!r}"
            for c in self.used
        }
        object.__setattr__(self, "near_miss", near_miss)
        object.__setattr__(self, "ordered", tuple(sorted(self.used, key=_natural)))
        shown = ", ".join(self.ordered)
        object.__setattr__(self, "expected", f"a row is an object with the model's columns as keys: {shown}")


@dataclass
class KeyReport:
    """What the keys of a batch's rows say beyond their values.

    `errors` / `bad_rows`: rows with none of the model's columns, keys that resemble a column.
    `unknown`: distinct keys outside the input schema, in the order first seen; `unknown_rows` rows with one.
    `imputed`: model column -> rows that lack it (among rows with a model column); `imputed_rows` such rows.
    """

    errors: list[FieldError] = field(default_factory=list)
    bad_rows: set[int] = field(default_factory=set)
    unknown: dict[str, None] = field(default_factory=dict)
    unknown_rows: int = 0
    imputed: dict[str, int] = field(default_factory=dict)
    imputed_rows: int = 0

    def headers(self) -> dict[str, str]:
        """X-Unknown-Keys and X-Imputed-Columns, for what there is to report."""
        out: dict[str, str] = {}
        if self.unknown:
            out["X-Unknown-Keys"] = listing(len(self.unknown), map(header_text, self.unknown))
        if self.imputed:
            counts = (f"{header_text(c)}={n}" for c, n in self.imputed.items())
            out["X-Imputed-Columns"] = f"{self.imputed_rows}; " + ",".join(counts)
        return out


def inspect_rows(rows: Iterable[tuple[int, dict[str, Any]]], names: ColumnNames) -> KeyReport:
    """The report over (row index, the row as a JSON object) pairs."""
    report = KeyReport()
    used, known, resembling = names.used_set, names.known, names.resembling
    for i, row in rows:
        unknown = [k for k in row if k not in known]
        if unknown:
            report.unknown_rows += 1
        near_misses = 0
        for key in unknown:
            column = resembling.get(fold_key(key))
            if column is None or column in row:  # beside the column itself it changes nothing
                report.unknown.setdefault(key)
                continue
            report.errors.append(FieldError(i, truncate(key), names.near_miss[column]))
            near_misses += 1
        if near_misses:
            report.bad_rows.add(i)
            continue
        if used.isdisjoint(row):
            report.errors.append(FieldError(i, None, no_columns_reason(row, names)))
            report.bad_rows.add(i)
            continue
        absent = [c for c in names.used if c not in row]
        if absent:
            report.imputed_rows += 1
            for column in absent:
                report.imputed[column] = report.imputed.get(column, 0) + 1
    report.imputed = {c: report.imputed[c] for c in names.ordered if c in report.imputed}
    return report


# --- hints: what a row without the model's columns was probably meant to be --------------------------------
def no_columns_reason(row: dict[str, Any], names: ColumnNames) -> str:
    if not row:
        return f"the row is empty, so every input would be imputed; {names.expected}"
    keys = [repr(truncate(k)) for k in list(row)[:KEYS_NAMED]]
    more = f" and {len(row) - KEYS_NAMED} more" if len(row) > KEYS_NAMED else ""
    hint = row_hint(row, names.used_set)
    return (
        f"none of the model's columns is a key of this row (its keys: {', '.join(keys)}{more})"
        f"{'; ' + hint if hint else ''}; {names.expected}"
    )


def _holds_rows(value: Any, used: frozenset[str]) -> bool:
    """An object with a model column as a key, or an array whose first objects have one."""
    if type(value) is dict:
        return not used.isdisjoint(value)
    if type(value) is list:
        return any(type(v) is dict and not used.isdisjoint(v) for v in value[:3])
    return False


def _is_v2_inputs(value: Any) -> bool:
    return type(value) is list and bool(value) and all(type(v) is dict and "name" in v for v in value[:3])


def row_hint(row: dict[str, Any], used: frozenset[str]) -> str:
    """The fix for a row that holds none of the model's columns, when its shape is recognisable; else ""."""
    records = "send DataFrame.to_json(orient='records'): an array of row objects"
    if "columns" in row and "data" in row:
        return f"this is pandas DataFrame.to_json(orient='split'); {records}"
    if "schema" in row and "data" in row:
        return f"this is pandas DataFrame.to_json(orient='table'); {records}"
    if _is_v2_inputs(row.get("inputs")):
        return (
            "this is an Open Inference Protocol (KServe V2) request: /predict takes the rows bare, "
            "not as named tensors in 'inputs'"
        )
    for key in MLFLOW_KEYS:
        if key in row:
            return (
                f"this is an MLflow scoring body ({key!r}): /predict takes the rows bare, not wrapped in "
                f"{key!r}; send one row object or an array of row objects"
            )
    values = list(row.values())
    if len(values) > 1 and all(_holds_rows(v, used) and type(v) is dict for v in values):
        return f"this looks like pandas DataFrame.to_json(orient='index') (rows keyed by index); {records}"
    for key, value in row.items():
        if _holds_rows(value, used):
            name = repr(truncate(key))
            return f"rows are sent bare, not wrapped in {name}: send the value of {name} itself"
    return ""


def columns_orient_hint(row: Any, used: Sequence[str]) -> str:
    """For a one-row body whose model columns hold objects: pandas orient='columns'; else ""."""
    objects = sum(1 for c in used if isinstance(row.get(c), dict))
    if objects and objects * 2 >= sum(1 for c in used if row.get(c) is not None):
        return (
            "this looks like pandas DataFrame.to_json(orient='columns') (each column an object of index "
            "-> value); send DataFrame.to_json(orient='records'): an array of row objects"
        )
    return ""


VALUES_ORIENT_HINT = (
    "rows are JSON objects keyed by column name; pandas DataFrame.to_json(orient='values') drops the "
    "names: send orient='records'"
)


# --- response headers ---------------------------------------------------------------------------------------
# Kept as they are: visible ASCII but the separators of these headers (",", ";", "=") and "%" itself.
_HEADER_SAFE = "!#$&'()*+/:<>?@[]^`{|}"


def header_text(text: str) -> str:
    """`text` cut to the length an error echoes, percent-encoded (UTF-8) outside visible ASCII and for
    , ; = % (a header value can carry any key or value a client sent)."""
    return quote(truncate(text), safe=_HEADER_SAFE)


def listing(count: int, items: Iterable[str]) -> str:
    """ "<count>; a,b,c": a count, then the first HEADER_ITEMS of `items` (header-safe already; a lazy
    iterable is consumed only that far)."""
    return f"{count}; " + ",".join(islice(items, HEADER_ITEMS))
