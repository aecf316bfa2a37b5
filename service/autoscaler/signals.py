"""The load signal: instant queries against the Prometheus HTTP API (stdlib urllib, no extra dependency)."""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from service.autoscaler.policy import Sample


class SignalError(Exception):
    """No usable load figure. `reason` is a stable label for metrics."""

    REASONS = (
        "unreachable",
        "http_error",
        "bad_response",
        "query_error",
        "no_data",
        "multiple_series",
        "nan",
    )

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown signal error reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SignalSource(Protocol):
    def fetch(self) -> Sample:
        """The current load, or SignalError."""
        ...


class PrometheusSignal:
    """Asks Prometheus for the total load and for how many replicas report it."""

    def __init__(
        self, url: str, load_query: str, replicas_query: str | None, *, timeout: float = 5.0
    ) -> None:
        self.url = url.rstrip("/")
        self.load_query = load_query
        self.replicas_query = replicas_query
        self.timeout = timeout

    def fetch(self) -> Sample:
        total = self.query(self.load_query)
        reporting = None
        if self.replicas_query is not None:
            try:
                reporting = round(self.query(self.replicas_query))
            except SignalError as exc:
                if exc.reason != "no_data":  # count(...) over nothing is an empty vector: nobody reports
                    raise
                reporting = 0
        return Sample(total, reporting)

    def query(self, promql: str) -> float:
        """The single value of an instant query (a one-element vector or a scalar)."""
        body = self._get("/api/v1/query", {"query": promql})
        try:
            data = body["data"]
            kind, result = data["resultType"], data["result"]
            if kind == "scalar":
                values = [result]
            elif kind == "vector":
                values = [series["value"] for series in result]
            else:
                raise SignalError("bad_response", f"{promql!r} returned a {kind}, not a vector")
            if not values:
                raise SignalError("no_data", f"{promql!r} returned no series")
            if len(values) > 1:
                raise SignalError("multiple_series", f"{promql!r} returned {len(values)} series; sum() them")
            value = float(values[0][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise SignalError("bad_response", f"unexpected answer to {promql!r}: {exc!r}") from exc
        if not math.isfinite(value):
            raise SignalError("nan", f"{promql!r} = {value}")
        return value

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:  # Prometheus answers 400/422 for a bad query, with a JSON body
            detail = _error_text(exc.read()) or exc.reason
            reason = "query_error" if exc.code in (400, 422) else "http_error"
            raise SignalError(reason, f"HTTP {exc.code} from {self.url}: {detail}") from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, DNS, truncated
            raise SignalError("unreachable", f"{self.url}: {getattr(exc, 'reason', exc)}") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise SignalError("bad_response", f"{self.url} did not answer JSON") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise SignalError("bad_response", f"{self.url}: {error or 'status is not success'}")
        return body


def _error_text(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("error", ""))
    except (ValueError, AttributeError):
        return ""
