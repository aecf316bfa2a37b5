"""`propensity drift-report`: drift of a CSV or of the live service against the model's training reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.context import load_settings, open_registry
from service.cli.options import ArtifactsDir, duration

if TYPE_CHECKING:
    from service.model.registry import Registry
    from service.monitoring.drift_report import DriftResult
    from service.settings import Settings

PANEL = "Monitoring"
IN_ALERT = 3
commands = typer.Typer()


@commands.command("drift-report", rich_help_panel=PANEL)
def drift_report(
    data: Annotated[Path | None, typer.Option(help="CSV of raw rows to compare with the reference")] = None,
    since: Annotated[
        str | None, typer.Option(help="what the running service scored in the last DURATION (15m, 2h, 1d)")
    ] = None,
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("drift-report.html"),
    model: Annotated[str | None, typer.Option(help="version or alias (default: the followed alias)")] = None,
    spool_dir: Annotated[
        Path | None, typer.Option(help="the servers' drift spool (default PROPENSITY_DRIFT_SPOOL_DIR)")
    ] = None,
    fail_on_alert: Annotated[bool, typer.Option(help="exit 3 when any feature is in alert")] = False,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Drift of a CSV (--data) or of the live service (--since) vs the model's training reference, as HTML."""
    from service.monitoring.drift_report import write_report
    from service.monitoring.drift_stats import ALERT

    if (data is None) == (since is None):
        raise typer.BadParameter("give exactly one of --data PATH or --since DURATION")
    settings = load_settings(artifacts_dir)
    registry = open_registry(settings)
    if data is not None:
        result = _of_csv(data, model, registry, settings)
    else:
        assert since is not None
        result = _of_spool(since, spool_dir, registry, settings)
    write_report(result, out)
    _summary(result, registry.name)
    typer.echo(f"wrote {out}")
    if fail_on_alert and result.summary.flagged(ALERT):
        raise typer.Exit(IN_ALERT)


def _of_csv(data: Path, model: str | None, registry: Registry, settings: Settings) -> DriftResult:
    from service.monitoring.drift_report import drift_of_csv
    from service.monitoring.drift_stats import Thresholds
    from service.serving.scorer import CompiledModel

    artifact = registry.load(model or settings.model_version or settings.model_alias)
    scorer = CompiledModel.from_artifact(artifact)
    return drift_of_csv(data, scorer, Thresholds.from_settings(settings), settings.drift_min_rows)


def _of_spool(since: str, spool_dir: Path | None, registry: Registry, settings: Settings) -> DriftResult:
    from service.monitoring.drift_report import drift_of_spool
    from service.monitoring.drift_stats import Thresholds

    directory = spool_dir or settings.drift_spool_dir
    if directory is None:
        raise typer.BadParameter(
            "--since needs the drift spool: set PROPENSITY_DRIFT_SPOOL_DIR or --spool-dir"
        )
    thresholds = Thresholds.from_settings(settings)
    return drift_of_spool(directory, duration(since), registry, thresholds, settings.drift_min_rows)


def _summary(result: DriftResult, model_name: str) -> None:
    summary = result.summary
    typer.echo(f"{model_name}/{summary.version}: {summary.rows} rows, overall {summary.status}")
    typer.echo(f"{'feature':<8} {'status':<6} {'PSI':>7} {'JS':>7} {'missing':>8}  why")
    for f in summary.features:
        psi = f"{f.psi:.3f}" if f.psi is not None else "-"
        js = f"{f.js:.3f}" if f.js is not None else "-"
        missing = f"{100 * f.missing_rate:.1f}%" if f.missing_rate is not None else "-"
        typer.echo(f"{f.feature:<8} {f.status:<6} {psi:>7} {js:>7} {missing:>8}  {'; '.join(f.reasons)}")
    typer.echo(f"rows with an unseen level: {100 * summary.unseen_share:.2f}%")
