"""The `propensity` command line: one typer app, one error handler (errors.py), a module per command group.

Each command imports the code that does its work inside its body: `propensity --help`, `serve` and
`autoscale` then start without importing pandas, scikit-learn or statsmodels.
"""

from __future__ import annotations

import typer

from service.cli import autoscaler, data, feedback, monitoring, registry, scoring, serving, training
from service.cli.errors import ReportingGroup

app = typer.Typer(
    cls=ReportingGroup,
    help="Propensity service: train, version and serve the approved purchase-propensity GLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.commands)
app.add_typer(training.commands)
app.add_typer(registry.commands, rich_help_panel=registry.PANEL)
app.add_typer(serving.commands)
app.add_typer(scoring.commands)
app.add_typer(monitoring.commands)
app.add_typer(feedback.commands)
app.add_typer(autoscaler.commands)


def main() -> None:
    app()


__all__ = ["app", "main"]
