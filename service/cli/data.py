"""Data commands: synthetic training data, and the business-approved notebook model into the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.context import load_settings, open_registry
from service.cli.options import ArtifactsDir

PANEL = "Data"
commands = typer.Typer()


@commands.command("make-data", rich_help_panel=PANEL)
def make_data(
    out: Annotated[Path, typer.Option(help="CSV to write")],
    rows: Annotated[int, typer.Option(min=1, help="number of rows")] = 40_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 26,
    target: Annotated[
        bool, typer.Option("--target/--no-target", help="include y (train file) or not")
    ] = True,
) -> None:
    """Write calibrated synthetic data shaped like exercise_26_train.csv (or the test file)."""
    from service.model.synthetic import write_synthetic_csv

    out.parent.mkdir(parents=True, exist_ok=True)
    write_synthetic_csv(out, rows, seed, target=target)
    typer.echo(f"wrote {rows} rows to {out}")


@commands.command("import-notebook", rich_help_panel=PANEL)
def import_notebook(artifacts_dir: ArtifactsDir = None) -> None:
    """Publish the business-approved notebook model; it becomes `production` if none exists."""
    from service.model.notebook_import import import_notebook as run

    registry = open_registry(load_settings(artifacts_dir))
    version = run(registry)
    aliases = [a for a, info in registry.aliases().items() if info["version"] == version]
    typer.echo(
        f"imported the approved notebook model as {registry.name}/{version}"
        + (f" ({', '.join(aliases)})" if aliases else "")
    )
