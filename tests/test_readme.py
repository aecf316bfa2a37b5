"""The README stays true: it opens with the two commands and documents every setting."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_opens_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    assert "make serve" in first_block and "make test" in first_block


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name for name in Settings.model_fields if f"`PROPENSITY_{name.upper()}`" not in README]
    assert not missing, f"README lacks {missing}"


def test_every_setting_is_described() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []
