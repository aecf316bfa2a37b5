"""Content coding negotiation: whether a client accepts gzip (the stored gzip answers are
service/serving/compression.py)."""

from __future__ import annotations


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value admits gzip (RFC 9110, 12.5.3): gzip, x-gzip or * with q > 0;
    an explicit gzip entry overrides *."""
    if not header:
        return False
    explicit: float | None = None
    wildcard: float | None = None
    for item in header.split(","):
        name, _, params = item.partition(";")
        coding = name.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding == "*":
            wildcard = q
        else:
            explicit = q if explicit is None else max(explicit, q)
    q_gzip = explicit if explicit is not None else wildcard
    return q_gzip is not None and q_gzip > 0
