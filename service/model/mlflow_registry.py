"""The registry on an MLflow tracking server: MLflow's Model Registry is the shared store; a version's
files are the same as in the directory registry, so every check (sha256, signature, scorer.json, golden
rows) is the same whichever backend a version came from.

    registered model  <name> (propensity)          aliases: production, staging, ... -> MLflow versions
    model version N   = our vN; source = its run's artifacts/propensity/ (the version directory's files)
                        tag propensity.sha256 (set last: a version without it is incomplete and ignored)
    run               one per version, in experiment <name>: params (recipe, data path, rows, data
                      sha256), metrics (AUC per split), the files, the summary; tags: the gate's decision
    model tags        propensity.history.<alias>: the alias's earlier versions (for rollback), newest first

Reads (following an alias, loading a version) go through MLflow's REST API (service/model/mlflow_rest.py)
and download a version once into a local cache, `<artifacts_dir>/.mlflow/<name>/vN/`, verified on every
load. Writes (publish, aliases) use MLflow's own client, imported only by the processes that write. When
MLflow cannot be reached, reads raise RegistryUnavailable: a serving worker keeps its current version.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import ArtifactError, ArtifactNotFound, RegistryUnavailable
from service.model.artifact_files import CHECKSUMS_FILE, json_safe, read_checksums, verify_directory
from service.model.mlflow_rest import MlflowRest, tags_of
from service.model.registry import (
    HISTORY_KEPT,
    VERSION_RE,
    AuditEvents,
    Registry,
    Stamp,
    VersionInfo,
    audit_event,
    check_alias,
    now_iso,
    refuse_alias_delete,
    refuse_duplicate,
    refuse_unknown_alias,
    write_version,
)
from service.model.serving_artifact import ServingArtifact, load_serving_artifact
from service.model.signing import SIGNATURE_FILE

if TYPE_CHECKING:
    from service.model.artifact import FittedModel, LoadedArtifact

ARTIFACT_PATH = "propensity"
SHA_TAG = "propensity.sha256"
FINGERPRINT_TAG = "propensity.fingerprint"
HISTORY_TAG = "propensity.history."
CACHE = ".mlflow"
AUDIT_TAG = "propensity.audit."
AUDIT_TAG_MAX = 5000  # MLflow's limit for a registered model's tag value


class MlflowRegistry:
    def __init__(
        self,
        tracking_uri: str,
        name: str = "propensity",
        *,
        cache_root: Path,
        signing_key: Path | None = None,
        verify_key: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        # the local cache is a directory registry: its checks, its lock, its atomic renames
        self.cache = Registry(Path(cache_root) / CACHE, name, signing_key=signing_key, verify_key=verify_key)
        self.name, self.dir = self.cache.name, self.cache.dir
        self.tracking_uri = tracking_uri
        self.rest = MlflowRest(tracking_uri, timeout)
        self.signing_key, self.verify_key = signing_key, verify_key

    @property
    def location(self) -> str:
        return f"MLflow {self.tracking_uri} (model {self.name}; cache {self.dir})"

    # --- reading ------------------------------------------------------------------------------------------
    def _model(self) -> dict[str, Any] | None:
        try:
            return self.rest.registered_model(self.name)
        except ArtifactNotFound:
            return None

    def aliases(self) -> dict[str, dict[str, Any]]:
        model = self._model()
        if model is None:
            return {}
        tags = tags_of(model)
        out = {}
        for entry in model.get("aliases", []):
            alias = entry["alias"]
            history = json.loads(tags.get(HISTORY_TAG + alias, "[]"))
            out[alias] = {"version": f"v{entry['version']}", "history": history}
        return out

    def aliases_stamp(self) -> Stamp | None:
        """The alias -> version pairs (one GET): what a follower compares."""
        aliases = self.aliases()
        return tuple(sorted((a, info["version"]) for a, info in aliases.items())) or None

    def _versions(self) -> dict[str, dict[str, Any]]:
        found = {}
        for mv in self.rest.model_versions(self.name):
            if SHA_TAG in tags_of(mv):  # complete: its files were all logged
                found[f"v{mv['version']}"] = mv
        return found

    def versions(self) -> list[str]:
        return sorted(self._versions(), key=lambda v: int(v[1:]))

    def resolve(self, ref: str) -> str:
        alias = self.aliases().get(ref)
        version = alias["version"] if alias else ref
        if VERSION_RE.match(version):
            try:
                mv = self.rest.model_version(self.name, version[1:])
            except ArtifactNotFound:
                mv = None
            if mv is not None and SHA_TAG in tags_of(mv):
                return version
        known = ", ".join(self.versions() + sorted(self.aliases())) or "none"
        raise ArtifactNotFound(f"{self.name} on MLflow: no version or alias {ref!r} (known: {known})")

    def path(self, ref: str) -> Path:
        """The version's files in the local cache, downloaded when missing (then verified, then renamed into
        place, so a cached version is whole)."""
        version = self.resolve(ref)
        cached = self.dir / version
        if cached.is_dir():
            return cached
        mv = self.rest.model_version(self.name, version[1:])
        self.dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self.dir))
        try:
            self._download(mv["source"], staging)
            verify_directory(staging)
            try:
                staging.rename(cached)
            except OSError:  # another worker placed it first: theirs is verified as ours would be
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cached

    def _download(self, source: str, dest: Path) -> None:
        if source.startswith("mlflow-artifacts:"):
            self.rest.download(source, [CHECKSUMS_FILE], dest)
            self.rest.download(source, list(read_checksums(dest)), dest)
            with contextlib.suppress(ArtifactNotFound):  # an unsigned version
                self.rest.download(source, [SIGNATURE_FILE], dest)
            return
        # another artifact store (s3://, gs://, wasbs://, a path): MLflow's client reads them all
        try:
            from mlflow.artifacts import download_artifacts
        except ModuleNotFoundError:
            raise RegistryUnavailable(
                f"cannot download {source}: an artifact store other than the tracking server's own is read "
                "by MLflow's client, the 'mlflow' extra, which this serving install does not have (install "
                "it, or run `mlflow server --serve-artifacts` so that replicas download through the server)"
            ) from None

        try:
            download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=self.tracking_uri)
        except Exception as exc:  # MlflowException, the cloud SDKs' own errors
            raise RegistryUnavailable(f"cannot download {source}: {exc}") from None
        inner = dest / Path(source.rstrip("/")).name
        if inner.is_dir():
            for file in inner.iterdir():
                file.rename(dest / file.name)
            inner.rmdir()

    def metadata(self, ref: str) -> dict[str, Any]:
        return self.cache.metadata(self.path(ref).name)

    def load_serving(self, ref: str) -> ServingArtifact:
        return load_serving_artifact(self.path(ref), self.verify_key)

    def load(self, ref: str) -> LoadedArtifact:
        self.path(ref)
        return self.cache.load(self.resolve(ref))

    def verify(self, ref: str) -> LoadedArtifact:
        return self.load(ref)

    def list(self) -> list[VersionInfo]:
        aliases = self.aliases()
        out = []
        for version, mv in sorted(self._versions().items(), key=lambda kv: int(kv[0][1:])):
            tags = tags_of(mv)
            auc = tags.get("propensity.auc_test")
            out.append(
                VersionInfo(
                    version=version,
                    created_at=tags.get("propensity.created_at", "?"),
                    aliases=tuple(sorted(a for a, info in aliases.items() if info["version"] == version)),
                    auc_test=float(auc) if auc else None,
                    source=tags.get("propensity.source", "?"),
                    data_sha256=tags.get("propensity.data_sha256", ""),
                )
            )
        return out

    # --- writing (MLflow's client) ------------------------------------------------------------------------
    def _client(self) -> Any:
        from mlflow import MlflowClient  # the training side: pandas and friends come with it

        return MlflowClient(tracking_uri=self.tracking_uri)

    def publish(
        self,
        model: FittedModel,
        metadata: dict[str, Any],
        summary: str,
        *,
        check: Callable[[Path], object] | None = None,
    ) -> str:
        """A run with the version's params, metrics and files, and a model version registered from it."""
        from service.model.artifact import load_artifact

        fingerprints = {v: tags_of(mv).get(FINGERPRINT_TAG) for v, mv in self._versions().items()}
        refuse_duplicate(metadata, fingerprints)

        def write(directory: Path, version: str) -> None:
            write_version(directory, model, metadata, summary, self.name, version, self.signing_key)
            (check or load_artifact)(directory)

        return self._register(write, run_name=str(metadata.get("description", "") or "training")[:80])

    def add_version(self, source: Path) -> str:
        """A version directory from another registry, under the same name: MLflow numbers versions itself,
        so the next number here must be the version's own (export into a registered model in step)."""
        meta = verify_directory(source)
        wanted = str(meta["version"])
        if wanted in self.versions():
            if read_checksums(self.path(wanted)) == read_checksums(source):
                return wanted
            raise ArtifactError(f"{self.name}/{wanted} exists on MLflow with other files: not replaced")

        def write(directory: Path, version: str) -> None:
            if version != wanted:
                raise ArtifactError(
                    f"MLflow numbered the copy of {wanted} as {version}: the registered model {self.name} "
                    "is not in step with the source registry (export into a new registered model)"
                )
            for file in source.iterdir():
                if file.is_file() and not file.name.startswith("."):
                    shutil.copyfile(file, directory / file.name)

        return self._register(write, run_name=f"copy of {wanted}")

    def _register(self, write: Callable[[Path, str], None], run_name: str) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            experiment = client.get_experiment_by_name(self.name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.name)
            if self._model() is None:
                client.create_registered_model(self.name)
            run = client.create_run(experiment_id, run_name=run_name)
        except MlflowException as exc:
            raise RegistryUnavailable(f"MLflow at {self.tracking_uri}: {exc.message}") from None
        run_id = run.info.run_id
        mv = client.create_model_version(  # an OSS server registers at once: no polling for READY
            self.name, f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run_id, await_creation_for=0
        )
        version = f"v{mv.version}"
        try:
            with tempfile.TemporaryDirectory(prefix="propensity-publish-") as tmp:
                directory = Path(tmp)
                write(directory, version)
                meta = verify_directory(directory)
                _log_run(client, run_id, meta, directory)
                client.log_artifacts(run_id, str(directory), ARTIFACT_PATH)
                for key, value in _version_tags(meta).items():
                    client.set_model_version_tag(self.name, mv.version, key, value)
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            client.delete_model_version(self.name, mv.version)
            client.set_terminated(run_id, "FAILED")
            raise
        return version

    def set_alias(self, alias: str, version: str, *, create: bool = False, **record: Any) -> dict[str, Any]:
        check_alias(alias)
        version = self.resolve(version)
        verify_directory(self.path(version))
        aliases = self.aliases()
        refuse_unknown_alias(alias, aliases, create)
        current = aliases.get(alias)
        history: list[str] = list(current["history"]) if current else []
        if current and current["version"] != version:
            history = [current["version"], *history][:HISTORY_KEPT]
        self._point(alias, version, history)
        self.record(audit_event("promote", alias, version, current["version"] if current else None, **record))
        return {"version": version, "history": history, "updated_at": now_iso()}

    def rollback(self, alias: str, **record: Any) -> dict[str, Any]:
        current = self.aliases().get(alias)
        if not current or not current.get("history"):
            raise ArtifactNotFound(f"alias {alias!r} has no previous version to roll back to")
        previous, *rest = current["history"]
        verify_directory(self.path(previous))
        self._point(alias, previous, rest)
        self.record(audit_event("rollback", alias, previous, current["version"], **record))
        return {"version": previous, "history": rest, "updated_at": now_iso()}

    def delete_alias(self, alias: str, **record: Any) -> str:
        aliases = self.aliases()
        refuse_alias_delete(alias, aliases)
        client = self._client()
        client.delete_registered_model_alias(self.name, alias)
        client.delete_registered_model_tag(self.name, HISTORY_TAG + alias)
        version = str(aliases[alias]["version"])
        self.record(audit_event("alias-delete", alias, None, version, **record))
        return version

    def record(self, event: dict[str, Any]) -> None:
        """An audit event as a tag of the registered model (`propensity.audit.<ms>-<id>`), so every node
        reads the same log; a large report is cut to its decision (its whole text stays in the run)."""
        client = self._client()
        if self._model() is None:
            client.create_registered_model(self.name)
        value = json.dumps(json_safe(event), sort_keys=True, default=str)
        if len(value) > AUDIT_TAG_MAX:
            slim = {k: v for k, v in event.items() if not isinstance(v, dict | list)}
            value = json.dumps(json_safe({**slim, "cut": True}), sort_keys=True, default=str)[:AUDIT_TAG_MAX]
        key = f"{AUDIT_TAG}{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:6]}"
        client.set_registered_model_tag(self.name, key, value)

    def history(self) -> AuditEvents:
        model = self._model()
        tags = tags_of(model) if model else {}
        out = []
        for key in sorted(k for k in tags if k.startswith(AUDIT_TAG)):
            with contextlib.suppress(ValueError):
                out.append(json.loads(tags[key]))
        return out

    def _point(self, alias: str, version: str, history: Sequence[str]) -> None:
        client = self._client()
        # the history first: a follower that sees the new alias sees the history that goes with it
        client.set_registered_model_tag(self.name, HISTORY_TAG + alias, json.dumps(list(history)))
        client.set_registered_model_alias(self.name, alias, version[1:])

    def upgrade(self, ref: str) -> bool:
        raise ArtifactError(
            "a version on MLflow is not changed in place: upgrade it in a directory registry "
            "(`propensity registry import`), then export it as a new registered model"
        )

    def sign(self, ref: str) -> Path:
        raise ArtifactError(
            "a version on MLflow is signed when it is published (PROPENSITY_SIGNING_KEY_FILE)"
        )


def _version_tags(meta: dict[str, Any]) -> dict[str, str]:
    auc = ((meta.get("metrics") or {}).get("auc") or {}).get("test")
    tags = {
        "propensity.created_at": str(meta.get("created_at", "")),
        "propensity.source": str((meta.get("training") or {}).get("source", "")),
        "propensity.data_sha256": str(meta.get("data_sha256", "")),
    }
    if auc is not None:
        tags["propensity.auc_test"] = repr(float(auc))
    if meta.get("fingerprint"):
        tags[FINGERPRINT_TAG] = str(meta["fingerprint"])
    tags[SHA_TAG] = str(meta["files"]["model.joblib"]["sha256"])  # last: the version is complete
    return tags


def _log_run(client: Any, run_id: str, meta: dict[str, Any], directory: Path) -> None:
    """The run's params, metrics and tags: what an analyst reads in MLflow's UI."""
    from mlflow.entities import Metric, Param, RunTag

    training = meta.get("training") or {}
    params = {
        "version": meta["version"],
        "recipe": training.get("recipe", ""),
        "source": training.get("source", ""),
        "data_path": training.get("data_path", ""),
        "data_sha256": meta.get("data_sha256", ""),
        "rows": (meta.get("fit") or {}).get("nobs", ""),
        "cutoff": (meta.get("cutoff") or {}).get("value", ""),
        "features": len(meta.get("selected_features") or []),
    }
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"auc_{split}", float(value), now, 0)
        for split, value in ((meta.get("metrics") or {}).get("auc") or {}).items()
        if value is not None
    ]
    tags = [RunTag("propensity.version", meta["version"])]
    if "retraining" in meta:
        tags.append(RunTag("propensity.decision", str(meta["retraining"].get("decision", ""))))
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, str(v)[:500]) for k, v in params.items()],
        tags=tags,
    )
    if "retraining" in meta:
        client.log_dict(run_id, meta["retraining"], "gate_report.json")
    client.log_text(run_id, (directory / "summary.txt").read_text(), "summary.txt")
