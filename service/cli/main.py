"""The `propensity` command line: data, training, registry, serving."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from service.cli.lifecycle import register as register_lifecycle_commands
from service.errors import PropensityError
from service.settings import Settings

app = typer.Typer(
    help="Propensity service: train, version and serve the approved purchase-propensity GLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="The model registry: versions and aliases.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")


def _fail(exc: PropensityError) -> NoReturn:
    typer.echo(f"error: {exc.detail}", err=True)
    raise typer.Exit(1)


def _registry():  # type: ignore[no-untyped-def]
    from service.model.registry import Registry

    settings = Settings()
    return Registry(settings.artifacts_dir, settings.model_name)


@app.command("make-data")
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


@app.command("import-notebook")
def import_notebook() -> None:
    """Publish the business-approved notebook model; it becomes `production` if none exists."""
    from service.model.notebook_import import import_notebook as run

    registry = _registry()
    try:
        version = run(registry)
    except PropensityError as exc:
        _fail(exc)
    aliases = [a for a, info in registry.aliases().items() if info["version"] == version]
    typer.echo(
        f"imported the approved notebook model as {registry.name}/{version}"
        + (f" ({', '.join(aliases)})" if aliases else "")
    )


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="training CSV shaped like exercise_26_train.csv")],
) -> None:
    """Train with the notebook's exact recipe and register a new version (not promoted)."""
    from service.model.training import train_csv

    registry = _registry()
    try:
        version, result = train_csv(data, registry)
    except PropensityError as exc:
        _fail(exc)
    auc = result.metadata["metrics"]["auc"]
    typer.echo(
        f"registered {registry.name}/{version} in {result.seconds:.1f}s: "
        f"AUC train {auc['train']:.4f} val {auc['val']:.4f} test {auc['test']:.4f}, "
        f"cutoff {result.model.cutoff:.4f}, features {', '.join(result.model.feature_names)}"
    )


@registry_app.command("list")
def registry_list() -> None:
    """Every version, newest last, with its aliases."""
    registry = _registry()
    rows = registry.list()
    if not rows:
        typer.echo(f"{registry.dir}: no versions (run `propensity import-notebook`)")
        return
    typer.echo(f"{'version':<8} {'created_at':<26} {'source':<9} {'auc_test':>8}  aliases")
    for r in rows:
        auc = f"{r.auc_test:.4f}" if r.auc_test is not None else "-"
        typer.echo(f"{r.version:<8} {r.created_at:<26} {r.source:<9} {auc:>8}  {', '.join(r.aliases)}")


@registry_app.command("show")
def registry_show(
    ref: Annotated[str, typer.Argument(help="alias or version")],
    as_json: Annotated[bool, typer.Option("--json", help="print the whole metadata as JSON")] = False,
) -> None:
    """A version's metadata (summary, or everything with --json)."""
    registry = _registry()
    try:
        meta = registry.metadata(ref)
    except PropensityError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(meta, indent=1))
        return
    auc = meta["metrics"]["auc"]
    typer.echo(
        f"{meta['name']}/{meta['version']}  created {meta['created_at']}  source {meta['training']['source']}"
    )
    typer.echo(f"cutoff {meta['cutoff']['value']}  AUC " + ", ".join(f"{k} {v:.4f}" for k, v in auc.items()))
    typer.echo("coefficients:")
    for f in meta["selected_features"]:
        typer.echo(f"  {f:<16}{meta['coefficients'][f]:>12.6f}  (SE {meta['standard_errors'][f]:.6f})")


@registry_app.command("verify")
def registry_verify(ref: Annotated[str, typer.Argument(help="alias or version")]) -> None:
    """Check every file's sha256, load the model and run its golden rows."""
    registry = _registry()
    try:
        loaded = registry.verify(ref)
    except PropensityError as exc:
        _fail(exc)
    typer.echo(f"{registry.name}/{loaded.version}: OK (sha256 verified, golden rows reproduced)")


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="version (or alias) to promote")],
    alias: Annotated[str, typer.Option(help="alias to point at it")] = "production",
) -> None:
    """Point an alias at a version (verified first). Serving replicas follow `production`."""
    registry = _registry()
    try:
        registry.verify(version)
        info = registry.set_alias(alias, version)
    except PropensityError as exc:
        _fail(exc)
    typer.echo(f"{alias} -> {info['version']} (previous: {', '.join(info['history'][:1]) or 'none'})")


@registry_app.command("rollback")
def registry_rollback(alias: Annotated[str, typer.Option(help="alias to roll back")] = "production") -> None:
    """Point an alias back at its previous version."""
    registry = _registry()
    try:
        info = registry.rollback(alias)
    except PropensityError as exc:
        _fail(exc)
    typer.echo(f"{alias} -> {info['version']} (rolled back)")


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="port (default PROPENSITY_PORT or 1313)")] = None,
    workers: Annotated[int | None, typer.Option(help="gunicorn workers (default PROPENSITY_WORKERS)")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default PROPENSITY_HOST)")] = None,
) -> None:
    """Serve the API with gunicorn + uvicorn workers. Imports the approved model on an empty registry."""
    from service.model.notebook_import import ensure_production

    overrides = {k: v for k, v in {"port": port, "workers": workers, "host": host}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    from service.model.registry import Registry

    try:
        if settings.model_version is None:
            version = ensure_production(Registry(settings.artifacts_dir, settings.model_name))
            typer.echo(f"serving {settings.model_name} alias {settings.model_alias} ({version})", err=True)
    except PropensityError as exc:
        _fail(exc)
    env = dict(os.environ)
    env.update({f"PROPENSITY_{k.upper()}": str(v) for k, v in overrides.items()})
    env["PROPENSITY_ARTIFACTS_DIR"] = str(settings.artifacts_dir.resolve())
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:service.api.gunicorn_conf",
        "service.api.app:gunicorn_app()",
    ]
    os.execve(sys.executable, argv, env)  # exec: gunicorn becomes this process and receives SIGTERM directly


@app.command()
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
    from pydantic import ValidationError

    from service.autoscaler.loop import run
    from service.autoscaler.settings import AutoscalerSettings

    try:
        settings = AutoscalerSettings() if dry_run is None else AutoscalerSettings(dry_run=dry_run)
    except ValidationError as exc:
        typer.echo(f"error: invalid PROPENSITY_AUTOSCALER_* settings:\n{exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(settings, once=once))


register_lifecycle_commands(app)  # drift-report, retrain, retrain-scheduler, experiment


def main() -> None:
    app()
