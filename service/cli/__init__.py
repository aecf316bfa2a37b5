"""The `propensity` command line: one typer app, command groups in their own modules."""

from service.cli.main import app, main

__all__ = ["app", "main"]
