"""MLflow's scoring protocol (the body of POST /invocations), as codecs of the scoring pipeline.

In, as MLflow's scoring server reads it (mlflow/pyfunc/scoring_server), application/json: an object with
exactly one of

- `dataframe_split`: {"columns": [...], "data": [[...], ...], "index": [...]?} (pandas orient "split",
  what mlflow's ScoringServerClient sends for a DataFrame);
- `dataframe_records`: [{column: value, ...}, ...] (pandas orient "records");
- `instances` / `inputs`: rows as records (a list of objects) or as columns ({column: [values]}; a column
  of one scalar each is one row);

and optionally `params` ({"reasons": k}: the top-k reason codes per row, or "all"; it wins over the
`reasons` query parameter and X-Reason-Codes). Every form becomes JSON objects, one per row, so the
/predict rules apply unchanged: row_keys.py refuses a row without the model's columns and keys that only
resemble one, bare NaN is null, bare Infinity a 422 naming row and field, a BOM is skipped. text/csv is
read by the CSV reader of /predict (service/serving/csv_rows.py).

Out: {"predictions": [one record per row]}, each exactly the row's /predict result (results.py), so the
bits of phat are the same through both doors. A batch with a row that cannot be scored is refused whole
(422 naming every row, field and reason), whatever PROPENSITY_BATCH_ERROR_POLICY says: MLflow's clients
read `predictions` as one frame and have no slot for a row's errors.

Shapes MLflow refuses or misreads are 4xx whose detail names the fix (a bare pandas `to_json` of any
orient, rows without column names, a dict of dicts), never a 200 of imputed rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from service.errors import (
    BadBodyShape,
    FieldError,
    InputError,
    MalformedJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from service.model.parsing import truncate
from service.serving.batch import ABSENT, Batch, JsonBatch, Missing
from service.serving.cache import normalised_key
from service.serving.csv_rows import CsvBatch, check_csv_media_type, located_error, read_csv_batch
from service.serving.decoding import INFINITY_REASON, bare_tokens, rewritten, skip_bom
from service.serving.json_rows import dumps_rows
from service.serving.pipeline import rows_error
from service.serving.reasons import top_reasons
from service.serving.results import result_records
from service.serving.row_keys import ColumnNames, KeyReport, inspect_rows
from service.serving.scorer import CompiledModel, Scored
from service.serving.turns import no_pause

SPLIT, RECORDS, INSTANCES, INPUTS = "dataframe_split", "dataframe_records", "instances", "inputs"
FORMATS = (SPLIT, RECORDS, INSTANCES, INPUTS)
PARAMS = "params"
REASONS = "reasons"
JSON_TYPE, CSV_TYPE, PARQUET_TYPE = "application/json", "text/csv", "application/vnd.apache.parquet"

FIX = (
    'send {"dataframe_split": DataFrame.to_dict(orient="split")} or '
    '{"dataframe_records": DataFrame.to_dict(orient="records")}'
)
ENVELOPE = f"an MLflow scoring body is a JSON object with exactly one of {', '.join(map(repr, FORMATS))}"
NEEDS_COLUMNS = (
    "rows given as arrays of values carry no column names, and the model reads its columns by name; "
    'send {"dataframe_split": {"columns": [...], "data": [[...], ...]}} or rows as objects'
)
SPLIT_KEYS = frozenset(("columns", "data", "index"))
NOT_NAMES = "dataframe_split.columns is an array of column names (strings)"
STRINGS = frozenset((str,))
# A bare Infinity becomes this string (NUL first: no value a client means), then is reported by row and field.
_INFINITY = {"\x00Infinity": "Infinity", "\x00-Infinity": "-Infinity"}


class BadParams(InputError):
    """`params` that this model does not take (the same kind as a bad `reasons` query parameter)."""

    status = 422
    kind = "bad-option"
    title = "Invalid request option"


class MlflowRows(JsonBatch):
    """Rows sent as JSON objects (dataframe_records, instances / inputs as records) and the reason codes
    the body's `params` asked for (None: not asked there)."""

    __slots__ = ("reasons",)

    def __init__(self, rows: list[dict[str, Any]], reasons: int | None = None) -> None:
        super().__init__(rows)
        self.reasons = reasons

    def normalised_key(self, model_sha: str) -> str | None:
        key = super().normalised_key(model_sha)
        return key if key is None or self.reasons is None else f"{key}:p{self.reasons}"


@dataclass(frozen=True)
class Columns:
    """Rows sent column by column (dataframe_split, instances / inputs as {column: [values]}): every row
    has the keys of `names`; `values` holds the columns that are read (the model's, the pass-through
    ids), a list of `n` values each."""

    names: Mapping[str, Any]
    values: dict[str, list[Any]]
    n: int


Rows = list[dict[str, Any]] | Columns  # a form's rows: JSON objects, or columns


class MlflowColumns(Batch):
    """Rows sent by columns: the columns the model reads (and the ids), as sent; every row has the same
    keys, so what they say is worked out once, and the columns it does not read are never copied."""

    __slots__ = ("_names", "_values", "reasons")

    def __init__(self, columns: Columns, reasons: int | None = None) -> None:
        # The rows, as the few-rows scorer and error echoes read them: objects of the columns read only.
        read = list(columns.values)
        rows = [dict(zip(read, r, strict=True)) for r in zip(*columns.values.values(), strict=True)]
        super().__init__(rows if read else [{} for _ in range(columns.n)])
        self._names = columns.names
        self._values = columns.values
        self.reasons = reasons

    def column(self, name: str) -> list[Any]:
        values = self._values.get(name)
        return list(values) if values is not None else [None] * len(self.rows)

    def passthrough(self, name: str) -> list[Any]:
        values = self._values.get(name)
        return list(values) if values is not None else [ABSENT] * len(self.rows)

    def inspect_keys(self, names: ColumnNames, missing: Missing | None = None) -> KeyReport | None:
        keys = self._names.keys()
        if keys >= names.used_set and keys <= names.known:
            return None
        shape = dict.fromkeys(self._names)  # every row's keys (only keys are inspected)
        return inspect_rows(((i, shape) for i in range(len(self.rows))), names)

    def normalised_key(self, model_sha: str) -> str | None:
        """Every column name and the columns read: all the answer and its headers depend on."""
        key = normalised_key(model_sha, [list(self._names), self._values])
        return key if key is None or self.reasons is None else f"{key}:p{self.reasons}"


# --- media types ----------------------------------------------------------------------------------------
def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """(the media type in lower case, its parameters with lower-case names)."""
    media, _, rest = (content_type or "").partition(";")
    params: dict[str, str] = {}
    for pair in rest.split(";"):
        name, _, value = pair.partition("=")
        if name.strip():
            params[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def check_parameters(media: str, params: dict[str, str]) -> None:
    """UTF-8 only; the MLflow 1.x `format` parameter is named as such; other parameters are refused, as
    MLflow's server refuses them."""
    charset = params.pop("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"/invocations reads UTF-8 only; got charset {charset[:40]!r}")
    if "format" in params:
        raise UnsupportedMediaType(
            f"Content-Type parameter format={params['format'][:40]!r} is MLflow 1.x's scoring protocol; "
            f"send Content-Type: {media} without it and {FIX}"
        )
    if params:
        raise UnsupportedMediaType(
            f"unrecognised Content-Type parameter(s): {', '.join(sorted(params))[:80]}; only charset is read"
        )


# --- the JSON body ----------------------------------------------------------------------------------------
def load_json(data: bytes) -> Any:
    """The body's JSON value: bare NaN read as null, a bare Infinity as its marker string (reported once the
    rows are known); 400 for anything else orjson refuses."""
    data = skip_bom(data)
    if not data.strip():
        raise MalformedJSON(f"the request body is empty; {ENVELOPE}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        error = exc
    tokens = bare_tokens(data)
    if tokens:
        try:
            return orjson.loads(rewritten(data, tokens))
        except orjson.JSONDecodeError as again:
            error = again
    raise MalformedJSON(f"the body is not valid JSON (orjson: {str(error)[:200]}); {ENVELOPE}")


def _infinities(batch: Batch, read: tuple[str, ...], max_errors: int) -> InputError | None:
    """The 422 for bare Infinity values in the columns that are read (each row and field), else None."""
    errors: list[FieldError] = []
    bad: set[int] = set()
    for name in read:
        for i, value in enumerate(batch.column(name)):
            if type(value) is str and value in _INFINITY:
                errors.append(FieldError(i, name, INFINITY_REASON, _INFINITY[value]))
                bad.add(i)
    if not errors:
        return None
    errors.sort(key=lambda e: (e.row or 0, read.index(e.field or "")))
    first = errors[0]
    return InputError(
        f"{len(errors)} bare Infinity value(s) cannot be scored; first: row {first.row}, field "
        f"{first.field}; send a finite number, or null for a missing value",
        errors=errors[:max_errors],
        error_count=len(errors),
        bad_rows=sorted(bad)[:max_errors],
        bad_row_count=len(bad),
    )


def _keys(value: dict[str, Any], limit: int = 5) -> str:
    shown = ", ".join(repr(truncate(k)) for k in list(value)[:limit])
    return shown + (f" and {len(value) - limit} more" if len(value) > limit else "")


def array_hint(body: list[Any]) -> str:
    """What a JSON array sent to /invocations probably is, and its fix."""
    if body and all(type(r) is dict for r in body[:3]):
        return (
            'this is an array of rows (pandas to_json(orient="records")): wrap it as '
            '{"dataframe_records": [...]}, or POST the array to /predict as it is'
        )
    if body and all(type(r) is list for r in body[:3]):
        return f'this is an array of arrays (pandas to_json(orient="values")): {NEEDS_COLUMNS}'
    return FIX


def object_hint(body: dict[str, Any], used: frozenset[str]) -> str:
    """What an object without an MLflow format key probably is, and its fix."""
    if "columns" in body and "data" in body:
        return 'this is pandas to_json(orient="split"): send it wrapped, as {"dataframe_split": <it>}'
    if "schema" in body and "data" in body:
        return f'this is pandas to_json(orient="table"); {FIX}'
    values = list(body.values())
    if any(k in used for k in body):
        if values and all(type(v) is dict for v in values):
            return f'this looks like pandas to_json(orient="columns") (each column an object); {FIX}'
        return 'this is one row: send it as {"dataframe_records": [<the row>]}, or POST it to /predict'
    if values and all(type(v) is dict and not used.isdisjoint(v) for v in values):
        return f'this looks like pandas to_json(orient="index") (rows keyed by index); {FIX}'
    return FIX


def envelope_of(body: Any, used: frozenset[str]) -> tuple[str, Any, Any]:
    """(format key, its value, params) of an MLflow body; 422 naming the fix for any other JSON value."""
    if type(body) is list:
        raise BadBodyShape(f"{ENVELOPE}; got an array: {array_hint(body)}")
    if type(body) is not dict:
        raise BadBodyShape(f"{ENVELOPE}; got a JSON {type(body).__name__}; {FIX}")
    present = [k for k in FORMATS if k in body]
    if len(present) > 1:
        raise BadBodyShape(f"{ENVELOPE}; got {', '.join(map(repr, present))}: send only one of them")
    if not present:
        got = f"its keys: {_keys(body)}" if body else "the object is empty"
        raise BadBodyShape(f"{ENVELOPE}; {got}; {object_hint(body, used)}")
    return present[0], body[present[0]], body.get(PARAMS)


def reasons_param(params: Any, inputs: int) -> int | None:
    """The reason codes `params` asks for: None when it does not say; "all" or more than the model's inputs
    give every input."""
    if params is None:
        return None
    if type(params) is not dict:
        raise BadParams(f'params must be a JSON object such as {{"reasons": 3}}; got {type(params).__name__}')
    unknown = [k for k in params if k != REASONS]
    if unknown:
        raise BadParams(f"this model takes one param, 'reasons' (reason codes per row); got {_keys(params)}")
    value = params.get(REASONS)
    if value is None:
        return None
    if value == "all":
        return inputs
    if type(value) is not int or value < 0:
        raise BadParams(
            f"params.reasons must be a whole number of reason codes per row (0 to {inputs}) or 'all'; "
            f"got {truncate(value)}",
            option="reasons",
        )
    return min(value, inputs)


# --- the four forms, each to JSON objects ----------------------------------------------------------------
def _row_errors(errors: list[FieldError], what: str, max_errors: int, hint: str = "") -> BadBodyShape:
    return BadBodyShape(
        f"{len(errors)} {what}; first: row {errors[0].row}: {errors[0].reason}"
        + (f"; {hint}" if hint else ""),
        errors=errors[:max_errors],
        error_count=len(errors),
    )


def inner_hint(value: Any) -> str:
    """What the value of a format key holds when it is not that format, and the fix."""
    if type(value) is list:
        if value and all(type(r) is dict for r in value[:3]):
            return 'send rows as objects in {"dataframe_records": [...]}'
        if value and all(type(r) is list for r in value[:3]):
            return NEEDS_COLUMNS
    elif type(value) is dict:
        if "columns" in value and "data" in value:
            return 'this is a pandas "split" object: send it as {"dataframe_split": <it>}'
        if "schema" in value and "data" in value:
            return f'this is pandas to_json(orient="table"); {FIX}'
        if value and all(type(v) is dict for v in value.values()):
            return f"this is pandas to_json(orient='columns') or 'index' (an object per column or row); {FIX}"
    return FIX


def _split_parts(value: Any) -> tuple[list[str], list[Any]]:
    """dataframe_split's columns and data, their shapes checked (not yet its rows')."""
    shape = 'dataframe_split is an object {"columns": [...], "data": [[...], ...], "index": [...]?}'
    if type(value) is not dict:
        kind = "an array" if type(value) is list else type(value).__name__
        raise BadBodyShape(f"{shape}; got {kind}; {inner_hint(value)}")
    if not (value.keys() <= SPLIT_KEYS and "data" in value and "columns" in value):
        if "index_names" in value:
            hint = "DataFrame.to_dict(orient='tight') is not read: use orient='split'"
        elif "data" in value and "columns" not in value and "schema" not in value:
            hint = NEEDS_COLUMNS
        else:
            hint = inner_hint(value)
        raise BadBodyShape(f"{shape}; got keys {_keys(value, 8)}; {hint}")
    columns, data, index = value["columns"], value["data"], value.get("index")
    if type(columns) is not list:  # that they are strings is checked once they are keys (split_columns)
        raise BadBodyShape(NOT_NAMES)
    if type(data) is not list:
        raise BadBodyShape(
            "dataframe_split.data is an array of rows, each an array of values in column order"
        )
    if index is not None and (type(index) is not list or len(index) != len(data)):
        raise BadBodyShape(
            f"dataframe_split.index, when sent, is an array of {len(data)} labels, one per row"
        )
    return columns, data


def split_columns(value: Any, read: tuple[str, ...], names: ColumnNames, max_errors: int) -> Rows:
    """dataframe_split: {"columns", "data", "index"?} -> its columns, or one row as an object (the index is
    not read: the predictions come in the rows' order)."""
    columns, data = _split_parts(value)
    width = len(columns)
    if not all(type(r) is list and len(r) == width for r in data):
        expected = f"a row of dataframe_split.data is an array of {width} values (one per column), got"
        errors = [
            FieldError(i, None, f"{expected} {len(r) if type(r) is list else type(r).__name__}")
            for i, r in enumerate(data)
            if type(r) is not list or len(r) != width
        ]
        raise _row_errors(errors, "row(s) of dataframe_split.data do not match its columns", max_errors)
    one = len(data) == 1  # the single-row call: its one object is the cheapest way to score it
    try:
        keyed = dict(zip(columns, data[0] if one else range(width), strict=True))
    except TypeError:  # a name that is an array or an object
        raise BadBodyShape(NOT_NAMES) from None
    if not keyed.keys() <= names.known and not STRINGS.issuperset(map(type, columns)):  # known: strings
        raise BadBodyShape(NOT_NAMES)
    if len(keyed) != width:  # a name given twice: which of its columns is meant?
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise BadBodyShape(f"dataframe_split.columns names a column twice: {', '.join(map(repr, twice[:5]))}")
    if one:
        return [keyed]
    values = {c: list(map(itemgetter(keyed[c]), data)) for c in read if c in keyed}
    return Columns(keyed, values, len(data))


def record_rows(key: str, value: list[Any], max_errors: int) -> list[dict[str, Any]]:
    """A list of rows: each must be an object (a row of bare values has no column names)."""
    errors = [
        FieldError(i, None, f"a row is an object keyed by column name, got {type(r).__name__}")
        for i, r in enumerate(value)
        if type(r) is not dict
    ]
    if errors:
        arrays = all(type(r) in (list, dict) for r in value)
        raise _row_errors(
            errors, f"element(s) of {key} are not objects", max_errors, NEEDS_COLUMNS if arrays else ""
        )
    return value


def by_columns(key: str, value: dict[str, Any], read: tuple[str, ...]) -> Columns:
    """{column: [values]} -> its columns; {column: scalar, ...} is one row."""
    kinds = {type(v) for v in value.values()}
    if list not in kinds:  # one row: a scalar (or a value the scorer reports) per column
        return Columns(value, {c: [value[c]] for c in read if c in value}, 1)
    if kinds != {list}:
        scalars = [k for k, v in value.items() if type(v) is not list]
        raise BadBodyShape(
            f"{key} by columns holds an array of values per column; {', '.join(map(repr, scalars[:5]))} "
            "hold one value: send [value] for a column of one row"
        )
    lengths = {k: len(v) for k, v in value.items()}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        other = next(k for k, n in lengths.items() if n != lengths[first])
        raise BadBodyShape(
            f"the columns of {key} have different lengths: {first!r} has {lengths[first]} values, "
            f"{other!r} has {lengths[other]}; every column holds one value per row"
        )
    return Columns(value, {c: value[c] for c in read if c in value}, next(iter(lengths.values())))


def form_batch(key: str, value: Any, read: tuple[str, ...], names: ColumnNames, max_errors: int) -> Rows:
    """The rows of one of the four forms: JSON objects, or columns."""
    if key == SPLIT:
        return split_columns(value, read, names, max_errors)
    if type(value) is list:
        return record_rows(key, value, max_errors)
    if key == RECORDS:
        got = "an object" if type(value) is dict else type(value).__name__
        raise BadBodyShape(f"dataframe_records is an array of row objects; got {got}; {inner_hint(value)}")
    if type(value) is dict:
        hint = inner_hint(value)
        if hint != FIX:
            raise BadBodyShape(
                f"{key} holds rows (an array of objects) or columns ({{column: [values]}}); {hint}"
            )
        return by_columns(key, value, read)
    raise BadBodyShape(
        f"{key} holds rows (an array of objects) or columns ({{column: [values]}}); "
        f"got {type(value).__name__}; {FIX}"
    )


class MlflowJson:
    """The application/json body of /invocations."""

    media_type = JSON_TYPE
    key_suffix = ":mlflow"

    def __init__(self, *, max_rows: int, max_errors: int) -> None:
        self.max_rows = max_rows
        self.max_errors = max_errors

    def check_media_type(self, content_type: str | None) -> None:
        media, params = media_type(content_type)
        if media == JSON_TYPE:
            check_parameters(media, params)
            return
        accepted = (
            f"/invocations reads {JSON_TYPE} (an MLflow scoring body) or {CSV_TYPE} (a header row first)"
        )
        if media == PARQUET_TYPE:
            raise UnsupportedMediaType(f"Parquet bodies are not read here; {accepted}")
        raise UnsupportedMediaType(f"{accepted}; got Content-Type {(media or 'none')[:60]!r}")

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = no_pause) -> Batch:
        key, value, params = envelope_of(load_json(data), model.names.used_set)
        reasons = reasons_param(params, len(model.features))
        read = (*model.used_columns, *model.passthrough)
        form = form_batch(key, value, read, model.names, self.max_errors)
        n = form.n if isinstance(form, Columns) else len(form)
        if not n:
            raise BadBodyShape(f"{key} holds no rows; send 1 to {self.max_rows} rows")
        if n > self.max_rows:
            raise PayloadTooLarge(
                f"{n} rows exceed the limit of {self.max_rows} rows per request; split the batch",
                max_rows=self.max_rows,
            )
        batch = MlflowColumns(form, reasons) if isinstance(form, Columns) else MlflowRows(form, reasons)
        if b"Infinity" in data:  # only such a body can hold an Infinity marker
            infinity = _infinities(batch, read, self.max_errors)
            if infinity is not None:
                raise infinity
        return batch

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = no_pause
    ) -> bytes:
        return encode_predictions(model, batch, scored, self.max_errors, pause)


def encode_predictions(
    model: CompiledModel, batch: Batch, scored: Scored, max_errors: int, pause: Callable[[], None] = no_pause
) -> bytes:
    """{"predictions": [...]}: each row's /predict result; a row that cannot be scored refuses the batch."""
    if scored.bad_rows:
        raise rows_error(scored.errors, scored.bad_rows, len(batch), max_errors)
    asked = getattr(batch, "reasons", None)
    if asked is not None:  # the body's params say: they win over the query parameter and header
        scored.reasons = top_reasons(model, scored, asked) if asked else None
    return b'{"predictions":' + dumps_rows(result_records(model, scored), pause=pause) + b"}"


class MlflowCsv:
    """A text/csv body of /invocations: a header row, then one row per line, read as /predict reads CSV
    (service/serving/csv_rows.py); answered as the JSON body is. One per call: it keeps the batch it read,
    so that `located` names the CSV line and column of each error."""

    media_type = JSON_TYPE
    key_suffix = ":mlflow-csv"

    def __init__(self, *, max_rows: int, max_errors: int) -> None:
        self.max_rows = max_rows
        self.max_errors = max_errors
        self.batch: CsvBatch | None = None

    def check_media_type(self, content_type: str | None) -> None:
        check_csv_media_type(content_type)

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = no_pause) -> Batch:
        self.batch = read_csv_batch(model, data, self.max_rows, self.max_errors, pause)
        return self.batch

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = no_pause
    ) -> bytes:
        return encode_predictions(model, batch, scored, self.max_errors, pause)

    def located(self, error: InputError) -> InputError:
        """`error` naming the CSV line and column of each row and field it names."""
        return error if self.batch is None else located_error(error, self.batch)
