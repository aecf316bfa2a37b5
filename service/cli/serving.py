"""`propensity serve`: gunicorn + uvicorn workers over the registry's followed model."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from service.cli.context import load_settings, open_registry
from service.cli.errors import missing_extra
from service.cli.options import ArtifactsDir
from service.errors import ArtifactNotFound
from service.model.registries import ModelRegistry
from service.settings import Settings

PANEL = "Serving"
commands = typer.Typer()


@dataclass(frozen=True)
class ServePlan:
    """What `serve` execs: gunicorn's argv and the environment its workers read their Settings from."""

    settings: Settings
    argv: list[str]
    env: dict[str, str]


def serve_plan(
    port: int | None = None,
    workers: int | None = None,
    host: str | None = None,
    artifacts_dir: Path | None = None,
) -> ServePlan:
    """Validate the settings (a bad PROPENSITY_* stops here, before gunicorn) and hand them to the workers:
    options given on the command line are passed on as PROPENSITY_* variables, the rest stay as they are."""
    overrides = {
        key: value
        for key, value in {"port": port, "workers": workers, "host": host}.items()
        if value is not None
    }
    settings = load_settings(artifacts_dir, **overrides)
    env = dict(os.environ)
    env.update({f"PROPENSITY_{key.upper()}": str(value) for key, value in overrides.items()})
    env["PROPENSITY_ARTIFACTS_DIR"] = str(settings.artifacts_dir.resolve())
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:service.api.gunicorn_conf",
        "service.api.app:gunicorn_app()",
    ]
    return ServePlan(settings, argv, env)


@commands.command("serve", rich_help_panel=PANEL)
def serve(
    port: Annotated[int | None, typer.Option(help="port (default PROPENSITY_PORT or 1313)")] = None,
    workers: Annotated[int | None, typer.Option(help="gunicorn workers (default PROPENSITY_WORKERS)")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default PROPENSITY_HOST)")] = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Serve the API with gunicorn + uvicorn workers. Imports the approved model on an empty registry."""
    plan = serve_plan(port, workers, host, artifacts_dir)
    settings = plan.settings
    registry = open_registry(settings)
    if settings.model_version is None:
        version = production_version(registry)
        typer.echo(f"serving {settings.model_name} alias {settings.model_alias} ({version})", err=True)
    # exec: gunicorn becomes this process and receives SIGTERM directly
    os.execve(sys.executable, plan.argv, plan.env)


def production_version(registry: ModelRegistry) -> str:
    """The `production` version; on a registry without one, the approved model imported and promoted,
    which takes the training stack (a serving install without it is told how to get a model)."""
    if "production" in registry.aliases():
        return registry.resolve("production")
    try:
        from service.model.notebook_import import ensure_production
    except ModuleNotFoundError as exc:
        if missing_extra(exc) is None:
            raise
        raise ArtifactNotFound(
            "the registry has no production model, and importing the approved one takes the 'train' "
            "extra, which this serving install does not have: serve a registry that has one (the image "
            "bakes it in, BAKE_MODEL=1), or run `propensity import-notebook` where "
            "'propensity-service[train]' is installed"
        ) from None
    return ensure_production(registry)
