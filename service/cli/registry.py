"""`propensity registry ...`: the model registry's versions and aliases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli.context import load_settings, open_registry
from service.cli.options import ArtifactsDir

if TYPE_CHECKING:
    from service.model.registries import ModelRegistry

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
        typer.echo(f"{registry.location}: no versions (run `propensity import-notebook`)")
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
    """Check every file's sha256 (and the signature, with a verify key), read scorer.json and run the
    golden rows through it, as a serving worker would; nothing is unpickled."""
    registry = open_registry(load_settings(artifacts_dir))
    version, signed_by = _serving_check(registry, ref)
    signed = f", signed by key {signed_by}" if signed_by else ""
    typer.echo(f"{registry.name}/{version}: OK (sha256 verified{signed}, golden rows reproduced)")


def _serving_check(registry: ModelRegistry, ref: str) -> tuple[str, str | None]:
    from service.serving.scorer import CompiledModel

    artifact = registry.load_serving(ref)
    CompiledModel.from_artifact(artifact).self_check(artifact.metadata.get("golden_rows", {}))
    return artifact.version, artifact.signed_by


@commands.command("upgrade")
def registry_upgrade(
    ref: Annotated[str, typer.Argument(help="alias or version")], artifacts_dir: ArtifactsDir = None
) -> None:
    """Add scorer.json (the serving artifact) to a version written before it existed. This unpickles the
    version's model.joblib: run it only on versions you trust."""
    registry = open_registry(load_settings(artifacts_dir))
    changed = registry.upgrade(ref)
    version, _ = _serving_check(registry, ref)
    typer.echo(
        f"{registry.name}/{version}: " + ("scorer.json added" if changed else "already has scorer.json")
    )


@commands.command("keygen")
def registry_keygen(
    directory: Annotated[Path, typer.Argument(help="where to write signing-key.pem and verify-key.pem")],
) -> None:
    """A new Ed25519 key pair: the private key signs versions (PROPENSITY_SIGNING_KEY_FILE, where models
    are published), the public one is what replicas verify with (PROPENSITY_VERIFY_KEY_FILE)."""
    from service.model.signing import generate_keys

    private, public = generate_keys(directory)
    typer.echo(f"private key {private} (mode 0600)\npublic key  {public}")


@commands.command("sign")
def registry_sign(
    ref: Annotated[str, typer.Argument(help="alias or version")], artifacts_dir: ArtifactsDir = None
) -> None:
    """Sign a version (its files verified first) with PROPENSITY_SIGNING_KEY_FILE."""
    registry = open_registry(load_settings(artifacts_dir))
    path = registry.sign(ref)
    typer.echo(f"{registry.name}/{registry.resolve(ref)}: signed ({path})")


@commands.command("export")
def registry_export(
    target: Annotated[str, typer.Argument(help="an MLflow tracking URI (http://host:5000) or a directory")],
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Copy every version (files byte for byte, under the same names) and alias of this registry into
    another: a directory registry into MLflow, or the other way round."""
    from service.model.registries import open_registry as opened

    settings = load_settings(artifacts_dir)
    source, dest = open_registry(settings), opened(settings, target)
    _copied(source, dest)


@commands.command("import")
def registry_import(
    source: Annotated[str, typer.Argument(help="an MLflow tracking URI (http://host:5000) or a directory")],
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Copy every version and alias of another registry (MLflow, or a directory) into this one."""
    from service.model.registries import open_registry as opened

    settings = load_settings(artifacts_dir)
    _copied(opened(settings, source), open_registry(settings))


def _copied(source: ModelRegistry, dest: ModelRegistry) -> None:
    from service.model.registries import copy_versions

    before = set(dest.versions())
    done = [v for v in copy_versions(source, dest) if v not in before]
    aliases = ", ".join(f"{a} -> {i['version']}" for a, i in sorted(dest.aliases().items()))
    typer.echo(f"{source.location} -> {dest.location}: copied {', '.join(done) or 'none'}; {aliases}")


@commands.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="version (or alias) to promote")],
    alias: Annotated[str, typer.Option(help="alias to point at it")] = "production",
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Point an alias at a version (verified first). Serving replicas follow `production`."""
    registry = open_registry(load_settings(artifacts_dir))
    _serving_check(registry, version)  # what a replica will load: refused here rather than on every replica
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
