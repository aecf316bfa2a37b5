"""MLflow's own scoring-server client, and requests with every body form, against a real gunicorn: the
reference rows get the same phat bits through /invocations as through /predict."""

from __future__ import annotations

import gzip
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import requests

from service.model.registry import Registry
from tests.servers import Server, start_server

if TYPE_CHECKING:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(approved_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-served")
    with start_server(approved_registry.root, root, workers=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> ScoringServerClient:
    with warnings.catch_warnings():  # importing mlflow.pyfunc warns about mlflow's own type hints
        warnings.simplefilter("ignore", UserWarning)
        from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    mlflow = ScoringServerClient("127.0.0.1", server.port)  # type: ignore[no-untyped-call]
    mlflow.wait_server_ready(timeout=30)  # type: ignore[no-untyped-call]  # polls /ping
    return mlflow


@pytest.fixture(scope="module")
def frame(reference_rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(reference_rows)


def predict(server: Server, rows: list[dict[str, Any]], query: str = "") -> list[dict[str, Any]]:
    r = requests.post(f"{server.url}/predict{query}", data=json.dumps(rows), headers=JSON, timeout=30)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


def invocations(server: Server, body: Any, **headers: str) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{server.url}/invocations", data=data, headers={**JSON, **headers}, timeout=30)


def test_the_mlflow_client_gets_the_phat_bits_of_predict(
    server: Server, client: ScoringServerClient, frame: pd.DataFrame, reference_rows: list[dict[str, Any]]
) -> None:
    expected = predict(server, reference_rows)
    answer = client.invoke(frame)
    assert answer["predictions"] == expected  # every record, every key, every bit
    got = answer.get_predictions()  # the DataFrame an MLflow user reads
    assert got["phat"].tolist() == [r["phat"] for r in expected]
    assert got["business_outcome"].tolist() == [r["business_outcome"] for r in expected]


def test_the_mlflow_client_sends_nan_and_params(
    server: Server, client: ScoringServerClient, frame: pd.DataFrame, reference_rows: list[dict[str, Any]]
) -> None:
    holed = frame.copy()
    holed.loc[0, "x44"] = math.nan  # the client's json.dumps writes a bare NaN
    expected = predict(server, [dict(reference_rows[0], x44=None), *reference_rows[1:]])
    assert client.invoke(holed)["predictions"] == expected
    with_reasons = client.invoke(frame, params={"reasons": 3})["predictions"]
    assert with_reasons == predict(server, reference_rows, "?reasons=3")
    assert all(len(p["reasons"]) == 3 for p in with_reasons)


def test_the_mlflow_client_sees_the_fix_in_its_error(
    client: ScoringServerClient, frame: pd.DataFrame
) -> None:
    with pytest.raises(Exception, match="error code 422") as caught:
        client.invoke(frame.rename(columns=str.upper))
    assert "BAD_REQUEST" in str(caught.value) and "resembles 'x12'" in str(caught.value)


def test_the_mlflow_client_reads_the_version(client: ScoringServerClient) -> None:
    client.ping()  # type: ignore[no-untyped-call]
    version = json.loads(client.get_version())  # type: ignore[no-untyped-call]
    assert version["model_version"] == "v1" and version["service"] == "propensity-service"


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c: [r.get(c) for r in rows] for c in rows[0]}


def test_every_body_form_gets_the_bits_of_predict(
    server: Server, frame: pd.DataFrame, reference_rows: list[dict[str, Any]]
) -> None:
    expected = predict(server, reference_rows)
    forms = {
        "split": {"dataframe_split": frame.to_dict(orient="split")},
        "split without index": {"dataframe_split": frame.to_dict(orient="split", index=False)},
        "records": {"dataframe_records": reference_rows},
        "instances records": {"instances": reference_rows},
        "instances columns": {"instances": _columns(reference_rows)},
        "inputs records": {"inputs": reference_rows},
        "inputs columns": {"inputs": _columns(reference_rows)},
    }
    for name, body in forms.items():
        r = invocations(server, body)
        assert r.status_code == 200 and r.headers["x-model-version"] == "v1", (name, r.text)
        assert r.json() == {"predictions": expected}, name
    one = invocations(server, {"inputs": reference_rows[1]})
    assert one.json() == {"predictions": expected[1:2]}


def test_gzip_bodies_ids_and_refusals(
    server: Server, frame: pd.DataFrame, reference_rows: list[dict[str, Any]]
) -> None:
    expected = predict(server, reference_rows)
    body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
    zipped = invocations(server, gzip.compress(body), **{"content-encoding": "gzip"})
    assert zipped.json() == {"predictions": expected}
    ids = frame.assign(customer_id=[f"c-{i}" for i in range(len(frame))])
    echoed = invocations(server, {"dataframe_split": ids.to_dict(orient="split")}).json()["predictions"]
    assert [p.pop("customer_id") for p in echoed] == [f"c-{i}" for i in range(len(frame))]
    assert echoed == expected
    bare = invocations(server, frame.to_json(orient="split").encode())
    assert bare.status_code == 422 and bare.json()["error_code"] == "BAD_REQUEST"
    assert '{"dataframe_split": <it>}' in bare.json()["message"]
    columns_only = invocations(server, {"inputs": frame.values.tolist()})
    assert columns_only.status_code == 422 and "carry no column names" in columns_only.json()["message"]


def test_a_csv_file_gets_the_bits_of_predict(
    server: Server, frame: pd.DataFrame, reference_rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    r = invocations(server, path.read_bytes(), **{"content-type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"predictions": predict(server, reference_rows)}


def test_the_server_is_still_whole(server: Server) -> None:
    assert server.process.poll() is None and len(server.worker_pids()) == 2
    assert Path(server.log).exists() and "Traceback" not in server.log.read_text()
