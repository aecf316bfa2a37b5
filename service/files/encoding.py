"""A scored chunk as the output's bytes (CSV, JSON Lines; gzip members when gzipped) or a pyarrow table.

The columns are given plainly (`values`: column name -> one value a row: the model inputs, business_outcome,
phat, the ids as sent, reason_<k>_input as names and reason_<k>_contribution): the local scorer takes them
from its Scored, the scorer that goes through a running service from the service's JSON answer; both
then write the same bytes. CSV numbers are written by orjson, as the JSON answer writes them (the shortest
text that reads back as the same double); text cells are quoted as RFC 4180 asks.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import Any

import orjson

from service.files.formats import FileKind, Format
from service.serving.csv_answer import id_cell, quoted, text_cell

GZIP_LEVEL = 6  # zlib's default: gzip's own command line's speed and size


def output_columns(output_keys: Iterable[str], passthrough: Iterable[str], reasons: int) -> list[str]:
    """The columns of a CSV or Parquet output, in alphabetical order as /predict's keys: the model inputs,
    business_outcome, phat, every pass-through id, and the reason codes when asked for."""
    names = [*output_keys, *passthrough]
    for k in range(1, reasons + 1):
        names += [f"reason_{k}_input", f"reason_{k}_contribution"]
    return sorted(names)


def is_absent(value: Any) -> bool:
    """None, or ABSENT (a NaN): the row has no such id."""
    return value is None or (isinstance(value, float) and value != value)


class Encoder:
    def __init__(
        self, output: FileKind, columns: list[str], passthrough: Iterable[str], ints: set[str]
    ) -> None:
        """`ints`: the columns of whole numbers (the dummies, business_outcome); the other numbers are
        float64, the ids and reason inputs text."""
        self.output = output
        self.columns = columns
        self.passthrough = tuple(passthrough)
        self.ints = ints

    def csv_header(self) -> bytes:
        return ",".join(map(quoted, self.columns)).encode() + b"\r\n"

    def finish(self, text: bytes) -> bytes:
        return gzip.compress(text, GZIP_LEVEL) if self.output.gzip and text else text

    def json_lines(self, records: Iterable[Any]) -> bytes:
        return self.finish(b"".join(orjson.dumps(r) + b"\n" for r in records))

    def csv_lines(self, values: dict[str, list[Any]]) -> bytes:
        cells = dict(values)
        for name in self.passthrough:
            cells[name] = list(map(id_cell, cells[name]))
        for name in self.columns:
            if name.endswith("_input"):
                cells[name] = list(map(text_cell, cells[name]))
        rows = zip(*(cells[c] for c in self.columns), strict=True)
        dumps = orjson.dumps
        return self.finish(b"".join(dumps(row)[1:-1] + b"\r\n" for row in rows))

    def table(self, values: dict[str, list[Any]] | None) -> Any:
        import pyarrow as pa

        schema = self.arrow_schema()
        if values is None:
            return schema.empty_table()
        arrays = []
        for f in schema:
            column = values[f.name]
            if f.name in self.passthrough:
                column = [None if is_absent(v) else str(v) for v in column]
            arrays.append(pa.array(column, type=f.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def arrow_schema(self) -> Any:
        import pyarrow as pa

        fields = []
        for name in self.columns:
            if name in self.passthrough or name.endswith("_input"):
                kind = pa.string()
            elif name in self.ints:
                kind = pa.int64()
            else:
                kind = pa.float64()
            fields.append(pa.field(name, kind))
        return pa.schema(fields)

    def encode(self, values: dict[str, list[Any]] | None, records: Iterable[Any] = ()) -> Any:
        """The payload of a chunk: `records` for JSON Lines (each row's /predict result), `values` for
        CSV and Parquet; None for a chunk with no scored row."""
        fmt = self.output.format
        if fmt is Format.PARQUET:
            return self.table(values)
        if values is None:
            return b""
        return self.json_lines(records) if fmt is Format.JSONL else self.csv_lines(values)
