"""The CLI's one error handler: a bad setting is one line naming the variable (exit 2), a PropensityError is
`error: <detail>` (exit 1), and anything else keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from service.cli import app
from service.cli.errors import BAD_SETTING, FAILED, ReportingGroup, settings_problem
from service.errors import ArtifactError
from service.settings import Settings
from tests.conftest import free_port

runner = CliRunner()
NOT_AN_INT = (
    "error: PROPENSITY_WORKERS='abc': Input should be a valid integer, unable to parse string as an integer"
)
PROPENSITY = Path(sys.executable).parent / "propensity"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PROPENSITY_PORT", str(free_port()))  # should serve ever get past its settings
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["registry", "list"],
        ["registry", "show", "production"],
        ["import-notebook"],
        ["train", "--data", "train.csv"],
        ["retrain", "--data", "train.csv"],
        ["drift-report", "--data", "rows.csv"],
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    args: list[str], env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_WORKERS", "abc")
    result = runner.invoke(app, args)
    assert result.exit_code == BAD_SETTING
    assert result.stdout == ""
    assert result.stderr.splitlines() == [NOT_AN_INT]
    assert not (env / "artifacts").exists()  # stopped before touching the registry


def test_every_bad_setting_is_named_on_the_one_line(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPENSITY_MAX_ROWS", "0")
    monkeypatch.setenv("PROPENSITY_CACHE_ENABLED", "perhaps")
    result = runner.invoke(app, ["registry", "list"])
    assert result.exit_code == BAD_SETTING
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "PROPENSITY_MAX_ROWS='0': Input should be greater than or equal to 1" in line
    assert "PROPENSITY_CACHE_ENABLED='perhaps': Input should be a valid boolean" in line


def test_a_check_across_settings_names_the_variables_it_involves(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_DRIFT_PSI_WARN", "0.5")
    result = runner.invoke(app, ["registry", "list"])
    assert result.exit_code == BAD_SETTING
    assert result.stderr == (
        "error: PROPENSITY_DRIFT_PSI_WARN, PROPENSITY_DRIFT_PSI_ALERT: "
        "drift_psi_warn must not exceed drift_psi_alert\n"
    )


@pytest.mark.parametrize("name", ["..", "a/b", "../x"])
def test_a_model_name_that_leaves_the_registry_is_one_line(
    name: str, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_MODEL_NAME", name)
    result = runner.invoke(app, ["registry", "list"])
    assert result.exit_code == BAD_SETTING
    assert result.stderr.splitlines() == [
        f"error: PROPENSITY_MODEL_NAME={name!r}: a model name is 1 to 64 letters, digits, '_', '.' or '-', "
        "starting with a letter or digit (one directory of the registry)"
    ]
    assert not (env / "artifacts").exists()


def test_a_worker_budget_too_small_for_one_request_is_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_MAX_INFLIGHT_ROWS", "5000")
    result = runner.invoke(app, ["registry", "list"])
    assert result.exit_code == BAD_SETTING
    assert result.stderr == (
        "error: PROPENSITY_MAX_ROWS, PROPENSITY_MAX_INFLIGHT_ROWS: "
        "max_inflight_rows must be at least max_rows\n"
    )


def test_the_autoscaler_settings_go_through_the_same_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPENSITY_AUTOSCALER_TOLERANCE", "lots")
    result = runner.invoke(app, ["autoscale", "--once"])
    assert result.exit_code == BAD_SETTING
    assert result.stderr.splitlines() == [
        "error: PROPENSITY_AUTOSCALER_TOLERANCE='lots': Input should be a valid number, "
        "unable to parse string as a number"
    ]


def test_a_long_value_is_shortened() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(workers="9" * 200)
    line = settings_problem(caught.value)
    assert line is not None and line.startswith("PROPENSITY_WORKERS='999") and "...:" in line
    assert len(line) < 150


def test_the_real_entry_point_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`PROPENSITY_WORKERS=abc propensity serve`, as a user types it."""
    env = {
        **os.environ,
        "PROPENSITY_WORKERS": "abc",
        "PROPENSITY_PORT": str(free_port()),
        "PROPENSITY_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    done = subprocess.run([str(PROPENSITY), "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == BAD_SETTING
    assert done.stdout == ""
    assert done.stderr == NOT_AN_INT + "\n"


# --- the handler on its own app: what is and is not turned into one line ---


class Point(BaseModel):
    x: int


def handled_app() -> typer.Typer:
    demo = typer.Typer(cls=ReportingGroup, pretty_exceptions_enable=False)

    @demo.command()
    def tampered() -> None:
        raise ArtifactError("sha256 of model.joblib does not match")

    @demo.command()
    def bug() -> None:
        Point(x="not a number")

    return demo


def test_a_propensity_error_is_its_detail_and_exit_1() -> None:
    result = runner.invoke(handled_app(), ["tampered"])
    assert result.exit_code == FAILED
    assert result.stderr == "error: sha256 of model.joblib does not match\n"


def test_a_validation_error_outside_settings_is_a_bug_and_keeps_its_traceback() -> None:
    result = runner.invoke(handled_app(), ["bug"])
    assert isinstance(result.exception, ValidationError)
    assert result.exception.title == "Point"


def _needs(module: str) -> typer.Typer:
    """An app whose one command imports `module` as if it were not installed."""
    sub = typer.Typer(cls=ReportingGroup)

    @sub.command()
    def go() -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    @sub.command()
    def other() -> None:  # two commands: `go` stays a subcommand
        pass

    return sub


@pytest.mark.parametrize(
    ("module", "extra"),
    [("sklearn", "train"), ("pandas.core", "train"), ("pyarrow", "files"), ("mlflow.artifacts", "mlflow")],
)
def test_a_missing_extra_is_one_line_naming_it(module: str, extra: str) -> None:
    result = runner.invoke(_needs(module), ["go"])
    assert result.exit_code == FAILED
    assert result.output.startswith(f"error: this command needs '{module}', from the '{extra}' extra")
    assert result.output.rstrip().endswith(f"pip install 'propensity-service[{extra}]'")


def test_a_missing_module_that_is_no_extras_keeps_its_traceback() -> None:
    result = runner.invoke(_needs("uvloop"), ["go"])
    assert isinstance(result.exception, ModuleNotFoundError) and result.exception.name == "uvloop"
