"""Training commands: train a version, retrain behind the gate (once or on a cadence), compare recipes."""

from __future__ import annotations

import signal
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli.context import configure_logging, load_settings, open_registry
from service.cli.options import ArtifactsDir, duration, recipe
from service.errors import PropensityError

if TYPE_CHECKING:
    from service.lifecycle.challengers import ComparisonOutcome
    from service.lifecycle.retrain import RetrainOutcome
    from service.lifecycle.scheduler import CycleResult
    from service.model.registries import ModelRegistry
    from service.model.training import Recipe
    from service.settings import Settings

PANEL = "Training"
NOT_PROMOTED = 3
commands = typer.Typer()

TrainingCsv = Annotated[Path, typer.Option(help="training CSV shaped like exercise_26_train.csv")]


@commands.command("train", rich_help_panel=PANEL)
def train(data: TrainingCsv, artifacts_dir: ArtifactsDir = None) -> None:
    """Train with the notebook's exact recipe and register a new version (not promoted)."""
    from service.model.training import train_csv

    registry = open_registry(load_settings(artifacts_dir))
    version, result = train_csv(data, registry)
    if "reused" in result.extra:
        typer.echo(f"not registered: {result.extra['reused']} ({registry.name}/{version})")
        return
    auc = result.metadata["metrics"]["auc"]
    typer.echo(
        f"registered {registry.name}/{version} in {result.seconds:.1f}s: "
        f"AUC train {auc['train']:.4f} val {auc['val']:.4f} test {auc['test']:.4f}, "
        f"cutoff {result.model.cutoff:.4f}, features {', '.join(result.model.feature_names)}"
    )


class CutoffPolicy(StrEnum):
    keep = "keep"
    recompute = "recompute"


@commands.command("retrain", rich_help_panel=PANEL)
def retrain(
    data: Annotated[
        Path | None, typer.Option(help="training CSV shaped like exercise_26_train.csv (or --from-log)")
    ] = None,
    from_log: Annotated[
        bool,
        typer.Option(
            "--from-log",
            help="train on the prediction log's labelled rows instead: a full refit and the recalibrated "
            "champion, side by side",
        ),
    ] = False,
    since: Annotated[
        str, typer.Option(help="with --from-log: rows scored within this long, e.g. 90d")
    ] = "90d",
    cutoff: Annotated[
        CutoffPolicy,
        typer.Option(
            help="with --from-log: the recalibrated champion keeps the approved cutoff or recomputes it"
        ),
    ] = CutoffPolicy.keep,
    recipe_name: Annotated[
        str, typer.Option("--recipe", help="training recipe (default: the approved notebook's)")
    ] = "notebook",
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Train a challenger, compare it with production on the same holdout, register it as `staging`, and
    promote it only if it is not worse by more than the margins. Exit 0 promoted, 3 not promoted, 1 failed."""
    from service.lifecycle.retrain import PROMOTED
    from service.lifecycle.retrain import retrain as run

    if from_log == (data is not None):
        raise typer.BadParameter("give either --data CSV or --from-log")
    settings = load_settings(artifacts_dir)
    configure_logging(settings)
    registry = open_registry(settings)
    if data is None:
        _retrain_from_log(registry, settings, duration(since), cutoff.value, recipe(recipe_name))
        return
    try:
        outcome = run(data, registry, settings, recipe(recipe_name))
    except PropensityError:
        typer.echo("production unchanged", err=True)
        raise
    _comparison(outcome, registry.name)
    if outcome.decision == PROMOTED:
        kept = outcome.record["promoted"]["cutoff"]["served"]
        derived = f" ({outcome.version} with the kept cutoff {kept:.4g})"
        if outcome.served == outcome.version:
            derived = ""
        typer.echo(f"PROMOTED: production -> {outcome.served}{derived}")
        return
    gate = outcome.record["gate"]
    verdict = "REFUSED by the gate" if gate["refusals"] else "PASSED the gate but HELD for a human"
    typer.echo(f"{verdict}: production stays {outcome.champion}")
    for reason in gate["refusals"] + gate["held"]:
        typer.echo(f"  - {reason}")
    raise typer.Exit(NOT_PROMOTED)


def _comparison(outcome: RetrainOutcome, model_name: str) -> None:
    evaluation = outcome.record["evaluation"]
    champion, challenger = evaluation["champion"], evaluation["challenger"]
    diff = evaluation["challenger_minus_champion"]
    typer.echo(
        f"challenger {model_name}/{outcome.version} (staging) vs champion {outcome.champion} on "
        f"{champion['rows']} holdout rows:"
    )
    for key in ("auc", "log_loss", "brier", "calibration_error"):
        typer.echo(f"  {key:<18}{champion[key]:>9.4f} -> {challenger[key]:.4f}")
    low, high = diff["auc_ci95"]
    typer.echo(f"  AUC difference {diff['auc']:+.4f} (95% CI [{low:+.4f}, {high:+.4f}])")
    typer.echo(f"  business outcomes that flip: {100 * diff['outcome_flip_share']:.2f}%")


def _retrain_from_log(
    registry: ModelRegistry, settings: Settings, seconds: float, cutoff: str, chosen: Recipe
) -> None:
    from service.lifecycle.challengers import retrain_from_log

    try:
        outcome = retrain_from_log(registry, settings, time.time() - seconds, recipe=chosen, cutoff=cutoff)
    except PropensityError:
        typer.echo("production unchanged", err=True)
        raise
    _side_by_side(outcome, registry.name)
    promoted = outcome.promoted
    if promoted is not None:
        typer.echo(f"PROMOTED: production -> {promoted.version} (the {promoted.kind} challenger)")
        return
    typer.echo(f"not promoted: production stays {outcome.champion}")
    raise typer.Exit(NOT_PROMOTED)


ROWS = (
    ("auc", "AUC", "{:.4f}"),
    ("log_loss", "log loss", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("calibration_error", "calibration error", "{:.4f}"),
    ("calibration_slope", "calibration slope", "{:.3f}"),
    ("calibration_intercept", "calibration intercept", "{:+.3f}"),
    ("outcome_positive_rate", "positive outcomes", "{:.2%}"),
)


def _side_by_side(outcome: ComparisonOutcome, model_name: str) -> None:
    """The champion and both challengers on the same holdout, one column each, then each one's verdict."""
    challengers = outcome.challengers
    typer.echo(
        f"trained on {len(outcome.trained_on)} logged column(s): {', '.join(outcome.trained_on)}"
        + (
            f"; not in the log (imputed by the champion, left out of the refit): {len(outcome.absent)}"
            if outcome.absent
            else ""
        )
    )
    typer.echo(f"holdout: {outcome.holdout_rows} labelled rows (the val + test split of the logged rows)")
    head = f"  {'':<24}{'champion ' + outcome.champion:>16}" + "".join(f"{c.kind:>16}" for c in challengers)
    typer.echo(head)
    evaluations = [outcome.champion_evaluation] + [c.record["evaluation"]["challenger"] for c in challengers]
    for key, label, fmt in ROWS:
        cells = ["-" if e.get(key) is None else fmt.format(e[key]) for e in evaluations]
        typer.echo(f"  {label:<24}" + "".join(f"{cell:>16}" for cell in cells))
    flips = [
        f"{c.record['evaluation']['challenger_minus_champion']['outcome_flip_share']:.2%}"
        for c in challengers
    ]
    typer.echo(f"  {'outcomes that flip':<24}{'':>16}" + "".join(f"{f:>16}" for f in flips))
    for c in challengers:
        cut = c.record["cutoff"]
        where = f"registered {model_name}/{c.version}" if c.version else "not registered"
        typer.echo(f"{c.kind}: {c.decision.upper()} ({where}); cutoff {cut['value']:.4f}, {cut['rule']}")
        for reason in c.record["gate"]["refusals"] + c.record["gate"]["held"]:
            typer.echo(f"  - {reason}")


@commands.command("retrain-scheduler", rich_help_panel=PANEL)
def retrain_scheduler(
    data_dir: Annotated[
        Path | None, typer.Option(help="where new CSVs arrive (default PROPENSITY_RETRAIN_DATA_DIR)")
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="cadence, e.g. 6h or 1d (default PROPENSITY_RETRAIN_EVERY_SECONDS)")
    ] = None,
    once: Annotated[bool, typer.Option(help="run one cycle and exit (for cron)")] = False,
    max_runs: Annotated[int | None, typer.Option(min=1, help="stop after this many cycles")] = None,
    recipe_name: Annotated[str, typer.Option("--recipe", help="training recipe")] = "notebook",
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Retrain on the newest CSV of a directory on a cadence (a file is tried once). SIGTERM stops it."""
    from service.lifecycle.scheduler import run_scheduler

    settings = load_settings(artifacts_dir)
    configure_logging(settings)
    directory = data_dir or settings.retrain_data_dir
    if directory is None:
        raise typer.BadParameter("give --data-dir or set PROPENSITY_RETRAIN_DATA_DIR")
    if not directory.is_dir():
        raise typer.BadParameter(f"{directory} is not a directory")
    seconds = duration(every) if every else settings.retrain_every_seconds
    chosen = recipe(recipe_name)
    registry = open_registry(settings)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the cycle, then exit
    try:
        results = run_scheduler(
            directory,
            seconds,
            registry,
            settings,
            max_runs=1 if once else max_runs,
            stop=stop,
            recipe=chosen,
            on_result=_show_cycle,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if once and results and results[-1].outcome == "failed":
        raise typer.Exit(1)


def _show_cycle(r: CycleResult) -> None:
    typer.echo(
        f"{r.outcome}: {r.data.name if r.data else '-'}"
        + (f" -> {r.version}" if r.version else "")
        + (f" ({r.detail})" if r.detail else "")
    )


@commands.command("experiment", rich_help_panel=PANEL)
def experiment(
    data: TrainingCsv,
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

    chosen = [recipe(name.strip()) for name in recipes.split(",") if name.strip()]
    frame = read_training_csv(data, notebook_schema())
    study = run_study(frame, chosen, resamples=bootstrap)
    typer.echo(markdown(study))
    for path in save(study, out):
        typer.echo(f"wrote {path}")
