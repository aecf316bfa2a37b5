"""MLflow's REST API, the part a serving worker needs: read the registered model, its aliases and versions,
and download a version's files through the tracking server's artifact proxy.

Hand-written on purpose, beside the MlflowClient the publishing side uses: importing `mlflow` costs a
serving worker ~1.8 s and ~170 MB (it pulls in pandas, scipy and pyarrow), for the few GET requests that
following an alias takes. The endpoints are MLflow's documented REST API 2.0 (stable since MLflow 1.x; the
aliases since 2.3). Credentials as MLflow's own clients read them: MLFLOW_TRACKING_TOKEN (a bearer token)
or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from service.errors import ArtifactNotFound, RegistryUnavailable

PROXY_SCHEME = "mlflow-artifacts:"
CHUNK = 1 << 20


class MlflowRest:
    def __init__(self, uri: str, timeout: float = 10.0) -> None:
        self.uri = uri.rstrip("/")
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            return {"Authorization": f"Bearer {token}"}
        user, password = (
            os.environ.get("MLFLOW_TRACKING_USERNAME"),
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        )
        if user and password:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def _open(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.uri}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        request = urllib.request.Request(url, headers=self._headers())
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            body = exc.read(2000).decode(errors="replace")
            if exc.code == 404 or "RESOURCE_DOES_NOT_EXIST" in body:
                raise ArtifactNotFound(f"MLflow at {self.uri}: {_message(body) or exc.reason}") from None
            raise RegistryUnavailable(f"MLflow at {self.uri} answered {exc.code}: {_message(body)}") from None
        except (OSError, ValueError) as exc:  # URLError, a refused connection, a timeout
            raise RegistryUnavailable(f"MLflow at {self.uri} cannot be reached: {exc}") from None

    def get(self, path: str, **params: str) -> dict[str, Any]:
        with self._open(f"/api/2.0/mlflow/{path}", params) as answer:
            try:
                data: dict[str, Any] = json.loads(answer.read())
            except ValueError as exc:
                raise RegistryUnavailable(f"MLflow at {self.uri}: not JSON ({exc})") from None
        return data

    def registered_model(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get("registered-models/get", name=name)["registered_model"]
        return found

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params = {"filter": f"name='{name}'", "max_results": "1000"}
            page = self.get("model-versions/search", **params, **({"page_token": token} if token else {}))
            found += page.get("model_versions", [])
            token = page.get("next_page_token")
            if not token:
                return found

    def model_version(self, name: str, version: str) -> dict[str, Any]:
        found: dict[str, Any] = self.get("model-versions/get", name=name, version=version)["model_version"]
        return found

    def download(self, source: str, names: list[str], dest: Path) -> None:
        """Files `names` of the artifact directory `source` (an mlflow-artifacts: URI) into `dest`."""
        if not source.startswith(PROXY_SCHEME):
            raise RegistryUnavailable(f"{source} is not served by the tracking server (mlflow-artifacts:)")
        path = urllib.parse.urlparse(source).path.lstrip("/")
        for name in names:
            quoted = urllib.parse.quote(f"{path}/{name}")
            with (
                self._open(f"/api/2.0/mlflow-artifacts/artifacts/{quoted}") as answer,
                (dest / name).open("wb") as out,
            ):
                shutil.copyfileobj(answer, out, CHUNK)


def tags_of(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in entity.get("tags", [])}


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body[:300]))
    except ValueError:
        return body[:300]
