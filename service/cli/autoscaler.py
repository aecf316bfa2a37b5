"""`propensity autoscale`: the Swarm api service's replicas from Prometheus load, HPA-style."""

from __future__ import annotations

from typing import Annotated

import typer

PANEL = "Autoscaling"
commands = typer.Typer()


@commands.command("autoscale", rich_help_panel=PANEL)
def autoscale(
    dry_run: Annotated[
        bool | None,
        typer.Option(
            "--dry-run/--apply", help="report decisions, never apply them (default: ..._AUTOSCALER_DRY_RUN)"
        ),
    ] = None,
    once: Annotated[bool, typer.Option(help="take one decision, print it and exit")] = False,
) -> None:
    """Scale the Swarm api service from Prometheus load, HPA-style. Settings: PROPENSITY_AUTOSCALER_*."""
    from service.autoscaler.loop import run
    from service.autoscaler.settings import AutoscalerSettings

    settings = AutoscalerSettings() if dry_run is None else AutoscalerSettings(dry_run=dry_run)
    raise typer.Exit(run(settings, once=once))
