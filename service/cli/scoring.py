"""`propensity score INPUT OUTPUT`: a whole file scored (CSV, JSON Lines, Parquet; CSV and JSON Lines gzipped
too), on every core of this machine, on a Dask cluster (--dask), or through a running service (--against).

Exit codes: 0 every row scored; 3 the output is written but some rows were rejected (in the rejects file);
1 nothing was written (an error says why)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli.context import load_settings, open_registry
from service.cli.options import ArtifactsDir

if TYPE_CHECKING:
    from service.files.formats import Format
    from service.files.run import ScoreRequest, Summary
    from service.serving.scorer import CompiledModel
    from service.settings import Settings

PANEL = "Scoring"
SOME_REJECTED = 3
commands = typer.Typer()


@commands.command("score", rich_help_panel=PANEL)
def score(
    input: Annotated[
        Path, typer.Argument(help="CSV, JSON Lines or Parquet file (.csv, .csv.gz, .jsonl, .parquet)")
    ],
    output: Annotated[
        Path, typer.Argument(help="file to write, its format by its name (with --dask: a directory of parts)")
    ],
    model: Annotated[str | None, typer.Option(help="version or alias (default: the followed alias)")] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="rows that cannot be scored (default: <output name>.rejects.csv)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="scoring processes (default: every core)")
    ] = None,
    reasons: Annotated[int, typer.Option(min=0, help="top K reason codes per row (0: none)")] = 0,
    id_column: Annotated[
        list[str] | None,
        typer.Option(
            "--id-column", help="pass-through id column, repeatable (default PROPENSITY_PASSTHROUGH_FIELDS)"
        ),
    ] = None,
    input_format: Annotated[str | None, typer.Option(help="csv, jsonl or parquet (default: by name)")] = None,
    output_format: Annotated[
        str | None, typer.Option(help="csv, jsonl or parquet (default: by name)")
    ] = None,
    chunk_mb: Annotated[float, typer.Option(min=0.01, help="MiB of input per chunk")] = 4.0,
    dask: Annotated[
        str | None, typer.Option(help="score on a Dask cluster: its scheduler (tcp://host:8786) or local:N")
    ] = None,
    against: Annotated[
        str | None, typer.Option(help="score through a running service at this URL (http://host:1313)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="--against: calls in flight")] = 4,
    retries: Annotated[int, typer.Option(min=0, help="--against: retries of a call that failed")] = 5,
    progress: Annotated[
        bool | None, typer.Option(help="progress bar (default: when stderr is a terminal)")
    ] = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Score a whole file: the fields /predict answers per row, in the input's order, with rejects apart."""
    from service.files.formats import kind_of
    from service.files.run import ScoreRequest
    from service.files.sinks import companion

    overrides: dict[str, Any] = {"passthrough_fields": tuple(id_column)} if id_column else {}
    settings = load_settings(artifacts_dir, **overrides)
    if dask and against:
        raise typer.BadParameter("give --dask or --against, not both")
    if not (input.is_file() or (dask and input.is_dir())):
        raise typer.BadParameter(f"{input} is not a file", param_hint="INPUT")
    in_kind = kind_of(input if input.is_file() else input / "x.parquet", _format(input_format))
    if dask:  # a directory of part files, one per piece, each written by the worker that scored it
        out_kind = kind_of(Path(f"part.{output_format or 'parquet'}"))
        rejects, manifest = rejects or output / "rejects.csv", output / "_manifest.json"
    else:
        out_kind = kind_of(output, _format(output_format))
        rejects, manifest = rejects or companion(output, "rejects.csv"), companion(output, "manifest.json")
    request = ScoreRequest(
        input=input,
        output=output,
        input_kind=in_kind,
        output_kind=out_kind,
        rejects=rejects,
        manifest=manifest,
        workers=workers or os.cpu_count() or 1,
        chunk_bytes=int(chunk_mb * 2**20),
        reasons=reasons,
        reject_unseen=settings.unseen_category_policy.value == "reject",
        passthrough_max_chars=settings.passthrough_max_chars,
        passthrough=settings.passthrough_fields,
    )
    shown = progress if progress is not None else sys.stderr.isatty()
    if against:
        summary = _against(against, request, concurrency, retries, shown)
    else:
        compiled = _model(settings, model)
        summary = _dask(dask, compiled, request) if dask else _local(compiled, request, shown)
    _report(summary, request)
    if summary.rejected_rows:
        raise typer.Exit(SOME_REJECTED)


def _format(name: str | None) -> Format | None:
    from service.files.formats import Format

    try:
        return Format(name) if name else None
    except ValueError:
        raise typer.BadParameter(f"{name!r}: say csv, jsonl or parquet") from None


def _model(settings: Settings, ref: str | None) -> CompiledModel:
    """The model to score with: verified, read from scorer.json, compiled and checked on its golden rows,
    as a replica loads it (the approved model is imported into an empty registry, as `serve` does)."""
    from service.serving.scorer import CompiledModel

    registry = open_registry(settings)
    if ref is None and settings.model_version is None and "production" not in registry.aliases():
        # the training stack, imported only to rebuild the approved model in an empty registry
        from service.model.notebook_import import ensure_production

        ensure_production(registry)
    artifact = registry.load_serving(ref or settings.model_version or settings.model_alias)
    compiled = CompiledModel.from_artifact(artifact, passthrough=settings.passthrough_fields)
    compiled.self_check(artifact.metadata.get("golden_rows", {}))
    typer.echo(f"model: {compiled.name} {compiled.version}", err=True)
    return compiled


def _local(compiled: CompiledModel, request: ScoreRequest, shown: bool) -> Summary:
    from service.files.run import score_file

    with _progress_bar(shown) as bar:
        return score_file(compiled, request, bar)


def _dask(address: str, compiled: CompiledModel, request: ScoreRequest) -> Summary:
    from service.files.distributed import score_on_cluster

    return score_on_cluster(address, compiled, request)


def _against(url: str, request: ScoreRequest, concurrency: int, retries: int, shown: bool) -> Summary:
    from service.files.remote import score_via_service

    with _progress_bar(shown) as bar:
        return score_via_service(url, request, concurrency=concurrency, retries=retries, progress=bar)


def _progress_bar(shown: bool) -> Any:
    from service.cli.progress import RichProgress, no_progress

    return RichProgress() if shown else no_progress()


def _report(summary: Summary, request: ScoreRequest) -> None:
    echo = typer.echo
    echo(
        f"scored {summary.scored:,} of {summary.rows:,} rows in {summary.seconds:.1f} s "
        f"({summary.rows_per_second:,.0f} rows/s) -> {request.output}"
    )
    for name, value in summary.notes.items():
        echo(f"note: {name}: {value}")
    if summary.unseen:
        listed = ", ".join(f"{column} {count:,}" for column, count in sorted(summary.unseen.items()))
        echo(f"note: categories the model has not seen, scored as missing: {listed}")
    if summary.rejected_rows:
        echo(
            f"rejected {summary.rejected_rows:,} rows ({summary.problems:,} problems) -> {request.rejects}",
            err=True,
        )
    echo(f"manifest: {request.manifest}")
