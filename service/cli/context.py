"""What the commands share at run time: settings with the command line's overrides, the registry, logging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from service.settings import Settings

if TYPE_CHECKING:
    from service.model.registries import ModelRegistry


def load_settings(artifacts_dir: Path | None = None, **overrides: Any) -> Settings:
    """PROPENSITY_* settings; options given on the command line (not None) win over the environment."""
    given = {
        key: value
        for key, value in {"artifacts_dir": artifacts_dir, **overrides}.items()
        if value is not None
    }
    return Settings(**given)


def open_registry(settings: Settings) -> ModelRegistry:
    """The registry the settings name, announced on stderr (stdout stays parseable) as an absolute path."""
    from service.model.registries import open_registry as opened  # numpy: only for the commands that need it

    registry = opened(settings)
    typer.echo(f"registry: {registry.location}", err=True)
    return registry


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
