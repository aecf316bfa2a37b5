"""The Open Inference Protocol door with the real clients, against a real gunicorn on a free port:

- tritonclient[http] (a dev dependency of the project venv): health, metadata, inference with binary and
  JSON inputs and outputs, the reference rows and 2,000 synthetic rows, and its errors;
- KServe's InferenceRESTClient (kserve 0.21.0 conflicts with the pinned stack: its own venv,
  .venv-tools/kserve-client, pinned by kserve-client.lock): readiness and inference, JSON and binary;
- MLServer's PandasCodec (mlserver 1.7.1 conflicts too: .venv-tools/mlserver, pinned by mlserver.lock):
  a request it builds from a DataFrame with a null in a string column, and its decoding of the answer.

Every phat is compared bit for bit with /predict's for the same rows.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.model.registry import Registry
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from tests.servers import Server, start_server
from tests.tool_venvs import tools_venv

HERE = Path(__file__).parent
ROWS: list[dict[str, Any]] = example_rows()["rows"]
MODEL = "propensity"


# --- the clients that cannot share the project's venv run in their own (tests/tool_venvs.py) ---------
def run_script(python: Path, script: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# --- the server and /predict's answers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(approved_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("v2-clients")
    shutil.copytree(approved_registry.root, root / "artifacts")
    with start_server(root / "artifacts", root, workers=1) as srv:
        yield srv


def predicted(server: Server, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = httpx.post(server.url + "/predict", json=rows, timeout=60)
    assert answer.status_code == 200, answer.text
    records: list[dict[str, Any]] = answer.json()
    return records


def bits(values: Any) -> list[bytes]:
    return [struct.pack("<d", v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def arrays_of(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each column as a client holds it in numpy: float64 when every value is a number (NaN: missing),
    else an object array of strings (a number as its repr, which reads back to the same double) with
    None where missing (tritonclient sends str(None), "None": a spelling of missing)."""
    out: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(k for row in rows for k in row):
        values = [row.get(name) for row in rows]
        if all(_missing(v) or type(v) in (int, float) for v in values):
            out[name] = np.array([math.nan if _missing(v) else v for v in values], dtype=np.float64)
        else:
            texts = [None if _missing(v) else v if isinstance(v, str) else repr(v) for v in values]
            out[name] = np.array(texts, dtype=np.object_)
    return out


def triton_inputs(arrays: dict[str, np.ndarray], binary: bool) -> list[triton.InferInput]:
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), "FP64" if array.dtype == np.float64 else "BYTES")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=60.0)
    yield c
    c.close()


# --- tritonclient ---------------------------------------------------------------------------------------
def test_tritonclient_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert (
        client.is_model_ready(MODEL)
        and client.is_model_ready(MODEL, "v1")
        and client.is_model_ready(MODEL, "1")
    )
    assert not client.is_model_ready(MODEL, "v7") and not client.is_model_ready("other")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["versions"] == ["v1"]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"][:3]] == [
        ("x5", "BYTES"),
        ("x12", "BYTES"),
        ("x31", "BYTES"),
    ]
    assert meta["outputs"][0] == {"name": "phat", "datatype": "FP64", "shape": [-1]}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_inference_has_the_bits_of_predict(
    server: Server, client: triton.InferenceServerClient, binary: bool
) -> None:
    live = predicted(server, ROWS)
    outputs = [
        triton.InferRequestedOutput("phat", binary_data=binary),
        triton.InferRequestedOutput("business_outcome", binary_data=not binary),
        triton.InferRequestedOutput("x91", binary_data=binary),
    ]
    result = client.infer(MODEL, triton_inputs(arrays_of(ROWS), binary), outputs=outputs, request_id="t-1")
    assert bits(result.as_numpy("phat")) == bits([r["phat"] for r in live])
    assert result.as_numpy("business_outcome").tolist() == [r["business_outcome"] for r in live]
    assert result.as_numpy("x91").tolist() == [r["x91"] for r in live]
    response = result.get_response()
    assert response["model_version"] == "v1" and response["id"] == "t-1"
    assert [o["name"] for o in response["outputs"]] == ["phat", "business_outcome", "x91"]


def test_tritonclient_default_outputs_are_all_binary(
    server: Server, client: triton.InferenceServerClient
) -> None:
    result = client.infer(MODEL, triton_inputs(arrays_of(ROWS), binary=False))  # asks binary_data_output
    outputs = result.get_response()["outputs"]
    assert all("binary_data_size" in o["parameters"] for o in outputs) and len(outputs) == 27
    assert result.as_numpy("x5_tuesday").dtype == np.int64
    assert bits(result.as_numpy("phat")) == bits([r["phat"] for r in predicted(server, ROWS)])


def test_tritonclient_two_thousand_synthetic_rows(
    server: Server, client: triton.InferenceServerClient
) -> None:
    frame = make_synthetic_frame(2_000, 41, target=False)
    rows = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
    live = predicted(server, rows)
    arrays = {
        str(c): frame[c].to_numpy(dtype=np.float64 if frame[c].dtype == np.float64 else np.object_)
        for c in frame
    }
    for name, array in arrays.items():
        if array.dtype == np.object_:  # a missing string is NaN in pandas: tritonclient sends str(nan)
            arrays[name] = np.array([None if _missing(v) else v for v in array], dtype=np.object_)
    for binary in (True, False):
        outputs = [triton.InferRequestedOutput("phat", binary_data=binary)]
        result = client.infer(MODEL, triton_inputs(arrays, binary), outputs=outputs)
        assert bits(result.as_numpy("phat")) == bits([r["phat"] for r in live]), binary


def test_tritonclient_pass_through_ids(client: triton.InferenceServerClient) -> None:
    arrays = arrays_of(ROWS) | {
        "customer_id": np.array([f"c{i}" for i in range(len(ROWS))], dtype=np.object_)
    }
    result = client.infer(MODEL, triton_inputs(arrays, binary=True))
    assert result.as_numpy("customer_id").tolist() == [f"c{i}".encode() for i in range(len(ROWS))]


def refused(
    client: triton.InferenceServerClient, inputs: list[triton.InferInput], model: str = MODEL
) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, inputs)
    return caught.value


def one(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


X12 = np.array(["$6,882.34 "], dtype=np.object_)


@pytest.mark.parametrize(
    ("case", "status", "fix"),
    [
        ("fp32", "400", "send it as FP64"),
        ("mismatched shapes", "400", "have 1 and 2 rows"),
        ("no model column", "400", "named by the model's columns: x5, x12"),
        ("category as a number", "400", "x5 is a category: send it as BYTES strings"),
        ("unknown model", "404", "unknown model 'other'; this server serves 'propensity'"),
    ],
)
def test_tritonclient_errors_name_the_fix(
    client: triton.InferenceServerClient, case: str, status: str, fix: str
) -> None:
    x12 = one("x12", X12, "BYTES")
    inputs = {
        "fp32": [x12, one("x44", np.array([0.98441208], dtype=np.float32), "FP32")],
        "mismatched shapes": [x12, one("x44", np.array([0.5, 0.25]), "FP64")],
        "no model column": [one("input0", np.array([0.5]), "FP64")],
        "category as a number": [x12, one("x5", np.array([1.0]), "FP64", binary=False)],
        "unknown model": [x12],
    }[case]
    error = refused(client, inputs, "other" if case == "unknown model" else MODEL)
    assert error.status() == status and fix in error.message(), error.message()


# --- KServe's InferenceRESTClient -----------------------------------------------------------------------
KSERVE_CALLS = """
import asyncio, json, sys
import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

url, columns = sys.argv[1], json.loads(sys.argv[2])


def inputs(binary):
    out = []
    for name, spec in columns.items():
        dtype = np.float64 if spec["datatype"] == "FP64" else np.object_
        tensor = InferInput(name, [len(spec["data"])], spec["datatype"])
        data = [float("nan") if v is None and dtype is np.float64 else v for v in spec["data"]]
        tensor.set_data_from_numpy(np.array(data, dtype=dtype), binary_data=binary)
        out.append(tensor)
    return out


async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    got = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, "propensity"),
        "other_ready": await client.is_model_ready(url, "other"),
    }
    for binary in (False, True):
        params = {"binary_data_output": True} if binary else None
        request = InferRequest("propensity", inputs(binary), request_id="k-1", parameters=params)
        response = await client.infer(url, request, model_name="propensity")
        got[f"binary={binary}"] = {
            "id": response.id,
            "phat": response.get_output_by_name("phat").as_numpy().tolist(),
            "outcome": response.get_output_by_name("business_outcome").as_numpy().tolist(),
        }
    bad = InferInput("x44", [1], "FP32")
    bad.set_data_from_numpy(np.array([0.98441208], dtype=np.float32), binary_data=False)
    try:
        await client.infer(url, InferRequest("propensity", [bad]), model_name="propensity")
    except httpx.HTTPStatusError as exc:
        got["fp32"] = [exc.response.status_code, str(exc)]
    await client.close()
    print(json.dumps(got))


asyncio.run(main())
"""


def column_specs(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for name, array in arrays_of(rows).items():
        numeric = array.dtype == np.float64
        data = [None if numeric and math.isnan(v) else v for v in array.tolist()]
        specs[name] = {"datatype": "FP64" if numeric else "BYTES", "data": data}
    return specs


def test_kserve_client_readiness_and_inference(server: Server) -> None:
    python = tools_venv("kserve-client", HERE / "kserve-client.lock")
    got = run_script(python, KSERVE_CALLS, server.url, json.dumps(column_specs(ROWS)))
    assert (got["live"], got["ready"], got["model_ready"], got["other_ready"]) == (True, True, True, False)
    live = predicted(server, ROWS)
    for form in ("binary=False", "binary=True"):
        assert got[form]["id"] == "k-1"
        assert bits(got[form]["phat"]) == bits([r["phat"] for r in live]), form
        assert got[form]["outcome"] == [r["business_outcome"] for r in live]
    status, message = got["fp32"]
    assert status == 400 and "send it as FP64" in message  # KServe's client shows the protocol's error


# --- MLServer's PandasCodec -----------------------------------------------------------------------------
MLSERVER_CALLS = """
import json, sys, urllib.request
import pandas as pd
import mlserver.codecs.pandas as pandas_codec
from mlserver.codecs import PandasCodec
from mlserver.types import InferenceResponse

url, rows = sys.argv[1], json.loads(sys.argv[2])
frame = pd.DataFrame(rows)
got = {"dtypes": {c: str(t) for c, t in frame.dtypes.items()}}
try:
    PandasCodec.encode_request(frame)
    got["stock"] = "encoded"
except TypeError as exc:  # MLServer 1.7.1: np.isnan on the strings of a column with a null
    got["stock"] = f"TypeError: {exc}"


def convert_nan(value):  # null-safe, as SeldonIO/MLServer#2291 makes it
    return None if value is None or (isinstance(value, float) and value != value) else value


pandas_codec.convert_nan = convert_nan
request = PandasCodec.encode_request(frame)
body = request.model_dump_json().encode()
post = urllib.request.Request(
    url + "/v2/models/propensity/infer", data=body, headers={"Content-Type": "application/json"}
)
with urllib.request.urlopen(post, timeout=60) as answer:
    response = InferenceResponse.model_validate_json(answer.read())
decoded = PandasCodec.decode_response(response)
got["request"] = json.loads(body)
got["phat"] = decoded["phat"].tolist()
got["outcome"] = decoded["business_outcome"].tolist()
print(json.dumps(got))
"""


def test_mlserver_pandas_codec_request_with_a_null_in_a_string_column(server: Server) -> None:
    rows = [*ROWS, {**ROWS[0], "x31": None, "x5": None}]  # nulls in two category (string) columns
    python = tools_venv("mlserver", HERE / "mlserver.lock")
    got = run_script(python, MLSERVER_CALLS, server.url, json.dumps(rows))
    assert got["dtypes"]["x31"] == "object"
    # MLServer 1.7.1 cannot encode it as released (SeldonIO/MLServer#1873); with the null-safe
    # convert_nan of its open fix it sends each element of such a column as a JSON text ("pd_json")
    assert got["stock"].startswith("TypeError: ufunc 'isnan' not supported")
    x31 = next(i for i in got["request"]["inputs"] if i["name"] == "x31")
    assert x31["parameters"] == {"content_type": "pd_json"} and x31["data"][-1] == "null"
    assert x31["data"][0] == '"germany"' and x31["shape"] == [len(rows), 1]
    live = predicted(server, rows)
    assert bits(got["phat"]) == bits([r["phat"] for r in live])
    assert got["outcome"] == [r["business_outcome"] for r in live]
    assert live[-1]["x31_germany"] == 0 and live[-1]["x5_tuesday"] == 0  # the nulls were read as missing


def test_mlserver_request_sent_by_any_http_client(server: Server) -> None:
    """The same request JSON (what PandasCodec builds), posted with httpx: the protocol's answer."""
    python = tools_venv("mlserver", HERE / "mlserver.lock")
    got = run_script(python, MLSERVER_CALLS, server.url, json.dumps(ROWS))
    answer = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=got["request"], timeout=60)
    assert answer.status_code == 200
    phat = next(o for o in answer.json()["outputs"] if o["name"] == "phat")
    assert phat["shape"] == [len(ROWS), 1] and phat["data"] == got["phat"]  # [N, 1] in, [N, 1] out
