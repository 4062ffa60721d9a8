"""The Open Inference Protocol (KServe V2) on the decider, driven by NVIDIA's own client
(``tritonclient[http]``) and, for what a well-behaved client never sends, by raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from services.cli.launcher import Mesh
from tests.test_frontdoor import (
    FP32_CPU,
    NAN_NET,
    decoded,
    ensure_nan_net,
    image,
    settled_stats,
    strict_json,
    tensor,
)

TIMEOUT = httpx.Timeout(120.0)


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.url("decider"), timeout=TIMEOUT, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def tc(mesh: Mesh) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(mesh.url("decider").removeprefix("http://"), network_timeout=120.0)
    yield c
    c.close()


def token_ids(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, (1, 128)).astype(np.int64)


CASES = {  # model -> (input name, input, outputs)
    "mobilenet_v1": ("input", image(7), ["logits"]),
    "mobilebert": ("input_ids", token_ids(7), ["start_logits", "end_logits"]),
}


def test_health_and_metadata(tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("mobilenet_v1") and tc.is_model_ready("mobilebert", model_version="1")
    assert not tc.is_model_ready("no-such-model")
    server = tc.get_server_metadata()
    assert server["name"] == "autoscale-mesh" and "binary_tensor_data" in server["extensions"]
    meta = tc.get_model_metadata("mobilenet_v1")
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [1, 1000]}]
    bert = tc.get_model_metadata("mobilebert", model_version="1")
    assert bert["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [1, 128]}]
    with pytest.raises(InferenceServerException, match="unknown model"):
        tc.get_model_metadata("no-such-model")
    with pytest.raises(InferenceServerException, match="version"):
        tc.get_model_metadata("mobilenet_v1", model_version="2")


@pytest.mark.parametrize("model", list(CASES))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_the_native_endpoint(
    tc: triton.InferenceServerClient, client: httpx.Client, model: str, binary: bool
) -> None:
    name, x, outputs = CASES[model]
    inp = triton.InferInput(name, list(x.shape), "FP32" if x.dtype == np.float32 else "INT64")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = tc.infer(
        model,
        [inp],
        outputs=[triton.InferRequestedOutput(o, binary_data=binary) for o in outputs],
        parameters={"policy": FP32_CPU, "qos_ms": 80},
        request_id="req-1",
    )
    response = result.get_response()
    assert response["model_name"] == model and response["id"] == "req-1"
    p = response["parameters"]
    assert p["policy"] == FP32_CPU and p["qos_ms"] == 80 and p["target"].startswith("edge/cpu/fp32")
    assert p["energy_mj"] > 0 and p["energy_source"] in ("measured", "modelled")
    assert p["latency_source"] in ("measured", "modelled") and isinstance(p["explored"], bool)
    assert isinstance(p["reward"], float) and p["latency_ms"] > 0
    for out in response["outputs"]:
        assert ("binary_data_size" in (out.get("parameters") or {})) == binary and ("data" in out) != binary
    native = client.post("/infer", json={"model": model, "input": tensor(x), "policy": FP32_CPU}).json()["outputs"]
    for want in native:
        got = result.as_numpy(want["name"])
        assert got is not None and got.dtype == np.float32 and list(got.shape) == want["shape"]
        assert np.array_equal(got, decoded(want)), want["name"]


def test_json_infer_over_plain_http(client: httpx.Client) -> None:
    """What a curl user sends: JSON data, nested lists, no binary extension."""
    x = (np.arange(4, dtype=np.float32).reshape(1, 4) + 1) / 4  # log(x) finite: every output as JSON data
    ensure_nan_net(client)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}]}
    resp = client.post(f"/v2/models/{NAN_NET}/infer", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json" and "inference-header-content-length" not in resp.headers
    out = {o["name"]: o for o in strict_json(resp.text)["outputs"]}
    assert out["z"]["data"] == pytest.approx((x + 1).ravel().tolist()) and out["z"]["datatype"] == "FP32"


def test_non_finite_output_travels_as_bytes_even_in_json_mode(
    tc: triton.InferenceServerClient, client: httpx.Client
) -> None:
    ensure_nan_net(client)
    x = np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32)
    inp = triton.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    outs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("y", "z")]
    result = tc.infer(NAN_NET, [inp], outputs=outs)
    y, z = result.as_numpy("y"), result.as_numpy("z")
    assert y is not None and np.isnan(y[0, 0]) and y[0, 1] == -np.inf and y[0, 2] == 0
    assert z is not None and np.array_equal(z, x + 1)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "binary_data_size" in by_name["y"]["parameters"] and by_name["z"]["data"] == [0.0, 1.0, 2.0, 3.0]


# ---------------------------------------------------------------------------------------- bad input

IMAGE = image(8)
RAW = IMAGE.tobytes()


def _header(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def _binary(header: bytes, data: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    n = len(header) if length is None else length
    return header + data, {"Inference-Header-Content-Length": str(n), "Content-Type": "application/octet-stream"}


_IN = {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "parameters": {"binary_data_size": len(RAW)}}
_NAN = IMAGE.copy()
_NAN[0, 0, 0, 5] = np.nan

BAD: dict[str, tuple[tuple[bytes, dict[str, str]], int, str]] = {
    "wrong datatype": (_binary(_header([{**_IN, "datatype": "INT32"}]), RAW), 422, "dtype int32"),
    "unknown datatype": (_binary(_header([{**_IN, "datatype": "FP8"}]), RAW), 422, "datatype 'FP8'"),
    "shape mismatch": (
        _binary(_header([{**_IN, "shape": [1, 3, 448, 112]}]), RAW),
        422,
        "does not match the model input",
    ),
    "size mismatch": (
        _binary(_header([{**_IN, "shape": [1, 3, 224, 112], "parameters": {"binary_data_size": len(RAW) // 2}}]), RAW),
        400,
        "after the inputs' binary data",
    ),
    "binary size not the shape's": (
        _binary(_header([{**_IN, "parameters": {"binary_data_size": len(RAW) // 2}}]), RAW[: len(RAW) // 2]),
        422,
        "takes 602112",
    ),
    "missing input": (_binary(_header([{**_IN, "name": "image"}]), RAW), 422, "input"),
    "unknown output name": (
        _binary(_header([_IN], outputs=[{"name": "probs"}]), RAW),
        422,
        "no output named 'probs'",
    ),
    "truncated binary body": (_binary(_header([_IN]), RAW[:-100]), 400, "runs past the end of the body"),
    "header length larger than the body": (
        _binary(_header([_IN]), RAW, length=len(_header([_IN])) + len(RAW) + 1),
        400,
        "larger",
    ),
    "header length not a number": (
        (_header([_IN]) + RAW, {"Inference-Header-Content-Length": "lots"}),
        400,
        "byte count",
    ),
    "invalid JSON": ((b'{"inputs": [', {}), 400, "JSON"),
    "no inputs": ((b'{"inputs": []}', {}), 400, "inputs"),
    "NaN in binary data": (_binary(_header([_IN]), _NAN.tobytes()), 422, "non-finite"),
    "NaN in JSON data": (
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, NaN, 2, 3]}]}', {}),
        422,
        "non-finite",
    ),
    "non-integer JSON data": (
        (json.dumps({"inputs": [{**_IN, "datatype": "INT64", "parameters": {}, "data": [0.5]}]}).encode(), {}),
        422,
        "elements",
    ),
    "unknown parameter": (_binary(_header([_IN], parameters={"qos": 3}), RAW), 422, "parameters.qos"),
    "qos_ms out of range": (_binary(_header([_IN], parameters={"qos_ms": -1}), RAW), 422, "parameters.qos_ms"),
    "policy unknown": (_binary(_header([_IN], parameters={"policy": "magic"}), RAW), 422, "parameters.policy"),
    "compressed body": ((_header([_IN]), {"Content-Encoding": "gzip"}), 415, "Content-Encoding"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_protocol_errors_and_nothing_is_learned(client: httpx.Client, case: str) -> None:
    (body, headers), status, message = BAD[case]
    model = NAN_NET if b'"name": "x"' in body else "mobilenet_v1"
    if model == NAN_NET:
        ensure_nan_net(client)
    before = settled_stats(client)
    resp = client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    err = strict_json(resp.text)
    assert set(err) == {"error"} and isinstance(err["error"], str) and message in err["error"], err
    assert settled_stats(client) == before, "a rejected request must not reach the Q-table"


def test_unknown_model_and_version(client: httpx.Client) -> None:
    body, headers = _binary(_header([_IN]), RAW)
    resp = client.post("/v2/models/resnet/infer", content=body, headers=headers)
    assert resp.status_code == 404 and "unknown model 'resnet'" in resp.json()["error"]
    resp = client.post("/v2/models/mobilenet_v1/versions/3/infer", content=body, headers=headers)
    assert resp.status_code == 404 and "version" in resp.json()["error"]
    body, headers = _binary(_header([_IN], parameters={"binary_data_output": True}), RAW)
    ok = client.post("/v2/models/mobilenet_v1/versions/1/infer", content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.headers["content-type"] == "application/octet-stream"
    n = int(ok.headers["inference-header-content-length"])
    head = json.loads(ok.content[:n])
    assert head["model_version"] == "1" and head["outputs"][0]["parameters"]["binary_data_size"] == 4000
    assert len(ok.content) == n + 4000


def test_tritonclient_sees_the_error_message(tc: triton.InferenceServerClient) -> None:
    inp = triton.InferInput("input", [1, 3, 224, 224], "FP32")
    inp.set_data_from_numpy(_NAN)
    with pytest.raises(InferenceServerException, match="non-finite") as info:
        tc.infer("mobilenet_v1", [inp])
    assert info.value.status() == "422"
