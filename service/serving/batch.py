"""The batch: one request's rows as a decoder produced them, the one type the scorer scores.

A row is anything with `.get(column)` giving the raw JSON value of a column (None when absent). Two
decoders make batches (service/serving/decoding.py):

- `JsonBatch`: orjson's full decode, every row a dict with every key the client sent, so unknown keys
  are counted exactly;
- `ColumnBatch`: msgspec's decode of big bodies, every row a struct holding only the model's columns
  (the other keys were skipped unread, so they are counted only in rows read again, below).

Whatever made it, a batch answers the same questions: its length, one column's values, what its rows'
keys say (service/serving/row_keys.py: rows without a model column, keys resembling one, absent columns,
unknown keys), and its normalised cache key. Another wire format (CSV, the Open Inference Protocol's
tensors) is one more subclass; the scorer and the pipeline stay as they are.

Both batches tell an absent column from a null one. In a ColumnBatch an absent column holds `ABSENT`,
one NaN float object: the scorer reads it as missing like null, with no pass to replace it, and after
scoring only the rows the scorer read as missing are checked for it (`missing`). Those of its rows that
lack a model column are read again, whole, to see their keys.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import msgspec

from service.serving.cache import columns_key, normalised_key
from service.serving.row_keys import ColumnNames, KeyReport, inspect_rows

# An absent model column in a ColumnBatch row: this NaN (missing, as the scorer reads any NaN) and no other.
ABSENT = float("nan")
# The rows of one column that the scorer read as missing (null, absent, or a value it could not parse).
Missing = Callable[[str], Iterable[int]]


class Batch(ABC):
    """Rows to score. `single`: the request was one row in its one-row form (answered by one object)."""

    __slots__ = ("rows", "single")

    def __init__(self, rows: list[Any], single: bool = False) -> None:
        self.rows = rows
        self.single = single

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The raw values of one column, row by row (None where a row lacks it; ABSENT in a ColumnBatch)."""
        return [row.get(name) for row in self.rows]

    def passthrough(self, name: str) -> list[Any]:
        """The raw values of a pass-through id field, row by row (ABSENT where a row lacks it)."""
        return [row.get(name, ABSENT) for row in self.rows]

    def first_passthrough(self, name: str) -> Any:
        """The first row's value of a pass-through id field, as `passthrough(name)[0]` (the canary's key)."""
        return self.passthrough(name)[0]

    def parsed_numbers(self, name: str, fmt: str) -> Any:
        """A numeric column already parsed as `parse_numeric_column(self.column(name), fmt)` would parse it
        (its values and problems), or None: the scorer parses `column(name)` (every batch but the file
        scorer's Arrow one)."""
        return None

    def parsed_categories(self, name: str, lookup: dict[str, int]) -> Any:
        """A categorical column already parsed as `parse_category_column(self.column(name), lookup)`
        would parse it, or None (as `parsed_numbers`)."""
        return None

    @abstractmethod
    def inspect_keys(self, names: ColumnNames, missing: Missing | None = None) -> KeyReport | None:
        """What the rows' keys say; None when every row has every model column and no other key outside
        the input schema (as far as this batch can see). `missing`, once the batch is scored, narrows the
        rows that may lack a column to those the scorer read as missing."""

    @abstractmethod
    def normalised_key(self, model_sha: str) -> str | None:
        """The cache key of these rows whatever their bytes' whitespace and key order; None when the rows
        cannot be normalised (the raw-body key then stands for them)."""


class JsonBatch(Batch):
    """JSON objects as orjson decoded them (dicts, every key the client sent)."""

    __slots__ = ()
    rows: list[dict[str, Any]]

    def inspect_keys(self, names: ColumnNames, missing: Missing | None = None) -> KeyReport | None:
        rows = self.rows
        used, known = names.used_set, names.known
        if len(rows) == 1:  # the hot path: two subset tests, no set built
            keys = rows[0].keys()
            if keys >= used and keys <= known:
                return None
        elif all(row.keys() >= used for row in rows) and set().union(*rows) <= known:
            return None
        return inspect_rows(enumerate(rows), names)

    def normalised_key(self, model_sha: str) -> str | None:
        return normalised_key(model_sha, self.rows[0] if self.single else self.rows)

    def first_passthrough(self, name: str) -> Any:
        return self.rows[0].get(name, ABSENT)


class ColumnBatch(Batch):
    """Structs of the model's columns only (ColumnDecoder): every other key was skipped unread; an absent
    column holds ABSENT (`column()` gives it as is, `.get()` gives None).

    `reread(indices)` gives those rows again as JSON objects, with every key (the decoder reads the body
    again; once, in the first `inspect_keys`); without it, such rows are reported with the model columns
    they hold only.
    """

    __slots__ = ("reread",)
    rows: list[msgspec.Struct]

    def __init__(
        self,
        rows: list[Any],
        single: bool = False,
        reread: Callable[[list[int]], list[dict[str, Any]]] | None = None,
    ) -> None:
        super().__init__(rows, single)
        self.reread = reread

    def column(self, name: str) -> list[Any]:
        return list(map(attrgetter(name), self.rows))

    def passthrough(self, name: str) -> list[Any]:
        return self.column(name)  # the decoder holds the pass-through fields too (ABSENT when absent)

    def first_passthrough(self, name: str) -> Any:
        return getattr(self.rows[0], name)

    def inspect_keys(self, names: ColumnNames, missing: Missing | None = None) -> KeyReport | None:
        """Rows with every model column are clean (their other keys were never read). The others are read
        again whole: their keys are reported as a JsonBatch's are."""
        rows, reread = self.rows, self.reread
        self.reread = None  # lets the body go (it may be a joined copy of a big one) before the encode
        lacking: set[int] = set()
        for name in names.used:
            get = attrgetter(name)
            if missing is None:
                values = self.column(name)
                if ABSENT in values:  # identity first: no other NaN is equal to it
                    lacking.update(i for i, v in enumerate(values) if v is ABSENT)
            else:
                lacking.update(i for i in missing(name) if get(rows[i]) is ABSENT)
        if not lacking:
            return None
        indices = sorted(lacking)
        if reread is not None:
            return inspect_rows(zip(indices, reread(indices), strict=True), names)
        held = (msgspec.structs.asdict(rows[i]) for i in indices)
        seen = [{c: v for c, v in row.items() if v is not ABSENT} for row in held]
        return inspect_rows(zip(indices, seen, strict=True), names)

    def normalised_key(self, model_sha: str) -> str:
        """Only the model's columns, all that the answer depends on."""
        return columns_key(model_sha, self.rows)
