"""`propensity drift-report`: drift of a CSV or of the live service against the model's training reference.
`propensity performance-report`: realized and estimated performance from the prediction log, as HTML.
`propensity shadow-performance`: the shadow-scored challenger beside the served model on labelled rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from service.cli.context import load_settings, open_registry
from service.cli.options import ArtifactsDir, duration

if TYPE_CHECKING:
    from service.model.registries import ModelRegistry
    from service.monitoring.drift_report import DriftResult
    from service.monitoring.performance import PredictionFrame
    from service.monitoring.prediction_store import PredictionStore
    from service.settings import Settings

T = TypeVar("T")
PANEL = "Monitoring"
IN_ALERT = 3
COHORT_PERIODS = ("day", "hour")
commands = typer.Typer()
# the prediction log's window and URL, as every command reading the log takes them
Since = Annotated[
    str, typer.Option(help="rows scored since DURATION ago (15m, 2h, 30d) or an ISO date (UTC)")
]
Until = Annotated[str | None, typer.Option(help="... and before DURATION ago or an ISO date (default: now)")]
LogUrl = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy URL of the prediction log (default PROPENSITY_PREDICTION_LOG_URL)"),
]


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


def _of_csv(data: Path, model: str | None, registry: ModelRegistry, settings: Settings) -> DriftResult:
    from service.monitoring.drift_report import drift_of_csv
    from service.monitoring.drift_stats import Thresholds
    from service.serving.scorer import CompiledModel

    artifact = registry.load(model or settings.model_version or settings.model_alias)
    scorer = CompiledModel.from_artifact(artifact)
    return drift_of_csv(data, scorer, Thresholds.from_settings(settings), settings.drift_min_rows)


def _of_spool(since: str, spool_dir: Path | None, registry: ModelRegistry, settings: Settings) -> DriftResult:
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


@commands.command("performance-report", rich_help_panel=PANEL)
def performance_report(
    since: Since = "30d",
    until: Until = None,
    by: Annotated[str, typer.Option(help="cohorts by prediction day or hour (UTC): day|hour")] = "day",
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("performance-report.html"),
    url: LogUrl = None,
    model: Annotated[
        str | None, typer.Option(help="version or alias whose cutoff is used (default: the followed alias)")
    ] = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Realized and estimated (CBPE) performance of the logged predictions by cohort, as one HTML file."""
    from service.monitoring.performance import evaluate
    from service.monitoring.performance_report import write_report

    if by not in COHORT_PERIODS:
        raise typer.BadParameter(f"--by is day or hour, not {by!r}")
    period: Literal["day", "hour"] = "day" if by == "day" else "hour"
    now = time.time()
    start = instant(since, now, "--since")
    end = instant(until, now, "--until") if until is not None else None
    if end is not None and end <= start:
        raise typer.BadParameter("--until must be later than --since")
    settings = load_settings(artifacts_dir, prediction_log_url=url)
    registry = open_registry(settings)
    ref = model or settings.model_version or settings.model_alias
    version = registry.resolve(ref)
    cutoff = float(registry.metadata(version)["cutoff"]["value"])
    database = settings.prediction_log_database
    frame = _logged(database, start, end)
    report = evaluate(frame, cutoff=cutoff, by=period, min_labels=settings.performance_min_labels).to_dict()
    notes = [
        f"Cutoff of {registry.name}/{version} ({ref}) from the registry.",
        f"Asked for predictions scored from {_iso(start)} to {_iso(end) if end is not None else 'now'}.",
        f"Prediction log: {_shown_url(database)}.",
    ]
    write_report(report, out, title=f"Performance of {registry.name}", notes=notes)
    typer.echo(f"wrote {out}")
    typer.echo(performance_summary(report))


def instant(text: str, now: float, option: str) -> float:
    """Epoch seconds of DURATION ago, or of an ISO-8601 date/time (UTC unless it names its zone)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - duration(text)
        except typer.BadParameter as exc:
            raise typer.BadParameter(f"{option}: {exc} or an ISO date such as 2026-12-01") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _logged(database: str, since: float, until: float | None) -> PredictionFrame:
    """The logged rows of the period; a log that is not there or not reachable is one line, exit 1."""
    return _read_log(database, lambda store: store.frame(since, until))


def _read_log(database: str, read: Callable[[PredictionStore], T]) -> T:
    """`read` of the prediction log at `database`; a log that is not there or not reachable is one line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from service.errors import PredictionLogUnavailable
    from service.monitoring.prediction_store import PredictionStore

    parsed = make_url(database)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        raise PredictionLogUnavailable(
            f"no prediction log at {parsed.database} (is PROPENSITY_PREDICTION_LOG_URL set, and has the "
            "service scored anything with the log on?)"
        )
    store = PredictionStore.open(database)
    try:
        return read(store)
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0][:200]
        raise PredictionLogUnavailable(f"prediction log {_shown_url(database)}: {first}") from None
    finally:
        store.close()


def _migrated(store: PredictionStore) -> PredictionStore:
    """The store at the newest schema, as a service of this version would leave it (a log written by an
    older one has no shadow_predictions table yet)."""
    store.migrate()
    return store


@commands.command("shadow-performance", rich_help_panel=PANEL)
def shadow_performance(
    since: Since = "30d",
    until: Until = None,
    version: Annotated[str | None, typer.Option(help="only this challenger version")] = None,
    url: LogUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the GET /performance/shadow JSON")] = False,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """The shadow-scored challenger beside the served model on the same labelled live rows."""
    import orjson

    from service.monitoring.shadow_performance import describe, judge

    now = time.time()
    start = instant(since, now, "--since")
    end = instant(until, now, "--until") if until is not None else None
    settings = load_settings(artifacts_dir, prediction_log_url=url)
    database = settings.prediction_log_database
    frame = _read_log(database, lambda store: _migrated(store).shadow_frame(start, end, version))
    pairs = judge(frame, min_labels=settings.performance_min_labels)
    if as_json:
        typer.echo(orjson.dumps({"since": start, "until": end or now, "pairs": pairs}).decode())
        return
    for line in describe(pairs):
        typer.echo(line)


def performance_summary(report: dict[str, Any]) -> str:
    """One line: predictions, labels, and per version its realized vs estimated AUC and any alarm."""
    from service.monitoring.performance_report import group_by_version, significant_gaps

    summaries = [(g.version, g.summary) for g in group_by_version(report) if g.summary is not None]
    predictions = sum(int(c.get("predictions") or 0) for _, c in summaries)
    labelled = sum(int(c.get("labelled") or 0) for _, c in summaries)
    share = f" ({100 * labelled / predictions:.1f}%)" if predictions else ""
    parts = [f"{predictions} predictions, {labelled} labelled{share}, cutoff {report.get('cutoff')}"]
    for version, c in summaries:
        realized = _auc((c.get("realized") or {}).get("auc"))
        estimated = _auc((c.get("estimated") or {}).get("auc"))
        alarms = significant_gaps(c)
        parts.append(
            f"{version}: AUC realized {realized} vs estimated {estimated}"
            + (f", gap in {'/'.join(alarms)}" if alarms else "")
            + ("" if c.get("enough_labels") else ", too few labels to judge")
        )
    return "; ".join(parts)


def _auc(interval: dict[str, Any] | None) -> str:
    value = (interval or {}).get("value")
    return "-" if value is None else f"{float(value):.3f}"
