"""`--artifacts-dir` on every command that touches the registry, and the registry path each one prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from service.cli import app
from service.model.registry import Registry

runner = CliRunner()

REGISTRY_COMMANDS = [
    ["import-notebook"],
    ["train"],
    ["retrain"],
    ["retrain-scheduler"],
    ["registry", "list"],
    ["registry", "show"],
    ["registry", "verify"],
    ["registry", "promote"],
    ["registry", "rollback"],
    ["serve"],
    ["drift-report"],
    ["performance-report"],
]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no artifacts/ of its own, and no PROPENSITY_ARTIFACTS_DIR."""
    monkeypatch.delenv("PROPENSITY_ARTIFACTS_DIR", raising=False)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("path", REGISTRY_COMMANDS, ids=" ".join)
def test_every_registry_command_takes_artifacts_dir(path: list[str]) -> None:
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert "--artifacts-dir" in [opt for param in command.params for opt in param.opts]


def test_registry_list_from_another_directory_uses_and_prints_the_given_registry(
    approved_registry: Registry, elsewhere: Path
) -> None:
    result = runner.invoke(app, ["registry", "list", "--artifacts-dir", str(approved_registry.root)])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"registry: {approved_registry.root.resolve() / 'propensity'}\n"
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["version", "created_at", "source", "auc_test", "holdout", "aliases"]
    assert lines[1].split()[0] == "v1" and lines[1].endswith("production")
    assert not (elsewhere / "artifacts").exists()


def test_the_environment_names_the_registry_and_the_option_wins(
    approved_registry: Registry, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(approved_registry.root))
    result = runner.invoke(app, ["registry", "verify", "production"])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"registry: {approved_registry.root.resolve() / 'propensity'}\n"
    assert result.stdout == "propensity/v1: OK (sha256 verified, golden rows reproduced)\n"
    result = runner.invoke(app, ["registry", "list", "--artifacts-dir", "empty"])
    assert result.exit_code == 0, result.output
    assert (
        result.stderr == f"registry: {elsewhere / 'empty' / 'propensity'}\n"
    )  # relative: absolute, from cwd
    assert result.stdout.startswith(f"{elsewhere / 'empty' / 'propensity'}: no versions")


def test_the_default_is_artifacts_in_the_working_directory(elsewhere: Path) -> None:
    result = runner.invoke(app, ["registry", "rollback"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"registry: {elsewhere / 'artifacts' / 'propensity'}"
    assert result.stderr.splitlines()[1].startswith("error: ")


def test_import_then_show_on_a_registry_named_by_the_option(tmp_path: Path, elsewhere: Path) -> None:
    root = tmp_path / "reg"
    result = runner.invoke(app, ["import-notebook", "--artifacts-dir", str(root)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "imported the approved notebook model as propensity/v1 (production)\n"
    assert Registry(root).resolve("production") == "v1"
    result = runner.invoke(app, ["registry", "show", "production", "--artifacts-dir", str(root)])
    assert result.exit_code == 0 and result.stdout.startswith("propensity/v1  created ")
