"""From request bytes to a batch: content type, size limits, JSON decoding and body shape.

Nesting. orjson (the full decode) refuses JSON nested deeper than 1,024 levels. The column decoder
(msgspec, bodies of 64 KiB and more) follows nesting as deep as the interpreter's recursion limit allows,
about 1,000 levels less the stack in use; a body deeper than that is refused here (400, as orjson refuses
deeper ones), not handed to the full decode, which would read it and pass on values nested deeper than
the steps after it (repr, re-encoding) can follow. Either way a body too deep to read is a 400, never a
500. An array or object where a value belongs is kept as a stand-in (`shallow`: its kind and the head of
its repr), which is all the error that reports it needs.

Not quite JSON. What Python's json.dumps writes for a float NaN (a bare `NaN`) is read as null, and a bare
`Infinity` / `-Infinity` is a 422 naming its row and field; a UTF-8 byte order mark before the body is
skipped. orjson and msgspec refuse those tokens, so they are looked for only once a body failed to
decode (`bare_tokens`: outside strings only); a valid body pays nothing. A body of several JSON
documents, one per line (NDJSON), is a 400 that says so; sent as application/x-ndjson it is a 415.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

import msgspec
import orjson

from service.errors import (
    BadBodyShape,
    ErrorCollector,
    FieldError,
    InputError,
    MalformedJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from service.model.parsing import MAX_ECHO, truncate
from service.serving.batch import ABSENT, ColumnBatch, JsonBatch
from service.serving.row_keys import VALUES_ORIENT_HINT
from service.serving.turns import no_pause

BOM = b"\xef\xbb\xbf"
# One JSON document per line: its own media types, not read by /predict.
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-seq",
    }
)
SEND_AN_ARRAY = "send the rows as one JSON array ([{...}, {...}]) with Content-Type: application/json"


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    if media in NDJSON_TYPES:
        raise UnsupportedMediaType(
            f"/predict does not read {media} (one JSON document per line); {SEND_AN_ARRAY}"
        )
    shown = media or "none"
    raise UnsupportedMediaType(
        f"Content-Type must be application/json (or application/*+json), got {shown[:60]!r}"
    )


def skip_bom(body: bytes) -> bytes:
    """The body without a UTF-8 byte order mark in front (the rare body that has one is copied)."""
    return body[3:] if body[:3] == BOM else body


def check_declared_length(length: int | None, limit: int) -> None:
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes", limit_bytes=limit)


def decode_rows(body: bytes, *, max_rows: int, max_errors: int) -> JsonBatch:
    """Bytes -> rows. 400 malformed JSON, 413 too many rows, 422 wrong shape (naming every bad element)
    or a bare Infinity (naming each row and field)."""
    body = skip_bom(body)
    if not body.strip():
        raise MalformedJSON("the request body is empty; send a JSON object or an array of objects")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        payload = _decode_not_quite_json(body, exc, max_errors)
    if isinstance(payload, dict):
        return JsonBatch([payload], single=True)
    if not isinstance(payload, list):
        raise BadBodyShape(f"expected a JSON object or an array of objects, got {type(payload).__name__}")
    if not payload:
        raise BadBodyShape(f"the array is empty; send 1 to {max_rows} rows")
    if len(payload) > max_rows:
        raise PayloadTooLarge(
            f"{len(payload)} rows exceed the limit of {max_rows} rows per request; split the batch",
            max_rows=max_rows,
        )
    if not all(type(row) is dict for row in payload):
        errors = ErrorCollector(cap=max_errors)
        for i, row in enumerate(payload):
            if type(row) is not dict:
                errors.add(FieldError(i, None, f"row must be a JSON object, got {type(row).__name__}"))
        arrays = all(type(row) in (dict, list) for row in payload)
        raise BadBodyShape(
            f"{errors.total} element(s) of the array are not JSON objects"
            + (f"; {VALUES_ORIENT_HINT}" if arrays else ""),
            errors=errors.errors,
            error_count=errors.total,
        )
    return JsonBatch(payload)


# --- what orjson refuses: bare NaN / Infinity, several documents, other encodings ---------------------------
# Searched as literals (a fast scan), each with the "-" before it if any; -NaN is NaN too.
_BARE = (re.compile(rb"NaN"), re.compile(rb"Infinity"))
# A bare Infinity is decoded as one of these strings (NUL first: no value a client means), then reported.
_INFINITY = {"\x00Infinity": "Infinity", "\x00-Infinity": "-Infinity"}
INFINITY_REASON = "Infinity is not a number the model can score; send a finite number, or null for missing"
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")
_MISSING_WORD = re.compile(rb"-?(?:nan|inf(?:inity)?|none|undefined)\b", re.IGNORECASE)


def _escaped_quotes(body: bytes) -> list[int]:
    """Positions of the quotes that a backslash escapes (an odd run of them right before)."""
    out: list[int] = []
    i = body.find(b'\\"')
    while i >= 0:
        j = i
        while j > 0 and body[j - 1] == 0x5C:
            j -= 1
        if (i + 1 - j) % 2:
            out.append(i + 1)
        i = body.find(b'\\"', i + 1)
    return out


class Token(NamedTuple):
    start: int
    end: int
    text: bytes  # NaN, -NaN, Infinity or -Infinity


def bare_tokens(body: bytes) -> list[Token]:
    """The NaN, Infinity and -Infinity tokens outside strings: a candidate is outside a string when an
    even number of unescaped quotes comes before it (counted by bytes.count between two candidates)."""
    candidates: list[Token] = []
    for pattern in _BARE:
        for match in pattern.finditer(body):
            start, end = match.span()
            if start and body[start - 1] == 0x2D:  # "-"
                start -= 1
            candidates.append(Token(start, end, body[start:end]))
    if not candidates:
        return []
    candidates.sort()
    escaped = _escaped_quotes(body)
    out: list[Token] = []
    quotes = done = 0
    for token in candidates:
        at = token.start
        quotes += body.count(b'"', done, at)
        done = at
        if (quotes - bisect_left(escaped, at)) % 2 == 0:
            out.append(token)
    return out


def rewritten(body: bytes, tokens: list[Token]) -> bytes:
    """The body with NaN as null and each Infinity as its marker string."""
    pieces: list[bytes] = []
    start = 0
    for token in tokens:
        nan = token.text.endswith(b"NaN")
        pieces += (body[start : token.start], b"null" if nan else b'"\\u0000' + token.text + b'"')
        start = token.end
    pieces.append(body[start:])
    return b"".join(pieces)


def nan_as_null(body: bytes) -> bytes | None:
    """The body with its bare NaN tokens as null; None when it has none, or has a bare Infinity (the full
    decode reports those)."""
    tokens = bare_tokens(body)
    if not tokens or any(token.text.endswith(b"Infinity") for token in tokens):
        return None
    return rewritten(body, tokens)


def _decode_not_quite_json(body: bytes, exc: orjson.JSONDecodeError, max_errors: int) -> Any:
    """A body orjson refused: read again with bare NaN as null, or the 400 that says what it is."""
    tokens = bare_tokens(body)
    if not tokens:
        raise _malformed(body, exc) from None
    text = rewritten(body, tokens)
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as again:
        raise _malformed(text, again, "with bare NaN read as null, ") from None
    if any(token.text.endswith(b"Infinity") for token in tokens):
        raise _infinity_error(payload, max_errors)
    return payload


def _malformed(body: bytes, exc: orjson.JSONDecodeError, read_as: str = "") -> MalformedJSON:
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return MalformedJSON("the body is UTF-16 (it starts with a UTF-16 byte order mark); send UTF-8")
    if _looks_like_ndjson(body):
        return MalformedJSON(
            "the body holds one JSON document per line (NDJSON), which /predict does not read; "
            + SEND_AN_ARRAY
        )
    detail = f"the body is not valid JSON ({read_as}orjson: {str(exc)[:200]})"
    if _MISSING_WORD.match(body, max(exc.pos, 0)):
        detail += "; for a missing value send null"
    return MalformedJSON(detail)


def _looks_like_ndjson(body: bytes) -> bool:
    """The first line is a JSON object or array alone, and an object or array starts the next line."""
    start = _LEADING_SPACE.match(body).end()  # type: ignore[union-attr]  # matches anywhere, maybe empty
    end = body.find(b"\n", start)
    if end < 0:
        return False
    try:
        first = orjson.loads(body[start:end])
    except orjson.JSONDecodeError:
        return False
    after = _LEADING_SPACE.match(body, end).end()  # type: ignore[union-attr]
    return type(first) in (dict, list) and body[after : after + 1] in (b"{", b"[")


def _infinity_in(value: Any) -> str | None:
    """The Infinity token decoded somewhere in `value` (at any depth, keys too), else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if item in _INFINITY:
                return _INFINITY[item]
        elif kind is list:
            stack += item
        elif kind is dict:
            stack += item.keys()
            stack += item.values()
    return None


def _infinity_error(payload: Any, max_errors: int) -> InputError:
    """The 422 for bare Infinity tokens: every row and (top-level) field that holds one."""
    rows = payload if type(payload) is list else [payload]
    errors = ErrorCollector(cap=max_errors)
    bad: list[int] = []
    for i, row in enumerate(rows):
        found = errors.total
        if type(row) is dict:
            for key, value in row.items():
                token = _infinity_in(key) or _infinity_in(value)
                if token is not None:
                    errors.add(FieldError(i, truncate(_INFINITY.get(key, key)), INFINITY_REASON, token))
        elif (token := _infinity_in(row)) is not None:
            errors.add(FieldError(i, None, INFINITY_REASON, token))
        if errors.total > found:
            bad.append(i)
    first = errors.errors[0] if errors.errors else FieldError(0, None, INFINITY_REASON, "Infinity")
    where = f"row {first.row}" + (f", field {first.field}" if first.field is not None else "")
    return InputError(
        f"{max(errors.total, 1)} bare Infinity value(s) cannot be scored; first: {where}: {first.value}; "
        "send a finite number, or null for a missing value",
        errors=errors.errors,
        error_count=errors.total,
        bad_rows=bad[:max_errors],
        bad_row_count=len(bad),
    )


# One decode is one C call that holds the GIL throughout: a big array is decoded in slices of about this
# many bytes, so while a worker thread decodes it, the event loop gets the GIL between two slices.
SLICE_BYTES = 1024 * 1024
# Between two rows of an array: "}" then "," then "{", with JSON whitespace around the comma.
_ROW_GAP = re.compile(rb"\}[ \t\n\r]*,[ \t\n\r]*\{")


def row_slices(body: bytes, size: int) -> Iterator[bytes]:
    """A JSON array's bytes as arrays of consecutive rows, cut between two rows about every `size` bytes.

    A cut can land in a string or in a nested value that holds "},{"; the slice that ends there is then
    not valid JSON (it ends inside a string or with a container open). So when every slice decodes, every
    cut was between two rows of the array, and the slices' rows are the array's rows.
    """
    view = memoryview(body)
    start = 0  # the first slice keeps the body's own "["
    while start + 2 * size < len(body):
        gap = _ROW_GAP.search(body, start + size)
        if gap is None:
            break
        end = gap.start() + 1  # just after the "}"
        yield b"".join((b"[" if start else b"", view[start:end], b"]"))
        start = gap.end() - 1  # at the "{"
    yield b"".join((b"[", view[start:])) if start else body


# --- arrays and objects where a value belongs ---------------------------------------------------------------
class _Punctuation(str):
    """Text of a repr that is not a value: brackets, separators, a dict key with its colon."""

    __slots__ = ()


def _array_pieces(items: list[Any]) -> Iterator[Any]:
    yield _Punctuation("[")
    for i, item in enumerate(items):
        if i:
            yield _Punctuation(", ")
        yield item
    yield _Punctuation("]")


def _object_pieces(items: dict[Any, Any]) -> Iterator[Any]:
    yield _Punctuation("{")
    for i, (key, item) in enumerate(items.items()):
        yield _Punctuation((", " if i else "") + repr(key) + ": ")
        yield item
    yield _Punctuation("}")


def repr_head(value: Any, limit: int) -> str:
    """repr(value)[:limit] for a decoded JSON value, at any depth: built from the outside in, without
    recursion, and only as far as `limit` characters."""
    pieces: list[str] = []
    size = 0
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack and size < limit:
        item = next(stack[-1], stack)  # the stack itself: this iterator is done
        if item is stack:
            stack.pop()
        elif type(item) is list:
            stack.append(_array_pieces(item))
        elif type(item) is dict:
            stack.append(_object_pieces(item))
        else:
            text = str(item) if type(item) is _Punctuation else repr(item)
            pieces.append(text)
            size += len(text)
    return "".join(pieces)[:limit]


class ShallowArray(list[str]):
    """An array where a value belongs, kept as the head of its repr (a scorer only reports it)."""

    __slots__ = ("_head",)

    def __init__(self, head: str) -> None:
        super().__init__((head,))  # encoded as ["<head>"]: distinct from any value a row may hold
        self._head = head

    def __repr__(self) -> str:
        return self._head


class ShallowObject(dict[str, str]):
    """An object where a value belongs, kept as the head of its repr (a scorer only reports it)."""

    __slots__ = ("_head",)

    def __init__(self, head: str) -> None:
        super().__init__({"": head})
        self._head = head

    def __repr__(self) -> str:
        return self._head


CONTAINERS = (list, dict)


def shallow(value: list[Any] | dict[str, Any]) -> ShallowArray | ShallowObject:
    """A stand-in for an array or object: the same kind (so it is reported as "an array", "an object") and
    a repr as long as an error echoes, however deep the value nests."""
    head = repr_head(value, MAX_ECHO + 1)  # one more than an echo keeps: it still knows it was cut
    return ShallowObject(head) if isinstance(value, dict) else ShallowArray(head)


def _keep_shallow(rows: Iterable[Any], columns: Sequence[str]) -> None:
    for row in rows:
        for name in columns:
            value = getattr(row, name)
            if type(value) in CONTAINERS:
                setattr(row, name, shallow(value))


# --- the column decoder -----------------------------------------------------------------------------------
# A model column's value as the column decoder reads it: what orjson gives for a scalar (a JSON number is a
# float either way for scoring), or, on a second reading, an array or object where a value belongs.
_SCALAR = float | str | bool | None
_ANY_VALUE = float | str | bool | None | list[Any] | dict[str, Any]
# A pass-through id keeps its JSON type exactly (an integer stays an integer: it is echoed, not scored).
_ID_VALUE = int | float | str | bool | None


def _struct_get(row: msgspec.Struct, column: str) -> Any:
    value = getattr(row, column, None)
    return None if value is ABSENT else value


class ColumnDecoder:
    """Decodes only the columns a model uses: msgspec skips every other key without building objects.

    Values keep their JSON types (number -> float, string -> str, boolean -> bool, null -> None), what
    orjson would give for those keys, so scoring and every error it reports are unchanged. An array or an
    object in a model column makes a second reading that takes any value, and is kept `shallow`. What this
    decoder does not take -- malformed JSON, a wrong body shape, too many rows, bytes that are not UTF-8 --
    returns None: the full orjson path decodes the body and reports every problem as it always has. A body
    nested deeper than it can follow is refused (MalformedJSON). A row has `.get(column)` like a dict, so
    the few-rows scoring path takes it as it takes a JSON object.
    """

    def __init__(
        self, columns: Sequence[str], *, extra: Sequence[str] = (), slice_bytes: int = SLICE_BYTES
    ) -> None:
        """`extra`: pass-through id fields, decoded with their JSON types (any value, on the second
        reading) and never checked here."""
        self.columns = tuple(columns)
        self.extra = tuple(extra)
        self._scalar_body, self._scalar_rows = self._decoders(_SCALAR, _ID_VALUE)
        self._any_body, self._any_rows = self._decoders(_ANY_VALUE, Any)
        self._raw_rows = msgspec.json.Decoder(list[msgspec.Raw])
        self.slice_bytes = slice_bytes

    def _decoders(
        self, kind: Any, id_kind: Any
    ) -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]]:
        """(one row or an array of rows, an array of rows) with every model column of type `kind` (and
        every extra field of `id_kind`), ABSENT where a row lacks it (and left out when it is encoded:
        absent and null make different keys)."""
        fields = [(c, kind, ABSENT) for c in self.columns] + [(c, id_kind, ABSENT) for c in self.extra]
        row = msgspec.defstruct("Row", fields, gc=False, omit_defaults=True, namespace={"get": _struct_get})
        return msgspec.json.Decoder(list[row] | row), msgspec.json.Decoder(list[row])  # type: ignore[valid-type]

    def decode(
        self, body: bytes, *, max_rows: int, pause: Callable[[], None] = no_pause
    ) -> ColumnBatch | None:
        """`pause` is called between two slices (a worker thread lets small calls go first there)."""
        try:
            payload = self._sliced(body, pause) if self._sliceable(body) else None
            if payload is None:
                payload = self._whole(body)
        except RecursionError:
            raise MalformedJSON("the body nests arrays or objects too deeply to be read") from None
        except (msgspec.MsgspecError, ValueError):  # ValueError: msgspec's UnicodeDecodeError
            return None
        if isinstance(payload, list):
            if not payload or len(payload) > max_rows:
                return None
            return ColumnBatch(payload, reread=partial(self.reread, body, pause))
        return ColumnBatch([payload], single=True, reread=partial(self.reread, body, pause))

    def reread(self, body: bytes, pause: Callable[[], None], indices: list[int]) -> list[dict[str, Any]]:
        """Rows of a body this decoder took, as JSON objects with every key (orjson, as the full decode
        reads them): for the rows that lack a model column, whose other keys are reported."""
        try:
            if body[:16].lstrip()[:1] != b"[":
                return [orjson.loads(body)]
            raws = self._raws(body, pause)
            return [orjson.loads(memoryview(raws[i])) for i in indices]
        except (orjson.JSONDecodeError, RecursionError, msgspec.DecodeError) as exc:
            raise MalformedJSON(f"the body is not valid JSON: {str(exc)[:200]}") from None

    def _raws(self, body: bytes, pause: Callable[[], None]) -> list[msgspec.Raw]:
        """The array's rows as raw bytes (slice by slice, pausing, when the body is big)."""
        if self._sliceable(body):
            raws: list[msgspec.Raw] = []
            try:
                for piece in row_slices(body, self.slice_bytes):
                    pause()
                    raws += self._raw_rows.decode(piece)
            except msgspec.DecodeError:  # a cut in a string: the slices are not the rows
                pass
            else:
                return raws
        return self._raw_rows.decode(body)

    def _whole(self, body: bytes) -> Any:
        try:
            return self._scalar_body.decode(body)
        except msgspec.ValidationError:  # an array or object where a value belongs, or a wrong shape
            payload = self._any_body.decode(body)
        _keep_shallow(payload if isinstance(payload, list) else (payload,), self.columns + self.extra)
        return payload

    def _sliceable(self, body: bytes) -> bool:
        return len(body) >= 2 * self.slice_bytes and body[:16].lstrip()[:1] == b"["

    def _sliced(self, body: bytes, pause: Callable[[], None] = no_pause) -> list[Any] | None:
        """The array's rows, decoded slice by slice (a slice with an array or object where a value belongs
        is read again, alone); None when a slice does not decode (the whole body is then decoded at once
        and gives the verdict, as for a body too small to slice)."""
        rows: list[Any] = []
        try:
            for piece in row_slices(body, self.slice_bytes):
                pause()
                try:
                    rows += self._scalar_rows.decode(piece)
                except msgspec.ValidationError:
                    more = self._any_rows.decode(piece)
                    _keep_shallow(more, self.columns + self.extra)
                    rows += more
        except msgspec.DecodeError:  # and ValidationError, a subclass
            return None
        return rows
