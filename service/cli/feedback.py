"""`propensity feedback FILE`: a CSV of outcomes into the prediction log, 10,000 labels at a time."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.context import load_settings
from service.cli.options import ArtifactsDir

PANEL = "Monitoring"
CHUNK = 10_000
commands = typer.Typer()
INTEGER_COLUMNS = ("row", "label")


@commands.command("feedback", rich_help_panel=PANEL)
def feedback(
    path: Annotated[Path, typer.Argument(help="CSV: request_id,row,label[,observed_at] or <id field>,label")],
    url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the prediction log (default PROPENSITY_PREDICTION_LOG_URL)"),
    ] = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Labels for logged predictions, matched as POST /feedback matches them; a summary at the end. A bad
    line stops the file before its chunk is stored, naming the line, field and reason (the chunks before
    it are stored: run the file again once it is fixed, labels already stored count as duplicates)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from service.errors import InputError
    from service.monitoring.feedback import label_items
    from service.monitoring.prediction_store import FeedbackCounts, PredictionStore

    settings = load_settings(artifacts_dir, prediction_log_url=url)
    typer.echo(f"prediction log: {_shown(settings.prediction_log_database)}", err=True)
    lines = _count_lines(path)
    store = PredictionStore.open(settings.prediction_log_database)
    total = FeedbackCounts()
    try:
        store.migrate()
        columns = (TextColumn("labels"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False) as progress, path.open(newline="") as fh:
            task = progress.add_task("labels", total=lines)
            for first, chunk in _chunks(csv.DictReader(fh)):
                try:
                    items = label_items(chunk, settings.passthrough_fields, first=first + 2)
                except InputError as error:
                    raise typer.BadParameter(_where(error), param_hint="FILE") from None
                counts = store.apply_labels(items)
                for name in ("matched", "unmatched", "duplicate", "conflicting"):
                    setattr(total, name, getattr(total, name) + getattr(counts, name))
                progress.advance(task, len(chunk))
    finally:
        store.close()
    typer.echo(
        f"labels: {total.matched} matched, {total.unmatched} unmatched (kept to match later), "
        f"{total.duplicate} duplicate, {total.conflicting} conflicting"
    )


def _shown(url: str) -> str:
    """The URL without its password (a URL may carry one)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _where(error: Any) -> str:
    first = error.errors[0]
    return f"line {first.row}, field {first.field}: {first.reason}" + (
        f" (and {error.extra.get('error_count', 1) - 1} more problems)"
        if error.extra.get("error_count", 1) > 1
        else ""
    )


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def _chunks(reader: csv.DictReader[str]) -> Any:
    chunk: list[dict[str, Any]] = []
    first = 0
    for i, record in enumerate(reader):
        chunk.append(_typed(record))
        if len(chunk) == CHUNK:
            yield first, chunk
            chunk, first = [], i + 1
    if chunk:
        yield first, chunk


def _typed(record: dict[str, str]) -> dict[str, Any]:
    """A CSV line as the JSON a client would send: empty cells absent, row and label as integers."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key is None or value is None or value == "":
            continue
        out[key] = int(value) if key in INTEGER_COLUMNS and value.lstrip("-").isdigit() else value
    return out
