"""The binary tensor data extension of the Open Inference Protocol (Triton's, KServe's): tensors as raw
bytes after the JSON header of a request or an answer.

A body with binary tensors is the JSON object, then each binary tensor's bytes in the order the JSON lists
the tensors; the Inference-Header-Content-Length header gives the JSON's length and each tensor's
`parameters.binary_data_size` its own. Fixed-size types are little-endian, row-major, without padding
(BOOL one byte, 0 or 1); a BYTES element is a 4-byte little-endian length, then that many bytes.

Here only the bytes: the codec (service/serving/v2_codec.py) says which tensor is which. Every reader
raises ValueError with the reason, never anything else, so the codec can name the tensor it was reading.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

BYTES = "BYTES"
# datatype -> the numpy dtype of its binary form (little-endian); BF16 has none in numpy.
FIXED: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
ITEM_SIZE: dict[str, int] = {**{name: np.dtype(dt).itemsize for name, dt in FIXED.items()}, "BF16": 2}
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: int) -> tuple[bytes, memoryview]:
    """(the JSON header, the binary tensor data after it)."""
    if header_length > len(body):
        raise ValueError(
            f"Inference-Header-Content-Length is {header_length} but the body has only {len(body)} bytes"
        )
    view = memoryview(body)
    return bytes(view[:header_length]), view[header_length:]


def read_fixed(raw: memoryview, datatype: str, count: int) -> list[Any]:
    """`count` elements of a fixed-size datatype as Python values (int, float or bool)."""
    size = ITEM_SIZE[datatype]
    if len(raw) != count * size:
        raise ValueError(
            f"binary_data_size {len(raw)} does not hold {count} {datatype} element(s) of {size} byte(s)"
        )
    values: list[Any] = np.frombuffer(raw, dtype=FIXED[datatype]).tolist()
    return values


def read_bytes(raw: memoryview, count: int) -> list[bytes]:
    """`count` BYTES elements (each a 4-byte length, then the bytes), exactly filling `raw`."""
    out: list[bytes] = []
    at, end = 0, len(raw)
    unpack = _LENGTH.unpack_from
    while at < end:
        if end - at < 4:
            raise ValueError(
                f"element {len(out)} is cut short: {end - at} byte(s) where a 4-byte length goes"
            )
        (length,) = unpack(raw, at)
        at += 4
        if length > end - at:
            raise ValueError(f"element {len(out)} says {length} bytes, but only {end - at} remain")
        out.append(bytes(raw[at : at + length]))
        at += length
    if len(out) != count:
        raise ValueError(f"binary_data_size holds {len(out)} BYTES element(s), the shape says {count}")
    return out


def write_fixed(values: Sequence[Any], datatype: str) -> bytes:
    """Values of a fixed-size datatype as their binary tensor data."""
    return np.asarray(values, dtype=FIXED[datatype]).tobytes()


def write_bytes(values: Sequence[str]) -> bytes:
    """Strings as a BYTES tensor's binary data (UTF-8, each after its 4-byte length)."""
    encoded = [v.encode("utf-8") for v in values]
    pack = _LENGTH.pack
    return b"".join(chain.from_iterable((pack(len(e)), e) for e in encoded))


# --- where the JSON header of a body ends ---------------------------------------------------------------
# A JSON string (escapes included) or one bracket: what decides the nesting depth.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]', re.DOTALL)


def json_header_length(body: bytes) -> int | None:
    """The length of the JSON object a body starts with (binary data may follow it); None when the body
    does not start with a whole JSON object. For answers this service wrote (a cached one, whose length
    was not kept): orjson's output, so strings and brackets are all there is to follow."""
    if body[:1] != b"{":
        return None
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token in (b"{", b"["):
            depth += 1
        elif token in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return match.end()
    return None
