"""The model-lifecycle commands of the `propensity` CLI: drift-report, retrain, retrain-scheduler, experiment.

Registered on the main app by service/cli.py (`register(app)`); each command is a thin wrapper over the
modules that do the work, so they stay testable without a shell.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from service.errors import PropensityError
from service.settings import Settings


def _fail(exc: PropensityError, code: int = 1) -> NoReturn:
    typer.echo(f"error: {exc.detail}", err=True)
    raise typer.Exit(code)


def _duration(text: str) -> float:
    from service.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


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
) -> None:
    """Drift of a CSV (--data) or of the live service (--since) vs the model's training reference, as HTML."""
    from service.model.registry import Registry
    from service.monitoring.drift_report import drift_of_csv, drift_of_spool, write_report
    from service.monitoring.drift_stats import ALERT, Thresholds

    if (data is None) == (since is None):
        raise typer.BadParameter("give exactly one of --data PATH or --since DURATION")
    settings = Settings()
    registry = Registry(settings.artifacts_dir, settings.model_name)
    thresholds = Thresholds.from_settings(settings)
    try:
        if data is not None:
            from service.serving.scorer import CompiledModel

            artifact = registry.load(model or settings.model_version or settings.model_alias)
            result = drift_of_csv(
                data, CompiledModel.from_artifact(artifact), thresholds, settings.drift_min_rows
            )
        else:
            directory = spool_dir or settings.drift_spool_dir
            if directory is None:
                raise typer.BadParameter(
                    "--since needs the drift spool: set PROPENSITY_DRIFT_SPOOL_DIR or --spool-dir"
                )
            assert since is not None
            result = drift_of_spool(
                directory, _duration(since), registry, thresholds, settings.drift_min_rows
            )
    except PropensityError as exc:
        _fail(exc)
    write_report(result, out)
    summary = result.summary
    typer.echo(f"{registry.name}/{summary.version}: {summary.rows} rows, overall {summary.status}")
    typer.echo(f"{'feature':<8} {'status':<6} {'PSI':>7} {'JS':>7} {'missing':>8}  why")
    for f in summary.features:
        psi = f"{f.psi:.3f}" if f.psi is not None else "-"
        js = f"{f.js:.3f}" if f.js is not None else "-"
        missing = f"{100 * f.missing_rate:.1f}%" if f.missing_rate is not None else "-"
        typer.echo(f"{f.feature:<8} {f.status:<6} {psi:>7} {js:>7} {missing:>8}  {'; '.join(f.reasons)}")
    typer.echo(f"rows with an unseen level: {100 * summary.unseen_share:.2f}%")
    typer.echo(f"wrote {out}")
    if fail_on_alert and summary.flagged(ALERT):
        raise typer.Exit(3)


def _recipe(name: str):  # type: ignore[no-untyped-def]
    from service.model.training import recipe_named

    try:
        return recipe_named(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def retrain(
    data: Annotated[Path, typer.Option(help="training CSV shaped like exercise_26_train.csv")],
    recipe: Annotated[
        str, typer.Option(help="training recipe (default: the approved notebook's)")
    ] = "notebook",
) -> None:
    """Train a challenger, compare it with production on the same holdout, register it as `staging`, and
    promote it only if it is not worse by more than the margins. Exit 0 promoted, 3 not promoted, 1 failed."""
    from service.lifecycle.retrain import PROMOTED
    from service.lifecycle.retrain import retrain as run
    from service.model.registry import Registry

    settings = Settings()
    _logging(settings)
    registry = Registry(settings.artifacts_dir, settings.model_name)
    try:
        outcome = run(data, registry, settings, _recipe(recipe))
    except PropensityError as exc:
        typer.echo("production unchanged", err=True)
        _fail(exc)
    evaluation = outcome.record["evaluation"]
    champion, challenger = evaluation["champion"], evaluation["challenger"]
    diff = evaluation["challenger_minus_champion"]
    typer.echo(
        f"challenger {registry.name}/{outcome.version} (staging) vs champion {outcome.champion} on "
        f"{champion['rows']} holdout rows:"
    )
    for key in ("auc", "log_loss", "brier", "calibration_error"):
        typer.echo(f"  {key:<18}{champion[key]:>9.4f} -> {challenger[key]:.4f}")
    low, high = diff["auc_ci95"]
    typer.echo(f"  AUC difference {diff['auc']:+.4f} (95% CI [{low:+.4f}, {high:+.4f}])")
    typer.echo(f"  business outcomes that flip: {100 * diff['outcome_flip_share']:.2f}%")
    if outcome.decision == PROMOTED:
        typer.echo(f"PROMOTED: production -> {outcome.version}")
        return
    gate = outcome.record["gate"]
    verdict = "REFUSED by the gate" if gate["refusals"] else "PASSED the gate but HELD for a human"
    typer.echo(f"{verdict}: production stays {outcome.champion}")
    for reason in gate["refusals"] + gate["held"]:
        typer.echo(f"  - {reason}")
    raise typer.Exit(3)


def retrain_scheduler(
    data_dir: Annotated[
        Path | None, typer.Option(help="where new CSVs arrive (default PROPENSITY_RETRAIN_DATA_DIR)")
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="cadence, e.g. 6h or 1d (default PROPENSITY_RETRAIN_EVERY_SECONDS)")
    ] = None,
    once: Annotated[bool, typer.Option(help="run one cycle and exit (for cron)")] = False,
    max_runs: Annotated[int | None, typer.Option(min=1, help="stop after this many cycles")] = None,
    recipe: Annotated[str, typer.Option(help="training recipe")] = "notebook",
) -> None:
    """Retrain on the newest CSV of a directory on a cadence (a file is tried once). SIGTERM stops it."""
    import signal
    import threading

    from service.lifecycle.scheduler import CycleResult, run_scheduler
    from service.model.registry import Registry

    settings = Settings()
    _logging(settings)
    directory = data_dir or settings.retrain_data_dir
    if directory is None:
        raise typer.BadParameter("give --data-dir or set PROPENSITY_RETRAIN_DATA_DIR")
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory")
    seconds = _duration(every) if every else settings.retrain_every_seconds
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the cycle, then exit
    registry = Registry(settings.artifacts_dir, settings.model_name)
    runs = 1 if once else max_runs

    def show(r: CycleResult) -> None:
        typer.echo(
            f"{r.outcome}: {r.data.name if r.data else '-'}"
            + (f" -> {r.version}" if r.version else "")
            + (f" ({r.detail})" if r.detail else "")
        )

    try:
        results = run_scheduler(
            directory,
            seconds,
            registry,
            settings,
            max_runs=runs,
            stop=stop,
            recipe=_recipe(recipe),
            on_result=show,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if once and results and results[-1].outcome == "failed":
        raise typer.Exit(1)


def experiment(
    data: Annotated[Path, typer.Option(help="training CSV shaped like exercise_26_train.csv")],
    out: Annotated[Path, typer.Option(help="directory for study.csv, study.md, study.json")] = Path("study"),
    recipes: Annotated[
        str, typer.Option(help="comma-separated recipes")
    ] = "notebook,cv-l1,median,interactions,all-rows",
    bootstrap: Annotated[int, typer.Option(min=0, help="bootstrap resamples for the intervals")] = 1_000,
) -> None:
    """Train each recipe on the same splits and compare them on the same holdout (nothing is registered)."""
    from service.model.experiment import markdown, run_study, save
    from service.model.schema import notebook_schema
    from service.model.training import read_training_csv

    chosen = [_recipe(name.strip()) for name in recipes.split(",") if name.strip()]
    try:
        frame = read_training_csv(data, notebook_schema())
        study = run_study(frame, chosen, resamples=bootstrap)
    except PropensityError as exc:
        _fail(exc)
    typer.echo(markdown(study))
    for path in save(study, out):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("drift-report")(drift_report)
    app.command("retrain")(retrain)
    app.command("retrain-scheduler")(retrain_scheduler)
    app.command("experiment")(experiment)
