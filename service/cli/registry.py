"""`propensity registry ...`: the model registry's versions and aliases."""

from __future__ import annotations

import json
from enum import StrEnum
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
    typer.echo(f"{'version':<8} {'created_at':<26} {'source':<9} {'auc_test':>8}  {'holdout':<10} aliases")
    for r in rows:
        auc = f"{r.auc_test:.4f}" if r.auc_test is not None else "-"
        held = r.data_sha256[:8] or r.source
        typer.echo(
            f"{r.version:<8} {r.created_at:<26} {r.source:<9} {auc:>8}  {held:<10} {', '.join(r.aliases)}"
        )
    if len({r.data_sha256[:8] or r.source for r in rows}) > 1:
        typer.echo(
            "auc_test is each version's own test split (holdout: its data): compare across holdouts with diff"
        )


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


Reason = Annotated[str | None, typer.Option(help="why: goes into the audit log (required for production)")]
By = Annotated[str | None, typer.Option(help="who: default PROPENSITY_ACTOR or the login name")]


class CutoffChoice(StrEnum):
    keep = "keep"
    take = "take"


@commands.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="version (or alias) to promote")],
    alias: Annotated[str, typer.Option(help="alias to point at it")] = "production",
    reason: Reason = None,
    cutoff: Annotated[
        CutoffChoice | None,
        typer.Option(
            help="when the version's cutoff differs from the one the alias serves: keep that one (the "
            "version is registered again with it) or take the version's own"
        ),
    ] = None,
    create_alias: Annotated[
        bool, typer.Option("--create-alias", help="make a new alias (other than production and staging)")
    ] = False,
    by: By = None,
    shadow_from: Annotated[
        str | None,
        typer.Option(
            help="Prometheus to read what shadow scoring saw of the version beside the alias's current one "
            "(printed, and kept in the audit log); default PROPENSITY_PROMETHEUS_URL"
        ),
    ] = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Point an alias at a version (verified first), recorded in the audit log; serving follows production."""
    from service.lifecycle.promotion import promote
    from service.lifecycle.shadow_summary import describe, shadow_summary

    if alias == "production" and not reason:
        raise typer.BadParameter("say why production changes: --reason TEXT (it goes into the audit log)")
    settings = load_settings(artifacts_dir)
    registry = open_registry(settings)
    _serving_check(registry, version)  # what a replica will load: refused here rather than on every replica
    summary = None
    prometheus = shadow_from or settings.prometheus_url
    current = registry.aliases().get(alias)
    if prometheus and current is not None:
        summary = shadow_summary(prometheus, str(current["version"]), registry.resolve(version))
        typer.echo(describe(summary))
    done = promote(
        registry,
        version,
        alias,
        cutoff=cutoff.value if cutoff else None,
        reason=reason,
        by=by or settings.actor,
        create=create_alias,
        shadow=summary,
    )
    c = done.cutoff
    derived = (
        f" ({registry.resolve(version)} with the kept cutoff)"
        if done.version != registry.resolve(version)
        else ""
    )
    typer.echo(f"{alias} -> {done.version}{derived} (previous: {done.previous or 'none'})")
    if c["before"] is not None:
        typer.echo(f"cutoff {c['served']:.4g} (was {c['before']:.4g}; the version's own {c['own']:.4g})")


@commands.command("rollback")
def registry_rollback(
    alias: Annotated[str, typer.Option(help="alias to roll back")] = "production",
    reason: Reason = None,
    by: By = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Point an alias back at its previous version, recorded in the audit log."""
    settings = load_settings(artifacts_dir)
    info = open_registry(settings).rollback(alias, reason=reason, by=by or settings.actor)
    typer.echo(f"{alias} -> {info['version']} (rolled back)")


@commands.command("alias-delete")
def registry_alias_delete(
    alias: Annotated[str, typer.Argument(help="the alias to remove (never production)")],
    reason: Reason = None,
    by: By = None,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Remove an alias, recorded in the audit log."""
    settings = load_settings(artifacts_dir)
    version = open_registry(settings).delete_alias(alias, reason=reason, by=by or settings.actor)
    typer.echo(f"deleted alias {alias} (it named {version})")


@commands.command("history")
def registry_history(
    alias: Annotated[str | None, typer.Option(help="only this alias's events")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """The audit log: retraining decisions with their gate, promotions, rollbacks, deleted aliases."""
    events = open_registry(load_settings(artifacts_dir)).history()
    if alias:
        events = [e for e in events if e.get("alias") in (alias, None) or e.get("event") == "retrain"]
    for event in events:
        typer.echo(json.dumps(event, sort_keys=True) if as_json else _event_line(event))
    if not events:
        typer.echo("no events")


def _event_line(e: dict[str, Any]) -> str:
    head = f"{e.get('at', '?')}  {e.get('event', '?'):<12} by {e.get('by', '?')}"
    if e.get("event") == "retrain":
        gate = e.get("gate") or {}
        why = "; ".join((gate.get("refusals") or []) + (gate.get("held") or [])) or e.get("error") or ""
        return (
            f"{head}: {e.get('version') or '-'} {e.get('decision')} ({why})"
            if why
            else f"{head}: {e.get('version')} {e.get('decision')}"
        )
    move = f"{e.get('alias')}: {e.get('previous') or '-'} -> {e.get('version') or '(deleted)'}"
    cutoff = e.get("cutoff") or {}
    extra = f", cutoff {cutoff['served']:.4g}" if cutoff.get("served") is not None else ""
    if e.get("derived_from"):
        extra += f" ({e['derived_from']} with the kept cutoff)"
    return f"{head}: {move}{extra}" + (f'  "{e["reason"]}"' if e.get("reason") else "")


@commands.command("diff")
def registry_diff(
    a: Annotated[str, typer.Argument(help="alias or version")],
    b: Annotated[str, typer.Argument(help="alias or version")],
    artifacts_dir: ArtifactsDir = None,
) -> None:
    """Two versions side by side: data, recipe, cutoff, metrics (with the holdout each was measured on),
    features and coefficients."""
    registry = open_registry(load_settings(artifacts_dir))
    ma, mb = registry.metadata(a), registry.metadata(b)
    va, vb = ma["version"], mb["version"]
    rows = [
        ("data", _data(ma), _data(mb)),
        ("recipe", _recipe(ma), _recipe(mb)),
        ("cutoff", f"{ma['cutoff']['value']:g}", f"{mb['cutoff']['value']:g}"),
    ]
    for split in sorted(set(ma["metrics"]["auc"]) | set(mb["metrics"]["auc"])):
        rows.append((f"auc {split}", _auc(ma, split), _auc(mb, split)))
    rows.append(("holdout", holdout_of(ma), holdout_of(mb)))
    for f in sorted(set(ma["coefficients"]) | set(mb["coefficients"])):
        rows.append((f, _coef(ma, f), _coef(mb, f)))
    width = max(len(r[0]) for r in rows)
    typer.echo(f"{'':<{width}}  {va:>22}  {vb:>22}")
    for name, x, y in rows:
        mark = "" if x == y else "  *"
        typer.echo(f"{name:<{width}}  {x:>22}  {y:>22}{mark}")
    if holdout_of(ma) != holdout_of(mb):
        typer.echo("* the AUCs were measured on different holdouts: compare them on one (propensity retrain)")


def holdout_of(meta: dict[str, Any]) -> str:
    """Which rows a version's test AUC was measured on: its own data's test split."""
    source = (meta.get("training") or {}).get("source", "?")
    sha = str(meta.get("data_sha256") or "")
    return f"{source} {sha[:8]} test split" if sha else f"{source} test split"


def _data(meta: dict[str, Any]) -> str:
    sha = str(meta.get("data_sha256") or "")
    return sha[:12] or (meta.get("training") or {}).get("source", "?")


def _recipe(meta: dict[str, Any]) -> str:
    return str((meta.get("training") or {}).get("recipe", "?"))


def _auc(meta: dict[str, Any], split: str) -> str:
    value = meta["metrics"]["auc"].get(split)
    return "-" if value is None else f"{value:.4f}"


def _coef(meta: dict[str, Any], feature: str) -> str:
    value = meta["coefficients"].get(feature)
    return "-" if value is None else f"{value:.6f}"
