"""One scoring call over HTTP, the same for every door (/predict, the Open Inference Protocol, MLflow's
/invocations): admit before the body is read, read it under the watchdog, undo its Content-Encoding,
infer, and always give the worker's budget back. Each door only picks the codec and options and turns
the `Answer` (or the PropensityError raised instead) into its own protocol."""

from __future__ import annotations

from typing import NamedTuple

from starlette.requests import Request
from starlette.types import Scope

from service.api.body import read_body
from service.api.content_encoding import accepts_gzip
from service.api.options import reason_count
from service.api.request_coding import decode_body
from service.api.state import app_state
from service.serving.pipeline import Answer, Codec


class Head(NamedTuple):
    content_type: str | None
    content_length: int | None
    accept_encoding: str | None
    content_encoding: str | None
    reasons: str | None  # X-Reason-Codes
    accept: str | None


_HEAD_NAMES = frozenset(
    {
        b"content-type",
        b"content-length",
        b"accept-encoding",
        b"content-encoding",
        b"x-reason-codes",
        b"accept",
    }
)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def request_head(scope: Scope) -> Head:
    """The headers a scoring call reads (the first of each; None when absent), in one pass over the raw
    headers (ASGI gives their names in lower case)."""
    seen: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _HEAD_NAMES and name not in seen:
            seen[name] = value
    get = seen.get
    length = get(b"content-length")
    return Head(
        _text(get(b"content-type")),
        int(length) if length is not None and length.isdigit() else None,
        _text(get(b"accept-encoding")),
        _text(get(b"content-encoding")),
        _text(get(b"x-reason-codes")),
        _text(get(b"accept")),
    )


async def run_call(
    request: Request, codec: Codec | None = None, *, head: Head | None = None, reasons: int | None = None
) -> Answer:
    """The answer to one scoring request in `codec`'s wire format (None: the pipeline's JSON rows).
    `head`: the request's headers when the door read them already; `reasons`: the reason codes per row
    when the door's protocol says (else the request's `reasons` query parameter or X-Reason-Codes)."""
    state = app_state(request)
    pipeline = state.pipeline
    if head is None:
        head = request_head(request.scope)
    content_type, content_length, accept_encoding, content_encoding, asked, _ = head
    request_id = request.scope["state"].get("request_id", "") if "state" in request.scope else ""
    # 503 at once when the budget is full
    call = pipeline.admit(content_type, content_length, codec=codec, request_id=request_id)
    try:
        if reasons is None:
            query = request.scope["query_string"]
            reasons = reason_count(query, asked, len(call.model.features)) if query or asked else 0
        body = await read_body(request, pipeline.max_body_bytes, call=call, reads=state.body_reads)
        if content_encoding is not None:
            body = decode_body(body, content_encoding, pipeline.max_body_bytes, call.hold_bytes_at_least)
        return await pipeline.infer(call, body, accepts_gzip=accepts_gzip(accept_encoding), reasons=reasons)
    finally:  # errors, a client gone, a cancelled task: the budget is always given back
        call.release()
