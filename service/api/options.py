"""Per-call options a client asks for beside its body: reason codes (`?reasons=k` or `X-Reason-Codes: k`)."""

from __future__ import annotations

from urllib.parse import parse_qs

from service.errors import InputError

REASONS_HEADER = "X-Reason-Codes"
ALL = "all"


class BadOption(InputError):
    status = 422
    kind = "bad-option"
    title = "Invalid request option"


def reason_count(query_string: bytes, header: str | None, inputs: int) -> int:
    """How many reason codes per row the call asks for: `reasons` in the query, else the X-Reason-Codes
    header; 0 when neither is given. "all", or more than the model's inputs, gives every input. Both are
    checked when both are given (the query wins): a bad value is a client's bug, never silently ignored."""
    count = 0 if header is None else _count(header, inputs, REASONS_HEADER)
    if query_string:
        given = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("reasons")
        if given:
            count = _count(given[-1], inputs, "reasons")
    return count


def _count(value: str, inputs: int, where: str) -> int:
    text = value.strip().lower()
    if text == ALL:
        return inputs
    if not (text.isascii() and text.isdigit()):
        raise BadOption(
            f"{where} must be a whole number of reason codes per row (0 to {inputs}) or 'all'; "
            f"got {value[:40]!r}",
            option="reasons",
        )
    return min(int(text), inputs)
