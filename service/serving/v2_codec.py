"""The Open Inference Protocol (KServe V2) REST body, as a codec of the scoring pipeline.

In: an inference request with one input tensor per raw column -- the pandas convention of MLServer's
PandasCodec and KServe -- named by the model's columns, shape [N] or [N, 1], all with the same N
(1 to max_rows). Data inline as JSON, or as binary tensor data after the JSON header (the binary tensor
data extension, service/serving/v2_binary.py). What each datatype may carry (service/serving/v2_request.py
reads and checks it):

- BYTES: strings, for any column ("$6,882.34 ", "62.59%", "tuesday", "0.98441208"), each read exactly as
  the same JSON string sent to /predict; a JSON null is missing. With `parameters.content_type` "pd_json"
  (what PandasCodec sends for a column holding a null) each element is a JSON text, decoded first.
- FP64 and the integer types (INT8..INT64, UINT8..UINT64): numbers, exactly as the same JSON number sent
  to /predict; null (JSON) or NaN (binary) is missing.
- FP32, FP16 and BF16 are refused, naming the fix: a float32 holds 0.98441208 as 0.9844120740890503, so
  the model would score another number than the one the client has. `astype(numpy.float64)` says that
  the narrow number is meant (widening is exact). BOOL is refused: the model takes no booleans.

So the bits of phat are those of /predict for the same values. An input that is not a model column
belongs to the input schema (ignored, as /predict ignores the file's other columns), is a pass-through
id (settings.passthrough_fields: BYTES, an integer type or FP64, echoed as an output of the same name and
datatype), or is unknown (reported in X-Unknown-Keys, like an unknown JSON key); a name that only
resembles an absent model column (`X5`) is refused, and so is a request without any model column. An
absent model column is imputed and reported (X-Imputed-Columns, and the answer's parameters).

Out: `phat` (FP64), `business_outcome` (INT64), the model inputs as the GLM saw them (FP64, or INT64 for
the dummies, as /predict types them), the pass-through ids sent, and with `parameters: {"reasons": k}`
(or the `reasons` query parameter) `reasons` (BYTES [N, k], model input names, largest first) and
`reason_contributions` (FP64 [N, k]). The request's `outputs` select and order them; `binary_data` per
output, or `binary_data_output` for all, asks for binary tensor data (an output holding a null id is
sent as JSON whatever was asked). Shapes follow the request's: [N] for [N] inputs, [N, 1] for [N, 1].
A batch with a row that cannot be scored is refused whole (400 naming row and input) whatever
PROPENSITY_BATCH_ERROR_POLICY says: a tensor has no slot for one row's errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import blake3
import msgspec
import numpy as np
import orjson

from service.errors import UnsupportedMediaType
from service.serving import v2_binary
from service.serving.batch import ABSENT, Batch
from service.serving.pipeline import rows_error
from service.serving.reasons import Reasons, top_reasons
from service.serving.row_keys import ColumnNames, KeyReport
from service.serving.scorer import SMALL_BATCH, CompiledModel, Scored
from service.serving.turns import no_pause
from service.serving.v2_request import (
    BYTES,
    CONTRIBUTIONS,
    FIX_SHAPE,
    FP64,
    INT64,
    REASONS,
    InferenceRequestError,
    Wanted,
    binary_param,
    column_kinds,
    read_header,
    read_inputs,
    reasons_param,
    wanted_outputs,
)

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
PHAT, OUTCOME = "phat", "business_outcome"
PLATFORM = "propensity_glm"
# A batch of this many rows or more has its outputs encoded one by one, pausing between two (json_rows.py
# slices its answer for the same reason).
ENCODE_SLICE_ROWS = 1000


# --- the batch: the tensors' columns, rows as views ---------------------------------------------------------
class TensorRow:
    """One row of a tensor batch, as the scorer and the error echo read rows: `.get(column)`."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: dict[str, list[Any]], i: int) -> None:
        self._columns = columns
        self._i = i

    def get(self, name: str, default: Any = None) -> Any:
        values = self._columns.get(name)
        return default if values is None else values[self._i]


class TensorRows(Sequence[TensorRow]):
    """A tensor batch's rows, each made when asked for (the 10,000 of a big batch are rarely read)."""

    __slots__ = ("_columns", "_n")

    def __init__(self, columns: dict[str, list[Any]], n: int) -> None:
        self._columns = columns
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [TensorRow(self._columns, j) for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return TensorRow(self._columns, i % self._n)

    def __iter__(self) -> Iterator[TensorRow]:
        columns = self._columns
        return (TensorRow(columns, i) for i in range(self._n))


def _rows_of(columns: dict[str, list[Any]], n: int) -> Any:
    """A few rows as dicts (the few-rows scorer reads each value with .get: a dict's is C), more as
    views made when asked for."""
    if n > SMALL_BATCH:
        return TensorRows(columns, n)
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)] or [
        {}
    ] * n


class V2Batch(Batch):
    """The columns of one inference request straight from its tensors (`column()` gives them as they
    are), and what its answer needs: the request's id, the outputs asked for and how, the rank of its
    shapes, the reason codes asked for, the pass-through ids' datatypes and what is to be reported."""

    __slots__ = (
        "absent",
        "binary",
        "columns",
        "id_types",
        "rank",
        "reasons",
        "request_id",
        "unknown",
        "wanted",
    )

    def __init__(
        self,
        columns: dict[str, list[Any]],
        n: int,
        *,
        request_id: str | None = None,
        wanted: list[Wanted] | None = None,
        binary: bool = False,
        rank: int = 1,
        reasons: int = 0,
        id_types: dict[str, str] | None = None,
        unknown: list[str] | None = None,
        absent: list[str] | None = None,
    ) -> None:
        super().__init__(_rows_of(columns, n))
        self.columns = columns
        self.request_id = request_id
        self.wanted = wanted
        self.binary = binary
        self.rank = rank
        self.reasons = reasons
        self.id_types = id_types or {}
        self.unknown = unknown or []
        self.absent = absent or []

    def column(self, name: str) -> list[Any]:
        values = self.columns.get(name)
        return values if values is not None else [None] * len(self.rows)

    def passthrough(self, name: str) -> list[Any]:
        values = self.columns.get(name) if name in self.id_types else None
        return values if values is not None else [ABSENT] * len(self.rows)

    def inspect_keys(self, names: ColumnNames, missing: Any = None) -> KeyReport | None:
        """Inputs outside the input schema, model columns without an input: all rows have (lack) them."""
        if not self.unknown and not self.absent:
            return None
        n = len(self.rows)
        report = KeyReport(unknown=dict.fromkeys(self.unknown), unknown_rows=n if self.unknown else 0)
        absent = set(self.absent)
        report.imputed = {c: n for c in names.ordered if c in absent}
        report.imputed_rows = n if absent else 0
        return report

    def normalised_key(self, model_sha: str) -> str:
        """Everything the answer depends on, whatever bytes carried it: the columns' values (msgpack keeps
        every float's bits, NaN and infinity too) and what the request asked of the answer."""
        wanted = None if self.wanted is None else [(w.name, w.binary) for w in self.wanted]
        asked = (self.request_id, wanted, self.binary, self.rank, self.reasons, self.id_types, self.unknown)
        digest = blake3.blake3(msgspec.msgpack.encode((self.columns, asked, self.absent))).hexdigest()
        return f"propensity:{model_sha[:16]}:tensors:{digest[:40]}"


# --- the codec ----------------------------------------------------------------------------------------------
class V2Codec:
    """One inference request's codec, made per request: the binary extension puts the length of the JSON
    header in an HTTP header (`header_length`; None: the body is JSON only). After `encode`, `media_type`
    and `answer_header_length` describe the answer (JSON only, or binary tensor data after it)."""

    def __init__(
        self, *, model_name: str, max_rows: int, max_errors: int, header_length: int | None = None
    ) -> None:
        self.model_name = model_name
        self.max_rows = max_rows
        self.max_errors = max_errors
        self.header_length = header_length
        self.media_type = JSON_TYPE
        # The answer names the model as the request did; and the same bytes are another request with
        # another header length: the cache keys say both.
        self.key_suffix = f":v2:{model_name}" + ("" if header_length is None else f":h{header_length}")
        self.answer_header_length: int | None = None

    def check_media_type(self, content_type: str | None) -> None:
        """JSON, or binary tensor data; no Content-Type at all too (tritonclient sends none)."""
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if not media or media in (JSON_TYPE, BINARY_TYPE):
            return
        if media.startswith("application/") and media.endswith("+json"):
            return
        raise UnsupportedMediaType(
            f"an inference request is {JSON_TYPE}, or {BINARY_TYPE} with binary tensor data after its JSON "
            f"header (Inference-Header-Content-Length); got {media[:60]!r}"
        )

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = no_pause) -> V2Batch:
        tail: memoryview | None = None
        if self.header_length is not None:
            if self.header_length == 0:
                raise InferenceRequestError(
                    "a raw binary request (Inference-Header-Content-Length: 0) is for models with one input; "
                    f"this model takes {FIX_SHAPE}: send the JSON header and give its length"
                )
            try:
                data, tail = v2_binary.split_body(data, self.header_length)
            except ValueError as exc:
                raise InferenceRequestError(str(exc)) from None
        request = read_header(data)
        inputs = read_inputs(model, request.inputs, tail, self.max_rows, pause)
        params = request.parameters or {}
        reasons = reasons_param(params.get(REASONS), len(model.features))
        binary = binary_param(params.get("binary_data_output"))
        wanted = None
        if request.outputs:
            available = output_names(model, inputs.id_types, reasons)
            wanted = wanted_outputs(request.outputs, available, reasons)
        return V2Batch(
            inputs.columns,
            inputs.n,
            request_id=request.id,
            wanted=wanted,
            binary=binary,
            rank=inputs.rank,
            reasons=reasons,
            id_types=inputs.id_types,
            unknown=inputs.unknown,
            absent=[c for c in model.names.ordered if c not in inputs.columns],
        )

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = no_pause
    ) -> bytes:
        assert isinstance(batch, V2Batch)
        if scored.bad_rows:  # a tensor has no slot for one row's errors: the whole request is refused
            raise rows_error(scored.errors, scored.bad_rows, len(batch), self.max_errors)
        if batch.reasons and reason_count(scored) != batch.reasons:
            scored.reasons = top_reasons(model, scored, batch.reasons)  # the body's ask wins
        tensors = _tensors(model, batch, scored)  # in the default order of the outputs
        if batch.wanted is None and not batch.binary and len(batch) < ENCODE_SLICE_ROWS:  # the common call
            outputs: list[Any] = [
                {"name": name, "datatype": datatype, "shape": shape, "data": values}
                for name, (datatype, shape, values) in tensors.items()
            ]
            parts: list[bytes] = []
        else:
            wanted = batch.wanted or [Wanted(name) for name in tensors]
            outputs, parts = _outputs(wanted, tensors, batch.binary, len(batch) >= ENCODE_SLICE_ROWS, pause)
        answer: dict[str, Any] = {"model_name": self.model_name, "model_version": model.version}
        if batch.request_id is not None:
            answer["id"] = batch.request_id
        reported = _reported(batch, scored)
        if reported:
            answer["parameters"] = reported
        answer["outputs"] = outputs
        header = orjson.dumps(answer)
        self.answer_header_length = len(header)
        if not parts:
            return header
        self.media_type = BINARY_TYPE
        return b"".join([header, *parts])


Tensor = tuple[str, list[int], list[Any]]  # (datatype, shape, values)


def _tensors(model: CompiledModel, batch: V2Batch, scored: Scored) -> dict[str, Tensor]:
    """Every output the answer may hold, by name."""
    n = len(batch)
    shape = [n] if batch.rank == 1 else [n, 1]
    columns = scored.columns
    out: dict[str, Tensor] = {PHAT: (FP64, shape, scored.phat), OUTCOME: (INT64, shape, scored.outcome)}
    out.update((name, (datatype, shape, columns[name])) for name, datatype in _input_types(model))
    out.update((name, (datatype, shape, scored.ids[name])) for name, datatype in batch.id_types.items())
    reasons: Reasons | None = scored.reasons
    if reasons is not None:
        wide = [n, reason_count(scored)]
        out[REASONS] = (BYTES, wide, np.array(reasons.names, dtype=object)[reasons.inputs].ravel().tolist())
        out[CONTRIBUTIONS] = (FP64, wide, reasons.contributions.ravel().tolist())
    return out


@lru_cache(maxsize=8)
def _input_types(model: CompiledModel) -> tuple[tuple[str, str], ...]:
    """(model input, its datatype) in alphabetical order: INT64 for the 0/1 dummies (integers on
    /predict), FP64 for the rest."""
    dummies = dummy_inputs(model)
    return tuple((f, INT64 if f in dummies else FP64) for f in sorted(model.features))


def _outputs(
    wanted: list[Wanted], tensors: dict[str, Tensor], binary: bool, big: bool, pause: Callable[[], None]
) -> tuple[list[Any], list[bytes]]:
    """The answer's outputs (each encoded on its own, with a pause after it, when the batch is big: one
    orjson call for all of them would hold the GIL for the whole answer) and their binary data."""
    outputs: list[Any] = []
    parts: list[bytes] = []
    for want in wanted:
        datatype, shape, values = tensors[want.name]
        output: dict[str, Any] = {"name": want.name, "datatype": datatype, "shape": shape}
        part = binary_data(values, datatype) if (binary if want.binary is None else want.binary) else None
        if part is None:
            output["data"] = values
        else:
            output["parameters"] = {"binary_data_size": len(part)}
            parts.append(part)
        if big:
            outputs.append(orjson.Fragment(orjson.dumps(output)))
            pause()
        else:
            outputs.append(output)
    return outputs, parts


def reason_count(scored: Scored) -> int:
    """The reason codes per row the scored batch holds (0: none)."""
    reasons: Reasons | None = scored.reasons
    return 0 if reasons is None else int(reasons.inputs.shape[1])


def binary_data(values: list[Any], datatype: str) -> bytes | None:
    """An output's binary tensor data; None when it holds what binary data cannot carry (a null id)."""
    if datatype == BYTES:
        if not all(type(v) is str for v in values):
            return None
        return v2_binary.write_bytes(values)
    if None in values:
        return None
    return v2_binary.write_fixed(values, datatype)


def _reported(batch: V2Batch, scored: Scored) -> dict[str, Any]:
    """What the answer's parameters report, as its headers do: imputed columns, unknown inputs, unseen
    category values (a tensor client may not see the headers)."""
    out: dict[str, Any] = {}
    if batch.absent:
        out["imputed_inputs"] = ",".join(batch.absent)
    if batch.unknown:
        out["unknown_inputs"] = ",".join(batch.unknown)
    if scored.unseen:
        out["unseen_categories"] = ",".join(f"{c}={n}" for c, n in scored.unseen.items())
    return out


# --- what the model reads and answers ----------------------------------------------------------------------
@lru_cache(maxsize=8)  # per model version: the few a worker serves in its life
def dummy_inputs(model: CompiledModel) -> frozenset[str]:
    """The model inputs that are 0/1 indicators (INT64: /predict answers them as integers)."""
    return frozenset(name for cat in model.categories for name in cat.dummies)


def output_names(model: CompiledModel, id_types: dict[str, str], reasons: int) -> list[str]:
    """An answer's outputs in their default order."""
    names = [*_model_outputs(model), *id_types]
    return [*names, REASONS, CONTRIBUTIONS] if reasons else names


@lru_cache(maxsize=8)
def _model_outputs(model: CompiledModel) -> tuple[str, ...]:
    return (PHAT, OUTCOME, *sorted(model.features))


def model_metadata(model: CompiledModel, name: str) -> dict[str, Any]:
    """The model metadata of the Open Inference Protocol: the served version, the raw columns it reads
    (BYTES for categories, money and percent strings; FP64 for plain numbers, which BYTES strings may
    also carry) and its outputs."""
    kinds = column_kinds(model)
    inputs = [
        {"name": c, "datatype": FP64 if kinds[c] == "number" else BYTES, "shape": [-1]}
        for c in model.names.ordered
    ]
    dummies = dummy_inputs(model)
    outputs = [
        {"name": PHAT, "datatype": FP64, "shape": [-1]},
        {"name": OUTCOME, "datatype": INT64, "shape": [-1]},
        *(
            {"name": f, "datatype": INT64 if f in dummies else FP64, "shape": [-1]}
            for f in sorted(model.features)
        ),
    ]
    return {
        "name": name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }
