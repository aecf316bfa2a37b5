"""MLflow's Model Registry as the registry, against a real `mlflow server` (SQLite, local artifact store)
started here: train -> a registered version with its run, metrics and files -> promoted by alias -> a
running `propensity serve` (2 workers) follows it under load with no failed request -> MLflow stopped:
serving goes on, ready -> MLflow back: the next promotion is followed. And export/import between the
directory registry and MLflow, version for version."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from service.model.artifact_files import read_checksums
from service.model.mlflow_rest import MlflowRest, tags_of
from service.model.registries import copy_versions, open_registry
from service.model.schema import example_rows
from service.settings import Settings
from tests.integration.mlflow_server import MlflowServer, mlflow_server
from tests.integration.test_model_follower import every_worker_serves
from tests.servers import Server, start_server, wait_until

PROPENSITY = str(Path(sys.executable).with_name("propensity"))
DEADLINE = 60.0
FOLLOW = {"PROPENSITY_RELOAD_INTERVAL_SECONDS": "0.2", "PROPENSITY_RELOAD_BACKOFF_MAX_SECONDS": "0.5"}


@pytest.fixture
def mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path / "mlflow") as server:
        yield server


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PROPENSITY, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


class Load(threading.Thread):
    """Single-row POSTs on fresh connections until stopped: each answer's status and X-Model-Version."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.url = server.url + "/predict"
        self.body = orjson.dumps(example_rows()["rows"][0])
        self.done = threading.Event()
        self.answers: Counter[tuple[int, str | None]] = Counter()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                r = httpx.post(self.url, content=self.body, headers={"content-type": "application/json"})
                self.answers[(r.status_code, r.headers.get("x-model-version"))] += 1
            except httpx.HTTPError as exc:
                self.answers[(0, type(exc).__name__)] += 1

    def stop(self) -> Counter[tuple[int, str | None]]:
        self.done.set()
        self.join(timeout=30)
        return self.answers


def test_train_promote_follow_outage_and_back(mlflow: MlflowServer, tmp_path: Path) -> None:
    env = {"PROPENSITY_MLFLOW_TRACKING_URI": mlflow.url, "PROPENSITY_ARTIFACTS_DIR": str(tmp_path / "cache")}
    assert "propensity/v1 (production)" in cli(env, "import-notebook")
    data = tmp_path / "train.csv"
    cli(env, "make-data", "--rows", "4000", "--seed", "7", "--out", str(data))
    assert "registered propensity/v2" in cli(env, "train", "--data", str(data))

    # the version on MLflow: its run's params and metrics, its files, its tags
    rest = MlflowRest(mlflow.url)
    mv = rest.model_version("propensity", "2")
    run = rest.get("runs/get", run_id=mv["run_id"])["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["data_path"] == str(data) and len(params["data_sha256"]) == 64
    assert {m["key"] for m in run["data"]["metrics"]} >= {"auc_train", "auc_test"}
    assert tags_of(mv)["propensity.sha256"] and mv["source"].startswith("mlflow-artifacts:")
    listed = httpx.get(
        f"{mlflow.url}/api/2.0/mlflow-artifacts/artifacts",
        params={"path": mv["source"].removeprefix("mlflow-artifacts:/")},
    ).json()
    assert {f["path"].rsplit("/", 1)[-1] for f in listed["files"]} >= {
        "model.joblib", "scorer.json", "metadata.json", "SHA256SUMS", "summary.txt",
    }  # fmt: skip
    assert "v2" in cli(env, "registry", "list")

    serve_env = {**env, **FOLLOW, "PROPENSITY_ARTIFACTS_DIR": str(tmp_path / "serve-cache")}
    with start_server(tmp_path / "serve-cache", tmp_path, env=serve_env) as server:
        assert wait_until(lambda: every_worker_serves(server, "v1", "v2"), DEADLINE)
        load = Load(server)
        load.start()
        promoted = cli(env, "registry", "promote", "v2", "--cutoff", "take", "--reason", "the new month")
        assert "production -> v2 (previous: v1)" in promoted
        assert wait_until(lambda: every_worker_serves(server, "v2", "v1"), DEADLINE)
        answers = load.stop()
        assert {status for status, _ in answers} == {200}, answers
        assert answers[(200, "v2")] > 0 and answers[(200, "v1")] > 0

        mlflow.stop()  # MLflow gone: the workers keep serving v2 and stay ready
        load = Load(server)
        load.start()
        assert wait_until(lambda: failures_logged(server), DEADLINE)  # they did try, and failed
        ready = httpx.get(server.url + "/health/ready")
        answers = load.stop()
        assert ready.status_code == 200, ready.text
        assert set(answers) == {(200, "v2")}, answers

        mlflow.start()  # back: the next promotion is followed
        assert "production -> v1" in cli(env, "registry", "rollback", "--reason", "MLflow is back")
        history = cli(env, "registry", "history", "--alias", "production")
        assert '"the new month"' in history and '"MLflow is back"' in history
        assert wait_until(lambda: every_worker_serves(server, "v1", "v2"), DEADLINE)


def failures_logged(server: Server) -> bool:
    from tests.integration.test_model_follower import failures

    return failures(server) >= 2


def test_export_and_import_keep_every_version_and_alias(
    mlflow: MlflowServer, tmp_path: Path, approved_registry: object
) -> None:
    settings = Settings(artifacts_dir=tmp_path / "dir")
    directory = open_registry(settings)
    from service.model.notebook_import import import_notebook

    import_notebook(directory)
    import_notebook(directory, promote_if_empty=False)
    directory.set_alias("staging", "v2")
    env = {"PROPENSITY_ARTIFACTS_DIR": str(tmp_path / "dir")}
    out = cli(env, "registry", "export", mlflow.url)
    assert "copied v1, v2" in out

    on_mlflow = open_registry(settings, mlflow.url)
    assert on_mlflow.versions() == ["v1", "v2"]
    assert {a: i["version"] for a, i in on_mlflow.aliases().items()} == {"production": "v1", "staging": "v2"}
    for version in ("v1", "v2"):  # the same files, byte for byte
        assert read_checksums(on_mlflow.path(version)) == read_checksums(directory.path(version))
    assert cli(env, "registry", "export", mlflow.url).count("copied none") == 1  # again: nothing to do

    back = open_registry(Settings(artifacts_dir=tmp_path / "back"))
    assert copy_versions(on_mlflow, back) == ["v1", "v2"]
    assert back.resolve("staging") == "v2" and back.load_serving("production").version == "v1"


def test_the_registry_api_on_mlflow_in_process(mlflow: MlflowServer, tmp_path: Path) -> None:
    """Every registry operation the commands use, on MLflow, in this process: publish (signed), aliases
    with their refusals and history, the audit log, list, diff's metadata, training-side loads."""
    from service.errors import ArtifactError, ArtifactIntegrityError, ArtifactNotFound
    from service.model.notebook_import import import_notebook
    from service.model.signing import generate_keys

    private, public = generate_keys(tmp_path / "keys")
    settings = Settings(
        artifacts_dir=tmp_path / "cache", mlflow_tracking_uri=mlflow.url, signing_key_file=private
    )
    registry = open_registry(settings)
    assert registry.aliases() == {} and registry.versions() == [] and registry.history() == []
    assert import_notebook(registry) == "v1"
    assert import_notebook(registry, promote_if_empty=False) == "v2"
    assert "MLflow" in registry.location and registry.aliases_stamp() == (("production", "v1"),)

    verifying = open_registry(Settings(artifacts_dir=tmp_path / "other", mlflow_tracking_uri=mlflow.url,
                                       verify_key_file=public))  # fmt: skip
    assert verifying.load_serving("production").signed_by  # downloaded, signature checked
    assert verifying.load("v2").model.cutoff == 0.712  # the training side's unpickled load
    assert verifying.verify("v1").version == "v1" and verifying.metadata("v2")["version"] == "v2"

    with pytest.raises(ArtifactError, match="no alias 'prodution'"):
        registry.set_alias("prodution", "v2")
    registry.set_alias("production", "v2", reason="second import", by="ana")
    registry.set_alias("champion", "v1", create=True)
    assert registry.rollback("production", reason="back")["version"] == "v1"
    assert registry.delete_alias("champion", reason="done") == "v1"
    with pytest.raises(ArtifactError, match="promote another version"):
        registry.delete_alias("production")
    with pytest.raises(ArtifactNotFound, match="no version or alias 'v9'"):
        registry.resolve("v9")
    events = registry.history()
    assert [(e["event"], e["alias"], e["version"]) for e in events] == [
        ("promote", "production", "v1"),
        ("promote", "production", "v2"),
        ("promote", "champion", "v1"),
        ("rollback", "production", "v1"),
        ("alias-delete", "champion", None),
    ]
    assert events[1]["by"] == "ana" and events[1]["reason"] == "second import"
    listed = {v.version: v for v in registry.list()}
    assert listed["v1"].aliases == ("production",) and listed["v2"].auc_test == pytest.approx(
        0.8021842765709619
    )
    with pytest.raises(ArtifactError, match="not changed in place"):
        registry.upgrade("v1")
    with pytest.raises(ArtifactError, match="signed when it is published"):
        registry.sign("v1")

    tampered = open_registry(Settings(artifacts_dir=tmp_path / "third", mlflow_tracking_uri=mlflow.url))
    cached = tampered.path("v1")  # a cached copy changed on disk is refused, never served
    (cached / "scorer.json").write_text("{}")
    with pytest.raises(ArtifactIntegrityError):
        tampered.load_serving("v1")
