"""`propensity score`: what it prints, the files it writes, its exit codes, and its refusals."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.model.registry import Registry
from service.model.schema import example_rows
from tests.unit.files.conftest import csv_bytes

runner = CliRunner()
ROWS: list[dict[str, Any]] = example_rows()["rows"]


def score(registry: Registry, *args: str) -> Any:
    return runner.invoke(app, ["score", *args, "--artifacts-dir", str(registry.root)], env={"COLUMNS": "250"})


def test_a_clean_file_exits_0_with_a_summary_and_a_manifest(
    approved_registry: Registry, tmp_path: Path
) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_bytes(csv_bytes([dict(r, customer_id=f"C{i}") for i, r in enumerate(ROWS)]))
    result = score(approved_registry, str(src), str(dst), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert f"scored {len(ROWS)} of {len(ROWS)} rows" in result.stdout
    with dst.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["customer_id"] for r in rows] == [f"C{i}" for i in range(len(ROWS))]
    manifest = orjson.loads((tmp_path / "out.manifest.json").read_bytes())
    assert manifest["model"]["version"] == "v1" and manifest["rows"] == {
        "read": len(ROWS),
        "scored": len(ROWS),
        "rejected": 0,
    }
    assert manifest["input"]["path"] == str(src.resolve()) and manifest["rejects"]["path"] is None
    assert not (tmp_path / "out.rejects.csv").exists() and not (tmp_path / "out.csv.partial").exists()


def test_rejected_rows_exit_3_and_are_in_the_rejects_file(
    approved_registry: Registry, tmp_path: Path
) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.jsonl"
    src.write_bytes(csv_bytes([ROWS[0], dict(ROWS[0], x44="lots"), ROWS[1]]))
    result = score(
        approved_registry, str(src), str(dst), "--workers", "1", "--rejects", str(tmp_path / "bad.csv")
    )
    assert result.exit_code == 3, result.output
    assert "rejected 1 rows (1 problems)" in result.output
    assert len(dst.read_bytes().splitlines()) == 2
    with (tmp_path / "bad.csv").open(newline="") as f:
        (reject,) = list(csv.DictReader(f))
    assert reject == {"row": "1", "line": "3", "field": "x44", "reason": "not a number", "value": "lots"}


def test_a_header_without_model_columns_writes_nothing(approved_registry: Registry, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("a,b\n1,2\n")
    result = score(approved_registry, str(src), str(dst), "--workers", "1")
    assert result.exit_code == 1 and "names none of the model's columns" in result.output
    assert not dst.exists() and not (tmp_path / "out.csv.partial").exists()


@pytest.mark.parametrize(
    ("name", "words"),
    [("in.txt", "cannot tell the format"), ("in.parquet.gz", "do not gzip a Parquet file")],
)
def test_a_name_without_a_known_format_is_refused(
    approved_registry: Registry, tmp_path: Path, name: str, words: str
) -> None:
    src = tmp_path / name
    src.write_text("x5\nmonday\n")
    result = score(approved_registry, str(src), str(tmp_path / "out.csv"))
    assert result.exit_code == 1 and words in result.output


def test_a_missing_input_is_a_bad_parameter(approved_registry: Registry, tmp_path: Path) -> None:
    result = score(approved_registry, str(tmp_path / "nope.csv"), str(tmp_path / "out.csv"))
    assert result.exit_code == 2 and "is not a file" in result.output


def test_a_quote_never_closed_names_its_line(
    approved_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.files import sources

    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 10_000)
    src = tmp_path / "in.csv"
    good = csv_bytes([ROWS[0]] * 3)
    src.write_bytes(good + b'"open,' + b"x" * 20_000 + b"\n" + good.split(b"\n", 1)[1] * 50)
    result = score(
        approved_registry, str(src), str(tmp_path / "out.csv"), "--workers", "1", "--chunk-mb", "0.01"
    )
    assert result.exit_code == 1 and "is never closed" in result.output and "line 5" in result.output
    assert not (tmp_path / "out.csv").exists()


def test_id_columns_and_a_version_by_name(approved_registry: Registry, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"".join(orjson.dumps(dict(r, account=i)) + b"\n" for i, r in enumerate(ROWS)))
    result = score(
        approved_registry, str(src), str(dst), "--model", "v1", "--id-column", "account", "--workers", "2"
    )
    assert result.exit_code == 0, result.output
    assert [orjson.loads(line)["account"] for line in dst.read_bytes().splitlines()] == list(range(len(ROWS)))
