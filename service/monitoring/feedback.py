"""Labels coming back, and the performance they let us measure: what POST /feedback and GET /performance
(and the CLI) do once the transport is taken off.

A label item is `{"request_id": "...", "row": 0, "label": 1, "observed_at": "2026-12-01T10:00:00Z"}`, or
keyed by a pass-through id instead of (request_id, row): `{"customer_id": "C-17", "label": 0}` (any of the
configured pass-through fields; it matches the latest logged row with that id scored at or before
`observed_at`). `label` is 0 or 1 (true/false too); `observed_at` is optional, ISO 8601 with a zone or
epoch seconds. Every bad item is named by its index (`row` in the problem's errors), field and reason,
and a call with any bad item stores nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from service.errors import (
    BadBodyShape,
    FieldError,
    InvalidLabels,
    MalformedJSON,
    PayloadTooLarge,
    PredictionLogUnavailable,
)
from service.monitoring.performance import evaluate
from service.monitoring.prediction_store import FeedbackCounts, LabelItem, PredictionStore
from service.monitoring.shadow_performance import judge
from service.serving.metrics import Metrics
from service.settings import Settings

T = TypeVar("T")
log = logging.getLogger("propensity.feedback")
MAX_LABELS = 10_000
LISTED = 100  # conflicts and unmatched items listed in an answer (all are counted)
KEYS = ("request_id", "row", "label", "observed_at")
BY = ("day", "hour", "version", "all")


def parse_labels(
    body: bytes, passthrough: Sequence[str], *, max_items: int = MAX_LABELS, max_errors: int = 100
) -> list[LabelItem]:
    """The label items of a /feedback body; InputError naming every bad item's index, field and reason."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"body is not JSON: {exc}") from None
    return label_items(data, passthrough, max_items=max_items, max_errors=max_errors)


def label_items(
    data: Any,
    passthrough: Sequence[str],
    *,
    max_items: int = MAX_LABELS,
    max_errors: int = 100,
    first: int = 0,
) -> list[LabelItem]:
    """The label items of decoded JSON (a list of objects, or one); `first`: the index of its first item
    in what the user sent (a CSV's chunks name their items by line)."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise BadBodyShape("send a JSON array of label objects (or one object)")
    if not data:
        raise BadBodyShape("no labels: send 1 to 10,000 label objects")
    if len(data) > max_items:
        raise PayloadTooLarge(f"{len(data)} labels in one call; at most {max_items}")
    items: list[LabelItem] = []
    errors: list[FieldError] = []
    for i, raw in enumerate(data, start=first):
        item = _item(i, raw, passthrough, errors)
        if item is not None:
            items.append(item)
    if errors:
        bad = sorted({e.row for e in errors if e.row is not None})
        top = errors[0]
        raise InvalidLabels(
            f"{len(bad)} of {len(data)} label(s) cannot be stored; first: item {top.row}, "
            f"field {top.field}: {top.reason}",
            errors=errors[:max_errors],
            error_count=len(errors),
            bad_rows=bad[:max_errors],
            bad_row_count=len(bad),
        )
    return items


def _item(i: int, raw: Any, passthrough: Sequence[str], errors: list[FieldError]) -> LabelItem | None:
    if not isinstance(raw, dict):
        errors.append(FieldError(i, None, "a label is a JSON object", _shown(raw)))
        return None
    before = len(errors)
    ids = [f for f in passthrough if f in raw]
    for key in raw:
        if key not in KEYS and key not in passthrough:
            known = ", ".join([*KEYS, *passthrough])
            errors.append(FieldError(i, key, f"unknown field (a label has {known})"))
    label = _label(i, raw, errors)
    observed = _observed_at(i, raw.get("observed_at"), errors)
    request_id, row, passthrough_id = _key(i, raw, ids, errors)
    if len(errors) > before or label is None:
        return None
    return LabelItem(label, request_id, row, passthrough_id, observed)


def _label(i: int, raw: dict[str, Any], errors: list[FieldError]) -> int | None:
    if "label" not in raw:
        errors.append(FieldError(i, "label", "missing: 0 or 1"))
        return None
    value = raw["label"]
    if value is True or value is False:
        return int(value)
    if type(value) is int and value in (0, 1):
        return value
    errors.append(FieldError(i, "label", "a label is 0 or 1 (or true/false)", _shown(value)))
    return None


def _key(
    i: int, raw: dict[str, Any], ids: list[str], errors: list[FieldError]
) -> tuple[str | None, int | None, str | None]:
    has_request = "request_id" in raw or "row" in raw
    if has_request and ids:
        errors.append(FieldError(i, ids[0], "key a label by request_id and row, or by one id, not both"))
        return None, None, None
    if len(ids) > 1:
        errors.append(FieldError(i, ids[1], f"key a label by one id ({ids[0]} or {ids[1]}), not several"))
        return None, None, None
    if ids:
        value = raw[ids[0]]
        if type(value) is str and value:
            return None, None, value
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            return None, None, str(value)  # logged ids are kept as text the same way
        errors.append(FieldError(i, ids[0], "an id is a non-empty string or a number", _shown(value)))
        return None, None, None
    request_id, row = raw.get("request_id"), raw.get("row")
    if not has_request:
        errors.append(FieldError(i, "request_id", "missing: request_id and row, or a pass-through id"))
        return None, None, None
    if type(request_id) is not str or not 0 < len(request_id) <= 128:
        errors.append(
            FieldError(i, "request_id", "the X-Request-ID of the answer (1-128 chars)", _shown(request_id))
        )
    if type(row) is not int or row < 0:
        errors.append(FieldError(i, "row", "the row's index in its request (0, 1, ...)", _shown(row)))
    return (request_id, row, None) if type(request_id) is str and type(row) is int else (None, None, None)


def _observed_at(i: int, value: Any, errors: list[FieldError]) -> float | None:
    if value is None:
        return None
    if type(value) in (int, float) and math.isfinite(value) and value >= 0:
        return float(value)
    if type(value) is str:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if when.tzinfo is not None:
                return when.timestamp()
    errors.append(
        FieldError(
            i,
            "observed_at",
            "ISO 8601 with a time zone (2026-12-01T10:00:00Z) or epoch seconds",
            _shown(value),
        )
    )
    return None


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def counts_body(counts: FeedbackCounts, items: Sequence[LabelItem]) -> dict[str, Any]:
    return {
        "received": len(items),
        "matched": counts.matched,
        "unmatched": counts.unmatched,
        "duplicate": counts.duplicate,
        "conflicting": counts.conflicting,
        "conflicts": [
            {"item": i, "label": items[i].label, "stored": stored} for i, stored in counts.conflicts[:LISTED]
        ],
        "unmatched_items": counts.unmatched_items[:LISTED],
    }


class Feedback:
    """The store behind /feedback and /performance (opened on first use, migrated once); blocking calls,
    for a worker thread."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        open_store: Callable[[str], PredictionStore] = PredictionStore.open,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._open_store = open_store
        self._store: PredictionStore | None = None
        self._lock = threading.Lock()

    def store(self) -> PredictionStore:
        with self._lock:
            if self._store is None:
                store = self._open_store(self.settings.prediction_log_database)
                try:
                    store.migrate()
                except Exception as exc:
                    store.close()
                    raise _unavailable(exc) from None
                self._store = store
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def receive(self, items: Sequence[LabelItem]) -> dict[str, Any]:
        try:
            counts = self.store().apply_labels(items)
        except PredictionLogUnavailable:
            raise
        except Exception as exc:
            raise _unavailable(exc) from None
        for result in ("matched", "unmatched", "duplicate", "conflicting"):
            value = getattr(counts, result)
            if value:
                self.metrics.feedback_labels.labels(result).inc(value)
        return counts_body(counts, items)

    def performance(
        self, *, since: float, until: float | None, by: str, version: str | None, cutoff: float
    ) -> dict[str, Any]:
        frame = self._read(lambda store: store.frame(since, until, version))
        end = until if until is not None else time.time()
        report = evaluate(
            frame,
            cutoff=cutoff,
            by=by,  # type: ignore[arg-type]  # the route checks it is one of BY
            min_labels=self.settings.performance_min_labels,
            since=since,
            until=end,
        )
        return report.to_dict()

    def _read(self, read: Callable[[PredictionStore], T]) -> T:
        """`read` of the store; a database that does not answer is PredictionLogUnavailable (a 503)."""
        try:
            return read(self.store())
        except PredictionLogUnavailable:
            raise
        except Exception as exc:
            raise _unavailable(exc) from None

    def shadow_performance(self, *, since: float, until: float | None, version: str | None) -> dict[str, Any]:
        """The challengers shadow scoring compared, judged on the labelled rows (shadow_performance.py)."""
        frame = self._read(lambda store: store.shadow_frame(since, until, version))
        min_labels = self.settings.performance_min_labels
        return {
            "since": since,
            "until": until if until is not None else time.time(),
            "min_labels": min_labels,
            "pairs": judge(frame, min_labels=min_labels),
        }


def _unavailable(exc: Exception) -> PredictionLogUnavailable:
    # The driver's message stays in the log: it may name hosts and users, which a client need not see.
    log.warning("prediction log database: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return PredictionLogUnavailable(
        f"the prediction log's database did not answer ({type(exc).__name__}); try again", retry_after=5
    )
