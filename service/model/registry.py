"""The model registry: versioned artifact directories plus aliases, on a plain (possibly shared) filesystem.

    <root>/<name>/v1/, v2/, ...      immutable versions (written to a temp dir, then renamed into place)
    <root>/<name>/aliases.json       {"production": {"version": "v2", "history": ["v1"], "updated_at": ...}}
    <root>/<name>/.lock              flock()ed while allocating a version or changing an alias

Everything that changes state happens under the lock and becomes visible with one atomic rename, so a
reader (a serving worker) sees either the old or the new state, never a half-written one. Every file is
fsynced before its rename and the directory after it, so a crash (or a power cut) cannot leave a renamed
but empty file behind. Files are created world-readable (0644, directories 0755), not with the 0600/0700
of mkstemp/mkdtemp: the serving user is often not the one who promotes (a container user, an operator).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import ArtifactError, ArtifactIntegrityError, ArtifactNotFound, DuplicateVersion
from service.model.artifact_files import (
    CHECKSUMS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    checksums_text,
    json_safe,
    read_checksums,
    sha256_file,
    verify_directory,
    write_checksums,
)
from service.model.scorer_spec import SCORER_FILE, ScorerSpec, spec_of
from service.model.serving_artifact import ServingArtifact, load_serving_artifact
from service.model.signing import SIGNATURE_FILE, signature_for
from service.settings import check_model_name

if TYPE_CHECKING:  # the training side: unpickling, joblib, pandas and sklearn are imported when used
    from service.model.artifact import FittedModel, LoadedArtifact

VERSION_RE = re.compile(r"^v(\d+)$")
ALIASES_FILE = "aliases.json"
AUDIT_FILE = "audit.jsonl"
# The aliases a registry knows without being told: serving follows `production`, retraining stages a
# challenger as `staging`. Any other is created deliberately (`promote --create-alias`), so a typo
# (`prodution`) is refused instead of becoming an alias nothing follows.
KNOWN_ALIASES = ("production", "staging")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
HISTORY_KEPT = 20
FILE_MODE = 0o644
DIR_MODE = 0o755
# What a follower compares to see that the aliases changed: the directory registry's (mtime_ns, ctime_ns,
# inode, size) of aliases.json, MLflow's alias -> version pairs.
Stamp = tuple[Any, ...]
AuditEvents = list[dict[str, Any]]  # a registry's audit log, oldest first


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a temporary file in the same directory, fsync, rename, fsync the directory.
    A reader sees the old content or the new, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def library_versions() -> dict[str, str]:
    """The versions a version was built with. The training stack is imported here, when a version is
    published, not when a serving worker imports the registry."""
    import platform

    import joblib
    import numpy
    import pandas
    import scipy
    import sklearn
    import statsmodels

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "statsmodels": statsmodels.__version__,
        "joblib": joblib.__version__,
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str
    aliases: tuple[str, ...]
    auc_test: float | None
    source: str
    data_sha256: str = ""  # the data the version was trained on, and its test AUC measured on (its split)


class Registry:
    """`signing_key`: an Ed25519 private key (PEM) that signs every version published or upgraded here;
    `verify_key`: the public key without whose signature load_serving refuses a version."""

    def __init__(
        self,
        root: Path,
        name: str = "propensity",
        *,
        signing_key: Path | None = None,
        verify_key: Path | None = None,
    ) -> None:
        try:
            check_model_name(name)
        except ValueError as exc:  # ".." or "a/b" would point the registry outside its root
            raise ArtifactError(f"bad model name {name!r}: {exc}") from None
        self.root = Path(root)
        self.name = name
        self.dir = self.root / name
        self.signing_key = signing_key
        self.verify_key = verify_key

    @property
    def location(self) -> str:
        return str(self.dir)

    # --- reading --------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        found = [p.name for p in self.dir.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def aliases(self) -> dict[str, dict[str, Any]]:
        """The aliases file, parsed. Raises ArtifactError for one that is not JSON of the expected shape (a
        hand edit or another tool's partial write: this registry only ever renames a complete file)."""
        path = self.dir / ALIASES_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_bytes())
        except ValueError as exc:
            raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict) or not all(
            isinstance(info, dict) and isinstance(info.get("version"), str) for info in data.values()
        ):
            raise ArtifactError(f"{path}: not an object of aliases with a version each")
        return data

    def aliases_stamp(self) -> Stamp | None:
        """Cheap change detector for followers: (mtime_ns, ctime_ns, inode, size) of aliases.json; None if
        missing. The size catches a rewrite in place within the file system's timestamp granularity, the
        ctime a change of permissions (a file made readable again)."""
        try:
            st = os.stat(self.dir / ALIASES_FILE)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size)

    def resolve(self, ref: str) -> str:
        """An alias or a version -> a version that exists."""
        alias = self.aliases().get(ref)
        version = alias["version"] if alias else ref
        if not VERSION_RE.match(version) or not (self.dir / version).is_dir():
            known = ", ".join(self.versions() + sorted(self.aliases())) or "none"
            raise ArtifactNotFound(f"{self.name}: no version or alias {ref!r} (known: {known})")
        return str(version)

    def path(self, ref: str) -> Path:
        return self.dir / self.resolve(ref)

    def metadata(self, ref: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path(ref) / METADATA_FILE).read_text())
        return data

    def verify(self, ref: str) -> LoadedArtifact:
        """Full check: sha256 of every file, then unpickle and run the golden rows."""
        from service.model.artifact import load_artifact  # the training stack

        return load_artifact(self.path(ref))

    def load(self, ref: str) -> LoadedArtifact:
        """The version with its fitted Pipeline, unpickled: for training, evaluation and audit only."""
        from service.model.artifact import load_artifact  # the training stack

        return load_artifact(self.path(ref))

    def load_serving(self, ref: str) -> ServingArtifact:
        """The version as a serving worker loads it: verified (signed, when a verify key is set), scorer.json
        parsed; nothing unpickled."""
        return load_serving_artifact(self.path(ref), self.verify_key)

    def list(self) -> list[VersionInfo]:
        by_version: dict[str, list[str]] = {}
        for alias, info in self.aliases().items():
            by_version.setdefault(info["version"], []).append(alias)
        out = []
        for version in self.versions():
            try:
                meta = json.loads((self.dir / version / METADATA_FILE).read_text())
            except (OSError, ValueError):
                meta = {}
            auc = (meta.get("metrics") or {}).get("auc") or {}
            out.append(
                VersionInfo(
                    version=version,
                    created_at=str(meta.get("created_at", "?")),
                    aliases=tuple(sorted(by_version.get(version, []))),
                    auc_test=auc.get("test"),
                    source=str((meta.get("training") or {}).get("source", "?")),
                    data_sha256=str(meta.get("data_sha256") or ""),
                )
            )
        return out

    # --- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(
        self,
        model: FittedModel,
        metadata: dict[str, Any],
        summary: str,
        *,
        check: Callable[[Path], object] | None = None,
    ) -> str:
        """Write a new version atomically and return its name. Nothing is left behind on failure. `check`
        (default: load it back, unpickled, and run its golden rows) must accept the written directory."""
        from service.model.artifact import load_artifact

        with self._locked():
            existing = self.versions()
            refuse_duplicate(metadata, {v: self._fingerprint(v) for v in existing})
            version = f"v{int(existing[-1][1:]) + 1 if existing else 1}"
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.dir))
            try:
                names = write_version(staging, model, metadata, summary, self.name, version, self.signing_key)
                (check or load_artifact)(staging)  # refuse to publish what we could not load back
                self._place(staging, names, version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return version

    def _fingerprint(self, version: str) -> str | None:
        try:
            found = json.loads((self.dir / version / METADATA_FILE).read_text()).get("fingerprint")
        except (OSError, ValueError):
            return None
        return str(found) if found else None

    def add_version(self, source: Path) -> str:
        """A version directory written elsewhere (another registry's), verified and copied in under its own
        name; refused when that name is taken here by other files."""
        metadata = verify_directory(source)
        version = str(metadata["version"])
        if metadata.get("name") != self.name or not VERSION_RE.match(version):
            raise ArtifactError(
                f"{source}: version {version!r} of model {metadata.get('name')!r}, not of {self.name}"
            )
        with self._locked():
            if (self.dir / version).is_dir():
                if read_checksums(self.dir / version) == read_checksums(source):
                    return version  # already here, the same files
                raise ArtifactError(f"{self.name}/{version} exists here with other files: not replaced")
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.dir))
            try:
                names = [p.name for p in source.iterdir() if p.is_file() and not p.name.startswith(".")]
                for name in names:
                    shutil.copyfile(source / name, staging / name)
                verify_directory(staging)
                self._place(staging, names, version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return version

    def _place(self, staging: Path, names: Sequence[str], version: str) -> None:
        """The staged version made durable and visible under its name in one rename (under the lock)."""
        for name in names:
            os.chmod(staging / name, FILE_MODE)
            fsync_path(staging / name)
        os.chmod(staging, DIR_MODE)
        fsync_path(staging)
        os.rename(staging, self.dir / version)
        fsync_path(self.dir)

    def upgrade(self, ref: str) -> bool:
        """Add scorer.json to a version written before it existed, from its pickle (an operator's step:
        this unpickles), the sums and metadata rewritten to list it; signed when a signing key is set.
        False when the version already has one (nothing changes)."""
        from service.model.artifact import load_artifact  # the training stack, on purpose

        directory = self.path(ref)
        with self._locked():
            if SCORER_FILE in read_checksums(directory):
                return False
            artifact = load_artifact(directory)
            write_scorer(directory, spec_of(artifact.model), atomic=True)
            meta = dict(artifact.metadata)
            meta["files"] = {**meta.get("files", {}), **files_of(directory, (SCORER_FILE,))}
            meta["upgraded_at"] = now_iso()
            write_atomic(directory / METADATA_FILE, json.dumps(json_safe(meta), indent=1).encode())
            names = [n for n in read_checksums(directory) if n != SCORER_FILE]
            write_atomic(
                directory / CHECKSUMS_FILE, checksums_text(directory, [*names, SCORER_FILE]).encode()
            )
            if self.signing_key is not None:
                write_atomic(directory / SIGNATURE_FILE, signature_for(directory, self.signing_key))
        return True

    def sign(self, ref: str) -> Path:
        """Sign a version as it is (its files verified first) with the signing key."""
        if self.signing_key is None:
            raise ArtifactError("no signing key: set PROPENSITY_SIGNING_KEY_FILE")
        directory = self.path(ref)
        verify_directory(directory)
        with self._locked():
            write_atomic(directory / SIGNATURE_FILE, signature_for(directory, self.signing_key))
        return directory / SIGNATURE_FILE

    def set_alias(self, alias: str, version: str, *, create: bool = False, **record: Any) -> dict[str, Any]:
        """Point `alias` at `version` (verified first); the previous target goes onto the history. An alias
        that is not one of KNOWN_ALIASES and does not exist yet is refused unless `create`. `record`
        (by, reason, cutoff, gate, ...) goes into the audit log with the change."""
        check_alias(alias)
        version = self.resolve(version)
        verify_directory(self.dir / version)
        with self._locked():
            aliases = self.aliases()
            refuse_unknown_alias(alias, aliases, create)
            current = aliases.get(alias)
            history: list[str] = list(current.get("history", [])) if current else []
            if current and current["version"] != version:
                history = [current["version"], *history][:HISTORY_KEPT]
            aliases[alias] = {"version": version, "history": history, "updated_at": now_iso()}
            self._write_aliases(aliases)
            previous = current["version"] if current else None
            self._audit(audit_event("promote", alias, version, previous, **record))
            return aliases[alias]

    def rollback(self, alias: str, **record: Any) -> dict[str, Any]:
        """Point `alias` back at its previous version (the head of its history)."""
        with self._locked():
            aliases = self.aliases()
            current = aliases.get(alias)
            if not current or not current.get("history"):
                raise ArtifactNotFound(f"alias {alias!r} has no previous version to roll back to")
            previous, *rest = current["history"]
            verify_directory(self.dir / previous)
            aliases[alias] = {"version": previous, "history": rest, "updated_at": now_iso()}
            self._write_aliases(aliases)
            self._audit(audit_event("rollback", alias, previous, current["version"], **record))
            return aliases[alias]

    def delete_alias(self, alias: str, **record: Any) -> str:
        """Remove an alias (never `production`, which serving follows); returns the version it named."""
        with self._locked():
            aliases = self.aliases()
            refuse_alias_delete(alias, aliases)
            version = str(aliases.pop(alias)["version"])
            self._write_aliases(aliases)
            self._audit(audit_event("alias-delete", alias, None, version, **record))
            return version

    # --- the audit log ----------------------------------------------------------------------------------
    def record(self, event: dict[str, Any]) -> None:
        """One event (a retraining decision, ...) into the audit log."""
        with self._locked():
            self._audit(event)

    def _audit(self, event: dict[str, Any]) -> None:
        line = (json.dumps(json_safe(event), sort_keys=True, default=str) + "\n").encode()
        fd = os.open(self.dir / AUDIT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self) -> AuditEvents:
        """The audit log, oldest first."""
        path = self.dir / AUDIT_FILE
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def _write_aliases(self, aliases: dict[str, Any]) -> None:
        write_atomic(self.dir / ALIASES_FILE, json.dumps(aliases, indent=1, sort_keys=True).encode())


def refuse_duplicate(metadata: dict[str, Any], fingerprints: dict[str, str | None]) -> None:
    """A version whose fingerprint (data sha256, recipe, code) an existing version has is not published."""
    mine = metadata.get("fingerprint")
    same = [v for v, theirs in fingerprints.items() if mine and theirs == mine]
    if same:
        raise DuplicateVersion(
            f"{same[0]} was trained on the same data (sha256 {str(metadata.get('data_sha256'))[:12]}…) with "
            "the same recipe and code: it is reused, no new version is registered",
            same[0],
        )


def check_alias(alias: str) -> None:
    if not ALIAS_RE.match(alias):
        raise ArtifactError(f"bad alias name {alias!r}: lower-case letters, digits, - and _")


def refuse_unknown_alias(alias: str, aliases: dict[str, Any], create: bool) -> None:
    if alias in KNOWN_ALIASES or alias in aliases or create:
        return
    known = ", ".join(sorted({*KNOWN_ALIASES, *aliases}))
    raise ArtifactError(f"no alias {alias!r} (known: {known}); to make a new one, say so: --create-alias")


def refuse_alias_delete(alias: str, aliases: dict[str, Any]) -> None:
    if alias not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise ArtifactNotFound(f"no alias {alias!r} to delete (known: {known})")
    if alias == "production":
        raise ArtifactError("production is what serving follows: promote another version, do not delete it")


def actor() -> str:
    """Who is acting, when nobody said (`--by`, PROPENSITY_ACTOR): the login name."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's uid)
        return f"uid {os.getuid()}"


def audit_event(
    event: str, alias: str | None, version: str | None, previous: str | None, **record: Any
) -> dict[str, Any]:
    """An audit log entry: what happened to which alias, who did it, when, why (and what came with it)."""
    return {
        "at": now_iso(),
        "event": event,
        "alias": alias,
        "version": version,
        "previous": previous,
        "by": record.pop("by", None) or actor(),
        **{k: v for k, v in record.items() if v is not None},
    }


def write_version(
    directory: Path,
    model: FittedModel,
    metadata: dict[str, Any],
    summary: str,
    name: str,
    version: str,
    signing_key: Path | None,
) -> list[str]:
    """The files of version `version` into `directory` (model.joblib, scorer.json, summary.txt, metadata.json,
    SHA256SUMS and, with a signing key, SIGNATURE); returns their names."""
    import joblib  # the training stack: only a publisher writes pickles

    joblib.dump(model, directory / MODEL_FILE)
    (directory / SUMMARY_FILE).write_text(summary)
    write_scorer(directory, spec_of(model))
    meta = {
        "name": name,
        "version": version,
        "created_at": now_iso(),
        **metadata,
        "library_versions": library_versions(),
        "files": files_of(directory, (MODEL_FILE, SCORER_FILE, SUMMARY_FILE)),
    }
    (directory / METADATA_FILE).write_text(json.dumps(json_safe(meta), indent=1, allow_nan=False))
    write_checksums(directory, [METADATA_FILE, MODEL_FILE, SCORER_FILE, SUMMARY_FILE])
    names = [MODEL_FILE, SCORER_FILE, SUMMARY_FILE, METADATA_FILE, CHECKSUMS_FILE]
    if signing_key is not None:
        (directory / SIGNATURE_FILE).write_bytes(signature_for(directory, signing_key))
        names.append(SIGNATURE_FILE)
    return names


def write_scorer(directory: Path, spec: ScorerSpec, *, atomic: bool = False) -> None:
    """scorer.json, after checking it reads back to the same spec (floats to the same bits)."""
    data = spec.to_json()
    if ScorerSpec.from_json(data) != spec:
        raise ArtifactIntegrityError(f"{directory}: the scorer file does not read back to the model it holds")
    if atomic:
        write_atomic(directory / SCORER_FILE, data)
    else:
        (directory / SCORER_FILE).write_bytes(data)


def files_of(directory: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
        for name in names
    }


__all__ = ["CHECKSUMS_FILE", "Registry", "VersionInfo"]
