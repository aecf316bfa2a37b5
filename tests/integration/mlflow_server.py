"""A real `mlflow server` for tests: its own venv (deploy/mlflow/requirements.lock), 127.0.0.1, a free port,
SQLite as the backend store, a local directory as the artifact store served through the server's proxy
(mlflow-artifacts:). Stopped by PID (its own session: the process group is the server and its workers)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from tests.conftest import free_port
from tests.servers import stop_process, wait_until
from tests.tool_venvs import tools_venv

LOCK = Path(__file__).resolve().parents[2] / "deploy" / "mlflow" / "requirements.lock"


@dataclass
class MlflowServer:
    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> MlflowServer:
        mlflow = tools_venv("mlflow-server", LOCK).with_name("mlflow")
        argv = [
            str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PROPENSITY_"))}
        with (self.root / "mlflow.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True
            )
        if not wait_until(self.healthy, timeout, 0.25):
            self.stop()
            text = (self.root / "mlflow.log").read_text()
            raise RuntimeError(f"mlflow server never answered: {text[-2000:]}")
        return self

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return httpx.get(self.url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=20)
            self.process = None

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def mlflow_server(root: Path) -> MlflowServer:
    root.mkdir(parents=True, exist_ok=True)
    return MlflowServer(root, free_port()).start()
