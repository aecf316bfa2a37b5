"""Which registry the settings name: the directory registry (the embedded default) or MLflow's Model
Registry (PROPENSITY_MLFLOW_TRACKING_URI set). Both have the same methods; ModelRegistry says which."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from service.model.registry import AuditEvents, Registry, Stamp, VersionInfo
from service.model.serving_artifact import ServingArtifact

if TYPE_CHECKING:
    from service.model.artifact import FittedModel, LoadedArtifact
    from service.settings import Settings


class ModelRegistry(Protocol):
    name: str
    dir: Path  # local: the registry itself, or MLflow's cache (and where decision logs are kept)

    @property
    def location(self) -> str: ...
    def versions(self) -> list[str]: ...
    def aliases(self) -> dict[str, dict[str, Any]]: ...
    def aliases_stamp(self) -> Stamp | None: ...
    def resolve(self, ref: str) -> str: ...
    def path(self, ref: str) -> Path: ...
    def metadata(self, ref: str) -> dict[str, Any]: ...
    def load(self, ref: str) -> LoadedArtifact: ...
    def verify(self, ref: str) -> LoadedArtifact: ...
    def load_serving(self, ref: str) -> ServingArtifact: ...
    def list(self) -> list[VersionInfo]: ...
    def publish(
        self,
        model: FittedModel,
        metadata: dict[str, Any],
        summary: str,
        *,
        check: Callable[[Path], object] | None = None,
    ) -> str: ...
    def add_version(self, source: Path) -> str: ...
    def set_alias(
        self, alias: str, version: str, *, create: bool = False, **record: Any
    ) -> dict[str, Any]: ...
    def rollback(self, alias: str, **record: Any) -> dict[str, Any]: ...
    def delete_alias(self, alias: str, **record: Any) -> str: ...
    def record(self, event: dict[str, Any]) -> None: ...
    def history(self) -> AuditEvents: ...
    def upgrade(self, ref: str) -> bool: ...
    def sign(self, ref: str) -> Path: ...


def open_registry(settings: Settings, uri: str | None = None) -> ModelRegistry:
    """`uri`: an MLflow tracking URI or a directory, instead of the settings' (export and import)."""
    uri = uri if uri is not None else settings.mlflow_tracking_uri
    keys = {"signing_key": settings.signing_key_file, "verify_key": settings.verify_key_file}
    if uri is not None and uri.startswith(("http://", "https://")):
        from service.model.mlflow_registry import MlflowRegistry

        return MlflowRegistry(
            uri,
            settings.model_name,
            cache_root=settings.artifacts_dir.resolve(),
            timeout=settings.mlflow_timeout_seconds,
            **keys,
        )
    root = Path(uri) if uri is not None else settings.artifacts_dir
    return Registry(root.resolve(), settings.model_name, **keys)


def copy_versions(source: ModelRegistry, target: ModelRegistry) -> list[str]:
    """Every version of `source` not yet in `target`, in order, then its aliases: export and import."""
    copied = [target.add_version(source.path(v)) for v in source.versions()]
    for alias, info in sorted(source.aliases().items()):
        if target.aliases().get(alias, {}).get("version") != info["version"]:
            target.set_alias(alias, info["version"], create=True, reason=f"copied from {source.location}")
    return copied
