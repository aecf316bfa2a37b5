"""Label items as POST /feedback and `propensity feedback` read them: every bad one named, none guessed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from service.errors import BadBodyShape, InvalidLabels, MalformedJSON, PayloadTooLarge
from service.monitoring.feedback import label_items, parse_labels
from service.monitoring.prediction_store import LabelItem

IDS = ("customer_id",)
TEN_UTC = datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()


def test_both_keys_and_every_spelling_of_a_label_and_a_time() -> None:
    items = parse_labels(
        orjson.dumps(
            [
                {"request_id": "r", "row": 3, "label": 1, "observed_at": "2026-12-01T10:00:00Z"},
                {"request_id": "r", "row": 4, "label": False, "observed_at": 1_796_000_000},
                {"customer_id": "C-1", "label": True},
                {"customer_id": 17, "label": 0, "observed_at": "2026-12-01T10:00:00+01:00"},
            ]
        ),
        IDS,
    )
    assert items == [
        LabelItem(1, "r", 3, None, TEN_UTC),
        LabelItem(0, "r", 4, None, 1_796_000_000.0),
        LabelItem(1, None, None, "C-1", None),
        LabelItem(0, None, None, "17", TEN_UTC - 3600),
    ]


def test_one_object_is_one_label() -> None:
    assert parse_labels(b'{"request_id": "r", "row": 0, "label": 1}', IDS) == [LabelItem(1, "r", 0)]


@pytest.mark.parametrize(
    ("item", "field", "reason"),
    [
        ({"request_id": "r", "row": 0}, "label", "missing"),
        ({"request_id": "r", "row": 0, "label": 2}, "label", "0 or 1"),
        ({"request_id": "r", "row": 0, "label": "1"}, "label", "0 or 1"),
        ({"request_id": "r", "row": 0, "label": 1.0}, "label", "0 or 1"),
        ({"request_id": "r", "label": 1}, "row", "index"),
        ({"request_id": "r", "row": True, "label": 1}, "row", "index"),
        ({"row": 0, "label": 1}, "request_id", "X-Request-ID"),
        ({"request_id": "", "row": 0, "label": 1}, "request_id", "X-Request-ID"),
        ({"label": 1}, "request_id", "missing"),
        ({"customer_id": "C", "request_id": "r", "row": 0, "label": 1}, "customer_id", "not both"),
        ({"customer_id": None, "label": 1}, "customer_id", "non-empty string or a number"),
        ({"customer_id": [1], "label": 1}, "customer_id", "non-empty string or a number"),
        (
            {"request_id": "r", "row": 0, "label": 1, "observed_at": "2026-12-01T10:00:00"},
            "observed_at",
            "zone",
        ),
        ({"request_id": "r", "row": 0, "label": 1, "observed_at": -5}, "observed_at", "zone"),
        ({"request_id": "r", "row": 0, "label": 1, "outcome": 1}, "outcome", "unknown field"),
    ],
)
def test_a_bad_item_is_named_by_its_index_field_and_reason(
    item: dict[str, object], field: str, reason: str
) -> None:
    good = {"request_id": "r", "row": 9, "label": 1}
    with pytest.raises(InvalidLabels) as caught:
        parse_labels(orjson.dumps([good, item]), IDS)
    errors = caught.value.errors
    assert all(e.row == 1 for e in errors)
    assert any(e.field == field and reason in e.reason for e in errors), errors
    assert caught.value.extra["bad_rows"] == [1]


def test_a_chunk_names_its_items_from_where_it_starts() -> None:
    with pytest.raises(InvalidLabels) as caught:
        label_items([{"request_id": "r", "row": 0, "label": 1}, {"label": 5}], IDS, first=102)
    assert {e.row for e in caught.value.errors} == {103}


def test_what_is_not_a_list_of_labels() -> None:
    with pytest.raises(MalformedJSON):
        parse_labels(b"[{", IDS)
    with pytest.raises(BadBodyShape):
        parse_labels(b"[]", IDS)
    with pytest.raises(BadBodyShape):
        parse_labels(b'"labels"', IDS)
    with pytest.raises(PayloadTooLarge):
        parse_labels(orjson.dumps([{"label": 1}] * 11), IDS, max_items=10)
