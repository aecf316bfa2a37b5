"""`make serve` and `propensity serve` honour PROPENSITY_*: checked without starting a server.

`make -n` prints the command `make serve` would run; `serve_plan` is what `propensity serve` hands to
gunicorn, and gunicorn's own config module (in a child process) says what it would bind."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.cli.serving import ServePlan, serve_plan

ROOT = Path(__file__).resolve().parents[3]
# make variables a calling make (say `make test PORT=1414`) would hand down to the make this test runs
MAKE_STATE = ("PORT", "WORKERS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def make_serve(*make_args: str, **env: str) -> list[str]:
    """The arguments `make serve` passes to `propensity serve` (make -n: printed, not run)."""
    clean = {k: v for k, v in os.environ.items() if k not in MAKE_STATE}
    done = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/bin/propensity", "serve", *make_args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [line for line in done.stdout.splitlines() if "propensity serve" in line]
    argv = shlex.split(line)
    return argv[argv.index("serve") + 1 :]


def test_make_serve_leaves_the_port_to_propensity_settings() -> None:
    assert make_serve(PROPENSITY_PORT="1515", PROPENSITY_WORKERS="3") == []


def test_make_variables_given_explicitly_still_win() -> None:
    assert make_serve("PORT=1414", PROPENSITY_PORT="1515") == ["--port", "1414"]
    assert make_serve(WORKERS="5") == ["--workers", "5"]


def gunicorn_binds(plan: ServePlan, tmp_path: Path) -> dict[str, object]:
    """What gunicorn's config module makes of the environment `serve` execs it with (no server started)."""
    code = (
        "import json, service.api.gunicorn_conf as c; "
        "print(json.dumps({'bind': c.bind, 'workers': c.workers}))"
    )
    env = {**plan.env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_propensity_port_reaches_gunicorn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPENSITY_PORT", "1515")
    monkeypatch.setenv("PROPENSITY_WORKERS", "3")
    monkeypatch.setenv("PROPENSITY_HOST", "127.0.0.1")
    plan = serve_plan(artifacts_dir=tmp_path / "artifacts")
    assert plan.settings.listen_port == 1515
    assert plan.env["PROPENSITY_ARTIFACTS_DIR"] == str(tmp_path / "artifacts")
    assert plan.argv[1:] == [
        "-m",
        "gunicorn",
        "-c",
        "python:service.api.gunicorn_conf",
        "service.api.app:gunicorn_app()",
    ]
    assert gunicorn_binds(plan, tmp_path) == {"bind": ["127.0.0.1:1515"], "workers": 3}


def test_options_override_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPENSITY_PORT", "1515")
    monkeypatch.setenv("PROPENSITY_HOST", "127.0.0.1")
    plan = serve_plan(port=1414, workers=1, artifacts_dir=tmp_path)
    assert (plan.env["PROPENSITY_PORT"], plan.env["PROPENSITY_WORKERS"]) == ("1414", "1")
    assert gunicorn_binds(plan, tmp_path) == {"bind": ["127.0.0.1:1414"], "workers": 1}


def test_a_bad_option_value_is_named_like_its_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--workers", "0", "--artifacts-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == "error: PROPENSITY_WORKERS=0: Input should be greater than or equal to 1\n"
