"""The pure parts of `--against`: a chunk's rows as JSON objects, answers as the encoder's columns."""

from __future__ import annotations

from pathlib import Path

from service.files.formats import FileKind, Format
from service.files.remote import _retry_after, _without_empty_ids, rows_of, values_of
from service.files.sources import text_chunks


def test_a_csv_chunk_becomes_json_objects_of_its_strings(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(b'customer_id,x12,x5\r\nC1,"$1,000.00",monday\r\n,,friday\r\nbad\r\n')
    (chunk,) = text_chunks(tmp_path / "in.csv", FileKind(Format.CSV))
    rows = rows_of(chunk)
    assert rows.rows == [
        {"customer_id": "C1", "x12": "$1,000.00", "x5": "monday"},
        {"customer_id": "", "x12": "", "x5": "friday"},
    ]
    assert (rows.lines, rows.records, rows.count) == ([2, 3], [0, 1], 3)
    assert [(r.row, r.line) for r in rows.rejects] == [(2, 4)]  # the ragged record
    # an empty id cell is no id, as in a CSV body; an empty model cell stays (missing, as in CSV)
    assert _without_empty_ids(rows.rows, ("customer_id",), csv=True)[1] == {"x12": "", "x5": "friday"}


def test_answers_become_columns_with_reason_codes_flattened() -> None:
    records = [
        {
            "business_outcome": 0,
            "customer_id": "C1",
            "phat": 0.25,
            "reasons": [{"contribution": -1.5, "input": "x44"}],
        },
        {"business_outcome": 1, "phat": 0.75, "reasons": [{"contribution": 2.0, "input": "x12"}]},
    ]
    columns = ["business_outcome", "customer_id", "phat", "reason_1_contribution", "reason_1_input"]
    assert values_of(records, columns, ("customer_id",)) == {
        "business_outcome": [0, 1],
        "customer_id": ["C1", None],
        "phat": [0.25, 0.75],
        "reason_1_contribution": [-1.5, 2.0],
        "reason_1_input": ["x44", "x12"],
    }


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    import httpx

    assert _retry_after(httpx.Response(503, headers={"retry-after": "1"})) == 1.0
    assert _retry_after(httpx.Response(503, headers={"retry-after": "3600"})) == 10.0
    assert _retry_after(httpx.Response(503)) is None
