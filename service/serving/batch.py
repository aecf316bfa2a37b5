"""The batch: one request's rows as a decoder produced them, the one type the scorer scores.

A row is anything with `.get(column)` giving the raw JSON value of a column (None when absent). Two
decoders make batches (service/serving/decoding.py):

- `JsonBatch`: orjson's full decode, every row a dict with every key the client sent, so unknown keys
  are counted exactly;
- `ColumnBatch`: msgspec's decode of big bodies, every row a struct holding only the model's columns
  (the other keys were skipped unread, so they cannot be counted).

Whatever made it, a batch answers the same questions: its length, one column's values, how many rows
carried keys the model does not know, and its normalised cache key. Another wire format (CSV, the
Open Inference Protocol's tensors) is one more subclass; the scorer and the pipeline stay as they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from operator import attrgetter
from typing import Any

import msgspec

from service.serving.cache import columns_key, normalised_key


class Batch(ABC):
    """Rows to score. `single`: the request was one row in its one-row form (answered by one object)."""

    __slots__ = ("rows", "single")

    def __init__(self, rows: list[Any], single: bool = False) -> None:
        self.rows = rows
        self.single = single

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The raw values of one column, row by row (None where a row lacks it)."""
        return [row.get(name) for row in self.rows]

    def unknown_key_rows(self, known: frozenset[str]) -> int:
        """Rows that carry keys outside `known`; 0 where the decoder never saw the other keys."""
        return 0

    @abstractmethod
    def normalised_key(self, model_sha: str) -> str | None:
        """The cache key of these rows whatever their bytes' whitespace and key order; None when the rows
        cannot be normalised (the raw-body key then stands for them)."""


class JsonBatch(Batch):
    """JSON objects as orjson decoded them (dicts, every key the client sent)."""

    __slots__ = ()
    rows: list[dict[str, Any]]

    def unknown_key_rows(self, known: frozenset[str]) -> int:
        rows = self.rows
        if len(rows) == 1:  # the hot path: a subset test, no set built
            return 0 if rows[0].keys() <= known else 1
        if set().union(*rows) <= known:
            return 0
        return sum(1 for row in rows if not row.keys() <= known)

    def normalised_key(self, model_sha: str) -> str | None:
        return normalised_key(model_sha, self.rows[0] if self.single else self.rows)


class ColumnBatch(Batch):
    """Structs of the model's columns only (ColumnDecoder): every other key was skipped unread."""

    __slots__ = ()
    rows: list[msgspec.Struct]

    def column(self, name: str) -> list[Any]:
        return list(map(attrgetter(name), self.rows))

    def normalised_key(self, model_sha: str) -> str:
        """Only the model's columns, all that the answer depends on."""
        return columns_key(model_sha, self.rows)
