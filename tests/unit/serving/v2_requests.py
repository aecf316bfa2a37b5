"""Open Inference Protocol requests built from rows, as clients build them: one input per column, JSON or
binary tensor data. The binary form is written with tritonclient's own serialiser (and numpy's bytes), not
the service's writer, so a test reads what a real client sends.

A column whose values are all strings (or missing) is BYTES, all numbers (or missing) FP64; a column that
mixes them (the reference rows do) is sent as MLServer's pd_json: each element the JSON text of the value
/predict would get, so every door sees the same values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
from tritonclient.utils import serialize_byte_tensor

Columns = dict[str, list[Any]]
PD_JSON = {"content_type": "pd_json"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def columns_of_rows(rows: list[dict[str, Any]]) -> Columns:
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {c: [row.get(c) for row in rows] for c in names}


def columns_of_frame(frame: pd.DataFrame) -> Columns:
    """A DataFrame's columns, missing values as None (what a JSON null is)."""
    return {str(c): [None if _missing(v) else v for v in frame[c].tolist()] for c in frame.columns}


def rows_of(columns: Columns) -> list[dict[str, Any]]:
    """The same values as /predict rows (an absent value is a null)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def datatype_of(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if all(type(v) is str for v in present):
        return "BYTES"
    if all(type(v) in (int, float) for v in present):
        return "FP64"
    return "pd_json"


def _shape(n: int, rank: int) -> list[int]:
    return [n] if rank == 1 else [n, 1]


def json_input(name: str, values: list[Any], rank: int = 1) -> dict[str, Any]:
    kind = datatype_of(values)
    tensor: dict[str, Any] = {"name": name, "shape": _shape(len(values), rank)}
    if kind == "pd_json":
        data = [orjson.dumps(v).decode() for v in values]
        return tensor | {"datatype": "BYTES", "parameters": PD_JSON, "data": data}
    return tensor | {"datatype": kind, "data": values}


def json_body(columns: Columns, *, rank: int = 1, **request: Any) -> bytes:
    """{"inputs": [...], **request} (id, parameters, outputs) as JSON."""
    inputs = [json_input(name, values, rank) for name, values in columns.items()]
    return orjson.dumps({**request, "inputs": inputs})


def binary_input(name: str, values: list[Any]) -> tuple[dict[str, Any], bytes]:
    """An input's JSON and its binary tensor data: FP64 little-endian (missing: NaN), BYTES through
    tritonclient's serialiser (missing: "", a spelling of missing), pd_json texts as BYTES."""
    kind = datatype_of(values)
    tensor: dict[str, Any] = {"name": name, "shape": [len(values)]}
    if kind == "FP64":
        raw = np.array([math.nan if v is None else v for v in values], dtype="<f8").tobytes()
        return tensor | {"datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}, raw
    if kind == "pd_json":
        texts = np.array([orjson.dumps(v) for v in values], dtype=np.object_)
        raw = serialize_byte_tensor(texts).item()
        return tensor | {"datatype": "BYTES", "parameters": {**PD_JSON, "binary_data_size": len(raw)}}, raw
    strings = np.array(["" if v is None else v for v in values], dtype=np.object_)
    raw = serialize_byte_tensor(strings).item()
    return tensor | {"datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}, raw


def binary_body(columns: Columns, **request: Any) -> tuple[bytes, int]:
    """(the body: JSON header then every input's binary data, the header's length)."""
    pairs = [binary_input(name, values) for name, values in columns.items()]
    header = orjson.dumps({**request, "inputs": [tensor for tensor, _ in pairs]})
    return b"".join([header, *(raw for _, raw in pairs)]), len(header)


def outputs_of(body: bytes, header_length: int | None = None) -> dict[str, Any]:
    """An answer's outputs by name as numpy arrays (binary or JSON data), read as tritonclient reads them."""
    from tritonclient.http import InferResult

    result = InferResult.from_response_body(body, header_length=header_length)
    answer = result.get_response()
    return {o["name"]: result.as_numpy(o["name"]) for o in answer["outputs"]}
