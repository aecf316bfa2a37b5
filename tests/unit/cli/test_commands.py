"""Every documented command is in `propensity --help`, and each lives in the module of its concept."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()

# command -> the module of service/cli/ it belongs to
DOCUMENTED = {
    "make-data": "data",
    "import-notebook": "data",
    "train": "training",
    "retrain": "training",
    "retrain-scheduler": "training",
    "experiment": "training",
    "serve": "serving",
    "score": "scoring",
    "drift-report": "monitoring",
    "performance-report": "monitoring",
    "shadow-performance": "monitoring",
    "feedback": "feedback",
    "autoscale": "autoscaler",
}
REGISTRY = [
    "list", "show", "verify", "upgrade", "keygen", "sign", "export", "import", "promote", "rollback",
    "alias-delete", "history", "diff",
]  # fmt: skip


def test_help_lists_every_documented_command() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    listed = {line.strip("│ ").split(" ")[0] for line in result.stdout.splitlines()}
    assert set(DOCUMENTED) | {"registry"} <= listed
    result = runner.invoke(app, ["registry", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert set(REGISTRY) <= {line.strip("│ ").split(" ")[0] for line in result.stdout.splitlines()}


def test_no_undocumented_commands() -> None:
    group = get_command(app)
    assert set(group.commands) == set(DOCUMENTED) | {"registry"}  # type: ignore[attr-defined]
    assert list(group.commands["registry"].commands) == REGISTRY  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "module"), DOCUMENTED.items())
def test_a_command_lives_in_the_module_of_its_concept(name: str, module: str) -> None:
    callback = get_command(app).commands[name].callback  # type: ignore[attr-defined]
    assert callback.__module__ == f"service.cli.{module}"


def test_registry_commands_live_in_the_registry_module() -> None:
    registry = get_command(app).commands["registry"]  # type: ignore[attr-defined]
    assert {registry.commands[name].callback.__module__ for name in REGISTRY} == {"service.cli.registry"}


def test_no_arguments_prints_help_and_exits_2() -> None:
    result = runner.invoke(app, [], prog_name="propensity")
    assert result.exit_code == 2 and "Usage: propensity" in result.output
