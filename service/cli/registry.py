"""`propensity registry ...`: the model registry's versions and aliases."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.cli.context import load_settings, open_registry
from service.cli.options import ArtifactsDir

PANEL = "Registry"
commands = typer.Typer(
    name="registry", help="The model registry: versions and aliases.", no_args_is_help=True
)


@commands.command("list")
def registry_list(artifacts_dir: ArtifactsDir = None) -> None:
    """Every version, newest last, with its aliases."""
    registry = open_registry(load_settings(artifacts_dir))
    rows = registry.list()
    if not rows:
        typer.echo(f"{registry.dir}: no versions (run `propensity import-notebook`)")
        return
    typer.echo(f"{'version':<8} {'created_at':<26} {'source':<9} {'auc_test':>8}  aliases")
    for r in rows:
        auc = f"{r.auc_test:.4f}" if r.auc_test is not None else "-"
        typer.echo(f"{r.version:<8} {r.created_at:<26} {r.source:<9} {auc:>8}  {', '.join(r.aliases)}")


@commands.command("show")
def registry_show(
    ref: Annotated[str, typer.Argument(help="alias or version")],
    as_json: Annotated[bool, typer.Option("--json", help="print the whole metadata as JSON")] = False,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """A version's metadata (summary, or everything with --json)."""
    meta = open_registry(load_settings(artifacts_dir)).metadata(ref)
    if as_json:
        typer.echo(json.dumps(meta, indent=1))
        return
    _summary(meta)


def _summary(meta: dict[str, Any]) -> None:
    auc = meta["metrics"]["auc"]
    typer.echo(
        f"{meta['name']}/{meta['version']}  created {meta['created_at']}  source {meta['training']['source']}"
    )
    typer.echo(f"cutoff {meta['cutoff']['value']}  AUC " + ", ".join(f"{k} {v:.4f}" for k, v in auc.items()))
    typer.echo("coefficients:")
    for f in meta["selected_features"]:
        typer.echo(f"  {f:<16}{meta['coefficients'][f]:>12.6f}  (SE {meta['standard_errors'][f]:.6f})")


@commands.command("verify")
def registry_verify(
    ref: Annotated[str, typer.Argument(help="alias or version")], artifacts_dir: ArtifactsDir = None
) -> None:
    """Check every file's sha256, load the model and run its golden rows."""
    registry = open_registry(load_settings(artifacts_dir))
    loaded = registry.verify(ref)
    typer.echo(f"{registry.name}/{loaded.version}: OK (sha256 verified, golden rows reproduced)")


@commands.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="version (or alias) to promote")],
    alias: Annotated[str, typer.Option(help="alias to point at it")] = "production",
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Point an alias at a version (verified first). Serving replicas follow `production`."""
    registry = open_registry(load_settings(artifacts_dir))
    registry.verify(version)
    info = registry.set_alias(alias, version)
    typer.echo(f"{alias} -> {info['version']} (previous: {', '.join(info['history'][:1]) or 'none'})")


@commands.command("rollback")
def registry_rollback(
    alias: Annotated[str, typer.Option(help="alias to roll back")] = "production",
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Point an alias back at its previous version."""
    info = open_registry(load_settings(artifacts_dir)).rollback(alias)
    typer.echo(f"{alias} -> {info['version']} (rolled back)")
