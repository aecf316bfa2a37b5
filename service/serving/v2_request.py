"""An Open Inference Protocol inference request, read and checked: its JSON header (msgspec, each
tensor's data kept raw so that only the model's columns are ever parsed), its binary tensor data
(service/serving/v2_binary.py), one input per column. What each datatype may carry, and why, is in
service/serving/v2_codec.py. Every problem is a 400 naming the input (and the row) and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import attrgetter
from typing import Any

import msgspec
import orjson

from service.errors import InputError, PayloadTooLarge
from service.model.parsing import truncate
from service.serving import v2_binary
from service.serving.decoding import bare_tokens, rewritten, skip_bom
from service.serving.row_keys import ColumnNames, fold_key
from service.serving.scorer import CompiledModel

BYTES = v2_binary.BYTES
FP64, INT64 = "FP64", "INT64"
INTEGERS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
NUMBERS = frozenset({FP64, *INTEGERS})  # what a numeric column (or an id) may be besides BYTES
NARROW_FLOATS = frozenset({"FP16", "FP32", "BF16"})
PD_JSON = "pd_json"  # MLServer's PandasCodec: each BYTES element is a JSON text
# The content types a BYTES input may have: elements that are the values themselves, or JSON texts.
READ_AS_GIVEN = frozenset({"str", "np", "pd", PD_JSON})
REASONS, CONTRIBUTIONS = "reasons", "reason_contributions"
CATEGORY = "category"
FIX_SHAPE = "one input per column, shape [N] or [N, 1]"
ENVELOPE = (
    'an inference request is a JSON object {"inputs": [{"name", "datatype", "shape", "data"}, ...]} with '
    f"{FIX_SHAPE}"
)
# A bare Infinity in the JSON becomes this string (NUL first: no value a client means), then inf.
_INFINITY = {"\x00Infinity": float("inf"), "\x00-Infinity": float("-inf")}
_NONE = type(None)
_INTEGER_KINDS = frozenset({int, _NONE})  # bool is not int here: type() is compared, not isinstance
_NUMBER_KINDS = frozenset({float, int, _NONE})
_STRING_KINDS = frozenset({str, _NONE})


class InferenceRequestError(InputError):
    """An inference request that is not one this model can read (the whole request: a 400)."""

    status = 400
    kind = "bad-inference-request"
    title = "Invalid inference request"


def _fail(detail: str) -> InferenceRequestError:
    return InferenceRequestError(detail)


# --- the JSON header ------------------------------------------------------------------------------------
# The protocol's $parameters: each value a string, a number or a boolean (anything else is a 400).
Parameters = dict[str, str | int | float | bool]


class RequestInput(msgspec.Struct, gc=False):
    name: str
    datatype: str
    shape: msgspec.Raw  # read once when every input's is the same text (_rows), else one by one
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty: no data (binary instead)
    parameters: Parameters | None = None


class RequestOutput(msgspec.Struct, gc=False):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(msgspec.Struct, gc=False):
    inputs: list[RequestInput]
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[RequestOutput] | None = None


_DECODER = msgspec.json.Decoder(InferenceRequest)
_SHAPE_DECODER = msgspec.json.Decoder(tuple[int, ...])
_NAME, _SHAPE, _PARAMETERS = map(attrgetter, ("name", "shape", "parameters"))


def _invalid(exc: msgspec.ValidationError) -> InferenceRequestError:
    return _fail(f"the inference request is not valid: {exc}; {ENVELOPE}")


def read_header(header: bytes) -> InferenceRequest:
    """The request's JSON object. Bare NaN (what Python's json.dumps writes) is read as null, a bare
    Infinity as infinity (a numeric input's row then cannot be scored, and is named)."""
    header = skip_bom(header)
    try:
        return _DECODER.decode(header)
    except msgspec.ValidationError as exc:
        raise _invalid(exc) from None
    except msgspec.DecodeError as exc:
        error: msgspec.DecodeError = exc
    tokens = bare_tokens(header)
    if tokens:
        try:
            return _DECODER.decode(rewritten(header, tokens))
        except msgspec.ValidationError as exc:
            raise _invalid(exc) from None
        except msgspec.DecodeError as again:
            error = again
    hint = ""
    if header.lstrip()[:1] != b"{":
        hint = (
            "; binary tensor data follow a JSON header whose length the Inference-Header-Content-Length "
            "header gives"
        )
    raise _fail(f"the inference request is not valid JSON ({str(error)[:200]}){hint}; {ENVELOPE}")


# --- the inputs ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Inputs:
    """The columns a request holds for the model (model columns and pass-through ids, by name), the ids'
    datatypes, its inputs outside the input schema, its rows and the rank of its shapes."""

    columns: dict[str, list[Any]]
    id_types: dict[str, str]
    unknown: list[str]
    n: int
    rank: int


@lru_cache(maxsize=8)  # per model version: the few a worker serves in its life
def column_kinds(model: CompiledModel) -> dict[str, str]:
    """Raw column -> how it is written: number, money, percent or category."""
    kinds = {spec.name: spec.fmt for spec in model.numeric}
    kinds.update((cat.column, CATEGORY) for cat in model.categories)
    return kinds


def read_inputs(
    model: CompiledModel,
    inputs: list[RequestInput],
    tail: memoryview | None,
    max_rows: int,
    pause: Callable[[], None],
) -> Inputs:
    """Every input's name, shape and binary size checked; the datatypes and values of the model's columns
    and of the pass-through ids read. An input the model does not read is never parsed."""
    n, rank = _rows(inputs, max_rows)
    layout = _layout_of(model, inputs)
    binaries = _binary_parts(inputs, tail)
    kinds = column_kinds(model)
    columns: dict[str, list[Any]] = {}
    id_types: dict[str, str] = {}
    # The model's columns and the ids, in the request's order; the other inputs are never parsed.
    for i in layout.read:
        tensor = inputs[i]
        name = tensor.name
        kind = kinds.get(name)
        if kind is None:
            _check_id_type(name, tensor.datatype)
            id_types[name] = tensor.datatype
        else:
            _check_column_type(name, tensor.datatype, kind)
        columns[name] = _values(tensor, binaries[i], n)
        if len(columns) % 8 == 0:
            pause()
    return Inputs(columns, id_types, list(layout.unknown), n, rank)


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a request's input names alone decide: where the inputs to read are (the model's columns and
    the ids, in the request's order) and which names are outside the input schema."""

    read: tuple[int, ...]
    unknown: tuple[str, ...]


# A client sends the same inputs in the same order call after call: their layout is checked once. Only
# for requests of a plausible width, so the cache never holds the names of a huge request.
_LAYOUT_CACHE_MAX_INPUTS = 1024


def _layout_of(model: CompiledModel, inputs: list[RequestInput]) -> _Layout:
    names = tuple(map(_NAME, inputs))
    if len(names) > _LAYOUT_CACHE_MAX_INPUTS:
        return _layout(model, names)
    return _cached_layout(model, names)


def _layout(model: CompiledModel, given: tuple[str, ...]) -> _Layout:
    """The layout of inputs named `given` (400 for a name given twice, a near miss, or no model column)."""
    position = dict(zip(given, range(len(given)), strict=True))
    unknown = _check_names(given, position.keys(), model.names)
    read = tuple(sorted(position[name] for name in _read_columns(model) & position.keys()))
    return _Layout(read, tuple(unknown))


_cached_layout = lru_cache(maxsize=64)(_layout)


@lru_cache(maxsize=8)
def _read_columns(model: CompiledModel) -> frozenset[str]:
    """What a request's inputs are read for: the model's columns and the pass-through ids."""
    return model.names.used_set | frozenset(model.passthrough)


def _rows(inputs: list[RequestInput], max_rows: int) -> tuple[int, int]:
    """(rows, rank) that every input's shape agrees on; 413 past max_rows."""
    if not inputs:
        raise _fail(f"the request has no inputs; {ENVELOPE}")
    if list(map(_SHAPE, inputs)).count(inputs[0].shape) == len(inputs):  # the same text: read it once
        shapes = [_shape(inputs[0], 0)]
    else:
        shapes = [_shape(tensor, i) for i, tensor in enumerate(inputs)]
    distinct = set(shapes)  # one, or [N] and [N, 1] mixed: both are N rows of a column
    if len(distinct) > 2 or not all(map(_column_shape, distinct)) or len({s[0] for s in distinct}) != 1:
        raise _shape_error(inputs, shapes)
    n = shapes[0][0]
    if n == 0:
        raise _fail(f"the inputs have 0 rows; send 1 to {max_rows}")
    if n > max_rows:
        raise PayloadTooLarge(
            f"{n} rows exceed the limit of {max_rows} rows per request; split the batch", max_rows=max_rows
        )
    return n, len(shapes[0])


def _shape(tensor: RequestInput, i: int) -> tuple[int, ...]:
    try:
        return _SHAPE_DECODER.decode(tensor.shape)
    except msgspec.ValidationError as exc:
        text, at, path = str(exc).partition(" - at `$")  # msgspec's path, read from the shape itself
        where = f"$.inputs[{i}].shape{path.rstrip('`') if at else ''}"
        raise _fail(f"the inference request is not valid: {text} - at `{where}`; {ENVELOPE}") from None


def _column_shape(shape: tuple[int, ...]) -> bool:
    """[N] or [N, 1]."""
    return (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) and shape[0] >= 0


def _shape_error(inputs: list[RequestInput], shapes: list[tuple[int, ...]]) -> InferenceRequestError:
    """What is wrong with the inputs' shapes: one that is not [N] or [N, 1], or two that disagree."""
    for tensor, shape in zip(inputs, shapes, strict=True):
        if not _column_shape(shape):
            matrix = len(shape) == 2 and shape[1] > 1
            hint = f" (a matrix of {shape[1]} columns: send each column as its own input)" if matrix else ""
            return _fail(f"input {truncate(tensor.name)!r} has shape {list(shape)}{hint}; {FIX_SHAPE}")
    other = next(i for i, shape in enumerate(shapes) if shape[0] != shapes[0][0])
    return _fail(
        f"inputs {truncate(inputs[0].name)!r} and {truncate(inputs[other].name)!r} have {shapes[0][0]} and "
        f"{shapes[other][0]} rows; every input is one column of the same rows"
    )


def _binary_parts(inputs: list[RequestInput], tail: memoryview | None) -> list[memoryview | None]:
    """Each input's binary tensor data (None: its data is inline JSON), in the order the inputs come."""
    if tail is None and not any(map(_PARAMETERS, inputs)):
        return [None] * len(inputs)  # JSON only (an input read without data is refused when read)
    parts: list[memoryview | None] = []
    at = 0
    for tensor in inputs:
        params = tensor.parameters
        size = params.get("binary_data_size") if params else None
        if size is None:
            parts.append(None)
            continue
        name = truncate(tensor.name)
        if type(size) is not int or size < 0:
            raise _fail(
                f"input {name!r}: binary_data_size must be a whole number of bytes, got {truncate(size)}"
            )
        if tail is None:
            raise _fail(
                f"input {name!r} has binary_data_size, but the request has no "
                "Inference-Header-Content-Length header (the length of the JSON before the binary data)"
            )
        if tensor.data:
            raise _fail(f"input {name!r} has both data and binary_data_size; send one of them")
        if at + size > len(tail):
            raise _fail(
                f"input {name!r}: binary_data_size {size} reaches past the end of the body "
                f"({len(tail) - at} byte(s) left)"
            )
        parts.append(tail[at : at + size])
        at += size
    if tail is not None and at != len(tail):
        raise _fail(f"{len(tail) - at} byte(s) of binary data follow the tensors the JSON header describes")
    return parts


def _check_names(given: tuple[str, ...], present: KeysView[str], names: ColumnNames) -> list[str]:
    """The inputs outside the input schema (pass-through ids are in it), in order. Each name once; a
    name that only resembles an absent model column is refused, and so is a request with no model
    column at all (every input would be imputed: a plausible wrong answer)."""
    if len(present) != len(given):
        twice = next(n for n in given if given.count(n) > 1)
        raise _fail(f"input {truncate(twice)!r} is given twice; each column is one input")
    unknown = [] if present <= names.known else [n for n in given if n not in names.known]
    for name in unknown:
        column = names.resembling.get(fold_key(name))
        if column is not None and column not in present:
            raise _fail(f"input {truncate(name)!r} is {names.near_miss[column]}")
    if names.used_set.isdisjoint(present):
        shown = ", ".join(repr(truncate(n)) for n in given[:5])
        more = f" and {len(given) - 5} more" if len(given) > 5 else ""
        raise _fail(
            f"none of the inputs is a column of the model (inputs: {shown}{more}); send {FIX_SHAPE}, "
            f"named by the model's columns: {', '.join(names.ordered)}"
        )
    return unknown


def _check_column_type(name: str, datatype: str, kind: str) -> None:
    if kind == CATEGORY:
        if datatype != BYTES:
            raise _fail(
                f"input {name!r} is {truncate(datatype)}, but {name} is a category: send it as BYTES strings"
            )
        return
    if datatype == BYTES or datatype in NUMBERS:
        return
    if datatype in NARROW_FLOATS:
        digits = "7" if datatype == "FP32" else "3"
        raise _fail(
            f"input {name!r} is {datatype}: a {datatype} number holds about {digits} significant digits "
            "(0.98441208 as FP32 is 0.9844120740890503), so the model would score another number than your "
            "data; send it as FP64 (numpy float64, pandas' default) or as BYTES strings; to score the "
            "narrow values as they are, convert them with astype(numpy.float64) first"
        )
    if datatype == "BOOL":
        raise _fail(
            f"input {name!r} is BOOL, but {name} is a number: send it as FP64, an integer type or BYTES"
        )
    raise _fail(f"input {name!r}: unknown datatype {truncate(datatype)}; send FP64, an integer type or BYTES")


def _check_id_type(name: str, datatype: str) -> None:
    if datatype == BYTES or datatype in NUMBERS:
        return
    raise _fail(
        f"input {name!r} is a pass-through id, echoed unchanged: send it as BYTES, an integer type or FP64, "
        f"not {truncate(datatype)}"
    )


# --- one input's values -------------------------------------------------------------------------------------
def _values(tensor: RequestInput, raw: memoryview | None, n: int) -> list[Any]:
    """One model column's (or pass-through id's) values, one per row."""
    name, datatype, params = tensor.name, tensor.datatype, tensor.parameters
    given = params.get("content_type") if params else None
    content_type = None if given is None else str(given)
    if content_type is not None and datatype == BYTES and content_type not in READ_AS_GIVEN:
        raise _fail(
            f"input {name!r} has content_type {truncate(content_type)}, which this model does not read; "
            "send plain strings (content_type str, or none)"
        )
    if raw is None:
        if not tensor.data:
            raise _fail(f"input {truncate(name)!r} has no data (neither data nor binary_data_size)")
        try:
            data = orjson.loads(memoryview(tensor.data))
        except orjson.JSONDecodeError as exc:  # a number past the float or 64-bit integer range
            raise _fail(f"input {name!r}: its data cannot be read ({str(exc)[:120]})") from None
        values = _flat(name, data, n)
        return _strings(name, values, content_type) if datatype == BYTES else _numbers(name, datatype, values)
    try:
        if datatype == BYTES:
            strings: list[Any] = _utf8(name, v2_binary.read_bytes(raw, n))
            return _json_texts(name, strings) if content_type == PD_JSON else strings
        return v2_binary.read_fixed(raw, datatype, n)
    except ValueError as exc:
        raise _fail(f"input {name!r}: {exc}") from None


def _flat(name: str, data: Any, n: int) -> list[Any]:
    """A tensor's JSON data as one list of n elements (flat, or nested one level: [[v], [v], ...])."""
    if type(data) is not list:
        raise _fail(f"input {name!r}: data must be a JSON array of the tensor's elements, got {_kind(data)}")
    if data and type(data[0]) is list:
        if not all(type(row) is list and len(row) == 1 for row in data):
            raise _fail(f"input {name!r}: nested data must be [[v], [v], ...] for shape [N, 1]; {FIX_SHAPE}")
        data = list(chain.from_iterable(data))
    if len(data) != n:
        raise _fail(f"input {name!r}: its shape says {n} element(s), its data holds {len(data)}")
    return data


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", str: "a string", int: "an integer", float: "a number", list: "an array"}
    return "null" if value is None else kinds.get(type(value), "an object")


def _first_of(values: list[Any], kinds: set[type]) -> tuple[int, Any]:
    return next((i, v) for i, v in enumerate(values) if type(v) in kinds)


def _numbers(name: str, datatype: str, values: list[Any]) -> list[Any]:
    """An FP64 or integer input's JSON elements: numbers, or null for missing (a bare Infinity: inf)."""
    allowed = _INTEGER_KINDS if datatype in INTEGERS else _NUMBER_KINDS
    kinds = set(map(type, values))
    if kinds <= allowed:
        return values
    if datatype == FP64 and str in kinds:
        values = [_INFINITY.get(v, v) if type(v) is str else v for v in values]
        kinds = set(map(type, values))
        if kinds <= allowed:
            return values
    i, value = _first_of(values, kinds - allowed)
    fix = "strings go in a BYTES input" if type(value) is str else "send numbers, or null for a missing value"
    raise _fail(f"input {name!r} is {datatype}, but row {i} holds {_kind(value)} ({truncate(value)}); {fix}")


def _strings(name: str, values: list[Any], content_type: str | None) -> list[Any]:
    """A BYTES input's JSON elements: strings, or null for missing; each a JSON text under pd_json."""
    kinds = set(map(type, values))
    if not kinds <= _STRING_KINDS:
        i, value = _first_of(values, kinds - _STRING_KINDS)
        raise _fail(
            f"input {name!r} is BYTES, but row {i} holds {_kind(value)} ({truncate(value)}); BYTES data are "
            "strings (or null for a missing value): send numbers as an FP64 input"
        )
    return _json_texts(name, values) if content_type == PD_JSON else values


def _json_texts(name: str, values: list[Any]) -> list[Any]:
    """Elements that are JSON texts (MLServer's pd_json), decoded: '"tuesday"' -> "tuesday", 'null' -> None"""
    out: list[Any] = []
    for i, text in enumerate(values):
        if text is None:
            out.append(None)
            continue
        try:
            out.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            raise _fail(
                f"input {name!r} has content_type pd_json, but row {i} is not a JSON text ({truncate(text)})"
            ) from None
    return out


def _utf8(name: str, items: list[bytes]) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(items):
        try:
            out.append(item.decode("utf-8"))
        except UnicodeDecodeError:
            raise _fail(
                f"input {name!r}, row {i}: BYTES elements are read as UTF-8 text; this one is not"
            ) from None
    return out


# --- parameters and requested outputs -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Wanted:
    """An output the request asked for: its name, and binary (True/False) or as the request says (None)."""

    name: str
    binary: bool | None = None


def reasons_param(value: Any, inputs: int) -> int:
    """parameters.reasons: a whole number of reason codes per row (capped at the model's inputs) or "all"."""
    if value is None:
        return 0
    if type(value) is str and value.strip().lower() == "all":
        return inputs
    if type(value) is int and value >= 0:
        return min(value, inputs)
    raise _fail(
        f"parameters.reasons must be a whole number of reason codes per row (0 to {inputs}) or 'all'; "
        f"got {truncate(value)}"
    )


def binary_param(value: Any) -> bool:
    if value is None or type(value) is bool:
        return bool(value)
    raise _fail(f"parameters.binary_data_output must be true or false, got {truncate(value)}")


def wanted_outputs(outputs: list[RequestOutput], available: list[str], reasons: int) -> list[Wanted]:
    """The outputs a request asks for, each known, once, in the order asked."""
    out: list[Wanted] = []
    seen: set[str] = set()
    known = set(available)
    for output in outputs:
        name = output.name
        if name in seen:
            raise _fail(f"output {truncate(name)!r} is asked for twice")
        seen.add(name)
        if name not in known:
            if name in (REASONS, CONTRIBUTIONS) and not reasons:
                raise _fail(
                    f'output {name!r} needs reason codes: ask for them with parameters {{"reasons": k}}'
                )
            raise _fail(f"unknown output {truncate(name)!r}; this model answers {', '.join(available)}")
        params = output.parameters or {}
        if "classification" in params:
            raise _fail("the classification extension is not supported; ask for phat and business_outcome")
        binary = params.get("binary_data")
        if binary is not None and type(binary) is not bool:
            raise _fail(f"output {name!r}: binary_data must be true or false, got {truncate(binary)}")
        out.append(Wanted(name, binary))
    return out
