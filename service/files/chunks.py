"""One chunk of a file scored: parsed into the batch the HTTP doors make, scored by their scoring step, and
written as the output's bytes (or a pyarrow table), with every row that cannot be scored as a reject.

This runs in the scorer's worker processes (and on a cluster's workers): a `ChunkScorer` holds the
compiled model and what the run asked for, and is shipped to each worker once.

A CSV chunk is read as a /predict CSV body is (service/serving/csv_table.py), so a row gets the bits it
gets there: by pyarrow when the chunk is one it reads exactly the same (service/files/arrow_csv.py), else
by the door's own reading. A chunk that is not a table as a body must be (a row with more or fewer cells
than the header, bytes that are not UTF-8, a record that is not valid CSV) is read again record by
record: each such record is a reject naming its line, the others are scored. A JSON Lines chunk is one
JSON object a line, each read as a row of a /predict JSON body; a line that is not a JSON object is a
reject.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import InputError
from service.files.arrow_csv import ArrowCsvBatch, read_arrow_chunk
from service.files.encoding import Encoder, output_columns
from service.files.formats import FileKind, Format
from service.files.sources import Chunk, ParquetChunk, TextChunk, first_record_end
from service.serving.batch import Batch, JsonBatch
from service.serving.csv_rows import csv_batch_of
from service.serving.csv_table import BadCsvTable, MalformedCSV, Table, decode_text, read_table
from service.serving.pipeline import score_rows
from service.serving.reasons import Reasons
from service.serving.results import result_records
from service.serving.scorer import CompiledModel, Scored
from service.settings import PASSTHROUGH_MAX_CHARS

NO_LIMIT = 2**62


@dataclass(frozen=True)
class Reject:
    """A row that was not scored: its index among the file's data rows, its line (CSV, JSON Lines), and
    one of its problems (a row with several has several rejects)."""

    row: int
    line: int | None
    field: str | None
    reason: str
    value: str | None = None


@dataclass
class ChunkResult:
    records: int  # data rows read (scored or rejected)
    scored: int
    rejected_rows: int
    payload: Any  # bytes (CSV, JSON Lines; gzip members when gzipped) or a pyarrow.Table
    rejects: list[Reject] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # what the rows' keys said (unknown, imputed columns)
    unseen: dict[str, int] = field(default_factory=dict)


@dataclass
class _Rows:
    """A chunk as a batch, where each of its rows is (line, index among the chunk's records), and the
    records that were rejected before scoring."""

    batch: Batch | None
    line_of: Callable[[int], int | None]
    record_of: Callable[[int], int]
    records: int
    rejects: list[Reject]


def int_columns(model: CompiledModel) -> set[str]:
    """The output's whole-number columns: the dummies and business_outcome."""
    ints = set(model.output_keys) - {n.name for n in model.numeric} - {name for name, _, _ in model.products}
    return ints - {"phat"}


class ChunkScorer:
    """What each worker holds for a run: the model, the output's kind and what the run asked for."""

    def __init__(
        self,
        model: CompiledModel,
        output: FileKind,
        *,
        reasons: int = 0,
        reject_unseen: bool = False,
        passthrough_max_chars: int = PASSTHROUGH_MAX_CHARS,
    ) -> None:
        self.model = model
        self.output = output
        self.reasons = reasons
        self.reject_unseen = reject_unseen
        self.passthrough_max_chars = passthrough_max_chars
        self.columns = output_columns(model.output_keys, model.passthrough, reasons)
        self.encoder = Encoder(output, self.columns, model.passthrough, int_columns(model))
        self.wanted = {*model.used_columns, *model.passthrough}

    def __call__(self, chunk: Chunk) -> ChunkResult:
        rows = self.rows_of(chunk)
        batch = rows.batch
        if batch is None or not len(batch):
            return ChunkResult(
                rows.records, 0, len({r.row for r in rows.rejects}), self.encode(None, []), rows.rejects
            )
        scored, _ = score_rows(
            self.model,
            batch,
            reject_unseen=self.reject_unseen,
            reasons=self.reasons,
            passthrough_max_chars=self.passthrough_max_chars,
        )
        rejects = rows.rejects
        bad = scored.bad_rows
        if bad:
            rejects = sorted(
                [
                    *rejects,
                    *(
                        Reject(rows.record_of(e.row), rows.line_of(e.row), e.field, e.reason, e.value)
                        for e in scored.errors
                        if e.row is not None
                    ),
                ],
                key=lambda r: r.row,
            )
        keep = [i for i in range(len(batch)) if i not in bad] if bad else None
        return ChunkResult(
            records=rows.records,
            scored=len(batch) - len(bad),
            rejected_rows=len({r.row for r in rejects}),
            payload=self.encode(scored, keep),
            rejects=rejects,
            notes=dict(scored.notes),
            unseen=dict(scored.unseen),
        )

    # --- reading ------------------------------------------------------------------------------------------
    def rows_of(self, chunk: Chunk) -> _Rows:
        if isinstance(chunk, ParquetChunk):
            return self._parquet_rows(chunk)
        if chunk.format is Format.JSONL:
            return self._jsonl_rows(chunk)
        return self._csv_rows(chunk)

    def _csv_rows(self, chunk: TextChunk) -> _Rows:
        fast = read_arrow_chunk(chunk, self.wanted)
        if fast is not None:
            first = chunk.first_line
            return _Rows(
                csv_batch_of(self.model, fast, ArrowCsvBatch), lambda i: i + first, _same, fast.rows, []
            )
        read = read_csv_chunk(chunk)
        table = read.rows
        batch = csv_batch_of(self.model, table) if table.rows else None
        return _Rows(batch, read.line_of, read.record_of, read.records, read.rejects)

    def _jsonl_rows(self, chunk: TextChunk) -> _Rows:
        read = read_jsonl_chunk(chunk)
        batch = JsonBatch(read.rows) if read.rows else None
        return _Rows(batch, read.line_of, read.record_of, read.records, read.rejects)

    def _parquet_rows(self, chunk: ParquetChunk) -> _Rows:
        batch = chunk.batch
        read = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        header = list(chunk.names)
        table = Table(header=header, rows=batch.num_rows, _cells=lambda j: read.get(header[j], []))
        try:
            rows = csv_batch_of(self.model, table)
        except BadCsvTable as exc:
            raise InputError(exc.detail.replace("the header (line 1)", "the Parquet schema")) from None
        return _Rows(rows, _no_line, _same, batch.num_rows, [])

    # --- writing ------------------------------------------------------------------------------------------
    def encode(self, scored: Scored | None, keep: list[int] | None) -> Any:
        if scored is not None and keep is not None:
            scored = subset(scored, keep)
        if scored is None:
            return self.encoder.encode(None)
        jsonl = self.output.format is Format.JSONL
        return self.encoder.encode(self.values(scored), result_records(self.model, scored) if jsonl else ())

    def values(self, scored: Scored) -> dict[str, list[Any]]:
        values: dict[str, list[Any]] = {
            **scored.columns,
            "business_outcome": scored.outcome,
            "phat": scored.phat,
        }
        n = len(scored.phat)
        for name in self.model.passthrough:
            values[name] = scored.ids.get(name) or [None] * n
        if scored.reasons is not None:
            r: Reasons = scored.reasons
            for k in range(r.inputs.shape[1]):
                values[f"reason_{k + 1}_input"] = [r.names[j] for j in r.inputs[:, k].tolist()]
                values[f"reason_{k + 1}_contribution"] = r.contributions[:, k].tolist()
        return values

    def csv_header(self) -> bytes:
        return self.encoder.csv_header()

    def arrow_schema(self) -> Any:
        return self.encoder.arrow_schema()


@dataclass
class Read:
    """A text chunk read, not yet scored: its rows (a Table for CSV, JSON objects for JSON Lines), where
    each row is (its line, its index among the chunk's records), and the records that are not rows."""

    rows: Any
    line_of: Callable[[int], int]
    record_of: Callable[[int], int]
    records: int
    rejects: list[Reject]


def read_csv_chunk(chunk: TextChunk) -> Read:
    """The chunk as a /predict CSV body is read; one that is not a table as a body must be is read again
    record by record."""
    try:
        table = read_table(chunk.header + chunk.body, max_rows=NO_LIMIT, max_errors=NO_LIMIT)
    except (MalformedCSV, BadCsvTable):
        return _csv_one_by_one(chunk)
    offset = chunk.first_line - chunk.header_lines - 1
    return Read(table, lambda i: table.line_of(i) + offset, _same, table.rows, [])


def _csv_one_by_one(chunk: TextChunk) -> Read:
    """Record by record: those that are not rows of the header's table are rejects, the others a table."""
    text = decode_text(chunk.header).lstrip("\ufeff")
    header = next(r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r)
    ncols = len(header)
    body, pos, line = chunk.body, 0, chunk.first_line
    cells: list[list[str]] = []
    lines: list[int] = []
    records: list[int] = []
    rejects: list[Reject] = []
    index = 0
    while pos < len(body):
        end = first_record_end(body, pos)
        end = len(body) if end < 0 else end
        raw = body[pos:end]
        pos, start_line, line = end, line, line + raw.count(b"\n")
        if not raw.strip(b"\r\n"):
            continue  # a blank line: no record (as the csv module reads it)
        problem, record = _one_record(raw, ncols)
        if problem is not None:
            rejects.append(Reject(index, start_line, None, problem))
        else:
            cells.append(record)
            lines.append(start_line)
            records.append(index)
        index += 1
    table = Table(header=header, rows=len(cells), _cells=lambda j: [r[j] for r in cells], lines=lines)
    return Read(table, lines.__getitem__, records.__getitem__, index, rejects)


def read_jsonl_chunk(chunk: TextChunk) -> Read:
    """One JSON object a line; a line that is not one is a reject, a blank line no record."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    records: list[int] = []
    rejects: list[Reject] = []
    index = 0
    for n, raw in enumerate(chunk.body.split(b"\n"), start=chunk.first_line):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            rejects.append(Reject(index, n, None, f"not JSON: {exc}"))
        else:
            if type(row) is dict:
                rows.append(row)
                lines.append(n)
                records.append(index)
            else:
                shown = type(row).__name__ if row is not None else "null"
                rejects.append(Reject(index, n, None, f"a line must be one JSON object (a row), not {shown}"))
        index += 1
    return Read(rows, lines.__getitem__, records.__getitem__, index, rejects)


def _same(i: int) -> int:
    return i


def _no_line(i: int) -> None:
    return None


def _one_record(raw: bytes, ncols: int) -> tuple[str | None, list[str]]:
    """(why this record is not a row of the table, or None; its cells)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"not UTF-8 (byte {exc.start + 1} of the line: {raw[exc.start : exc.start + 1]!r}); "
            "write the file as UTF-8",
            [],
        )
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        return (
            f"not valid CSV ({exc}); quote a cell that holds a comma, a quote or a line break, and double "
            "a quote inside one",
            [],
        )
    if len(records) != 1:
        return "not valid CSV (a quoted cell is not closed on this record)", []
    record = records[0]
    if len(record) != ncols:
        return f"{len(record)} cell(s) where the header (line 1) has {ncols}", []
    return None, record


def subset(scored: Scored, keep: list[int]) -> Scored:
    """The scored rows `keep` (in order), as a Scored of their own: what the output writes."""

    def pick(values: list[Any]) -> list[Any]:
        return [values[i] for i in keep]

    reasons = None
    if scored.reasons is not None:
        r: Reasons = scored.reasons
        reasons = Reasons(r.inputs[keep], r.contributions[keep], r.names)
    return Scored(
        columns={name: pick(values) for name, values in scored.columns.items()},
        phat=pick(scored.phat),
        outcome=pick(scored.outcome),
        ids={name: pick(values) for name, values in scored.ids.items()},
        reasons=reasons,
    )
