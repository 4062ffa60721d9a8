"""The decider's front door through the real mesh: output tensors, output selection, the summary
format, finite numbers everywhere, non-finite outputs carried as they are, bad input refused with
nothing learned, and the fast path documented and timed."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from services.cli.launcher import Mesh

TIMEOUT = httpx.Timeout(120.0)
FP32_CPU = "edge-cpu-fp32"  # a fixed policy: the same target every time, so outputs can be compared
NAN_NET = "nan-net"


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.url("decider"), timeout=TIMEOUT, trust_env=False) as c:
        yield c


def b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()


def tensor(arr: np.ndarray) -> dict[str, object]:
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data_b64": b64(arr)}


def decoded(out: dict[str, Any]) -> np.ndarray:
    """An output tensor of a response as numpy, from its raw little-endian bytes."""
    return np.frombuffer(base64.b64decode(out["data_b64"]), dtype=np.dtype(out["dtype"]).newbyteorder("<")).reshape(
        out["shape"]
    )


def strict_json(text: str) -> Any:
    """Parse as standard JSON: NaN and Infinity are not numbers there."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON number {token} in {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)


def nan_net() -> bytes:
    """x [1, 4] -> y = log(x) (NaN for x < 0, -inf at 0) and z = x + 1."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"]), helper.make_node("Add", ["x", "one"], ["z"])],
        "nan_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4]),
        ],
        [one],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def ensure_nan_net(client: httpx.Client) -> None:
    """Upload ``nan-net`` once per mesh and wait until the decider sees targets for it."""
    resp = client.post("/models", params={"name": NAN_NET, "accuracy": 50}, content=nan_net())
    assert resp.status_code in (201, 409), resp.text
    body = {"model": NAN_NET, "input": tensor(np.ones((1, 4), np.float32)), "policy": FP32_CPU}
    deadline = time.monotonic() + 30
    while (r := client.post("/infer", json=body)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.25)  # the decider learns of the new model's targets on its next runner refresh
    assert r.status_code == 200, r.text


def settled_stats(client: httpx.Client) -> dict[str, int]:
    """The Q-table's counters once every queued update is applied (bounded wait)."""
    deadline = time.monotonic() + 15
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        s = client.get("/qtable/stats").json()
        now = {k: s[k] for k in ("version", "submitted_total", "applied_total", "queue_depth")}
        if now == last and now["queue_depth"] == 0:
            return now
        last = now
        time.sleep(0.2)
    raise AssertionError(f"the Q-table did not settle: {last}")


def run_directly(mesh: Mesh, target: dict[str, object], body: dict[str, object]) -> dict[str, Any]:
    resp = httpx.post(
        f"{mesh.url(str(target['runner']))}/run", json={**body, "target": target}, timeout=TIMEOUT, trust_env=False
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---------------------------------------------------------------------------------------- outputs


def test_infer_returns_the_output_tensors_the_runner_computes(client: httpx.Client, mesh: Mesh) -> None:
    x = image(1)
    resp = client.post("/infer", json={"model": "mobilenet_v1", "input": tensor(x), "policy": FP32_CPU})
    assert resp.status_code == 200, resp.text
    body = strict_json(resp.text)
    [out] = body["outputs"]
    assert set(out) == {"name", "dtype", "shape", "data_b64"}  # the tensor, no summary fields
    assert (out["name"], out["dtype"], out["shape"]) == ("logits", "float32", [1, 1000])
    got = decoded(out)
    ran = run_directly(mesh, body["target"], {"model": "mobilenet_v1", "inputs": {"input": tensor(x)}})
    assert np.array_equal(got, decoded(ran["outputs"][0]))
    assert np.isfinite(got).all() and got.std() > 0
    # ... and the runner's summary of the same run agrees with the tensor.
    summary = run_directly(
        mesh, body["target"], {"model": "mobilenet_v1", "inputs": {"input": tensor(x)}, "output_format": "summary"}
    )["outputs"][0]
    assert summary["checksum"] == pytest.approx(float(got.sum(dtype=np.float64)), rel=1e-5, abs=1e-3)
    assert summary["top_k"][0][0] == int(np.argmax(got))


def test_outputs_are_selected_by_name_in_the_order_asked(client: httpx.Client) -> None:
    ids = np.random.default_rng(2).integers(0, 1000, (1, 128)).astype(np.int64)
    base = {"model": "mobilebert", "input": tensor(ids), "policy": FP32_CPU}
    both = client.post("/infer", json=base).json()["outputs"]
    assert [o["name"] for o in both] == ["start_logits", "end_logits"]
    picked = client.post("/infer", json={**base, "outputs": ["end_logits", "start_logits"]}).json()["outputs"]
    assert [o["name"] for o in picked] == ["end_logits", "start_logits"]
    one = client.post("/infer", json={**base, "outputs": ["end_logits"]}).json()["outputs"]
    assert [o["name"] for o in one] == ["end_logits"]
    assert np.array_equal(decoded(one[0]), decoded(both[1]))


def test_summary_format_is_kept_for_load_tests(client: httpx.Client) -> None:
    resp = client.post(
        "/infer", json={"model": "mobilenet_v1", "synthetic": True, "output_format": "summary", "top_k": 2}
    )
    assert resp.status_code == 200, resp.text
    [out] = resp.json()["outputs"]
    assert "data_b64" not in out
    assert out["finite"] is True and len(out["top_k"]) == 2 and out["shape"] == [1, 1000]


def test_non_finite_outputs_are_carried_as_they_are(client: httpx.Client) -> None:
    ensure_nan_net(client)
    x = np.array([[-1.0, 0.0, 1.0, np.e]], np.float32)
    resp = client.post("/infer", json={"model": NAN_NET, "input": tensor(x), "policy": FP32_CPU})
    assert resp.status_code == 200, resp.text
    y, z = (decoded(o) for o in strict_json(resp.text)["outputs"])
    assert np.isnan(y[0, 0]) and y[0, 1] == -np.inf and y[0, 2] == 0 and y[0, 3] == pytest.approx(1)
    assert np.array_equal(z, x + 1)
    # In the summary format a non-finite output has no moments: reported, and the JSON stays standard.
    resp = client.post(
        "/infer", json={"model": NAN_NET, "input": tensor(x), "policy": FP32_CPU, "output_format": "summary"}
    )
    assert resp.status_code == 200, resp.text
    ys, zs = strict_json(resp.text)["outputs"]
    assert ys["finite"] is False and ys["mean"] is None and ys["std"] is None and ys["checksum"] is None
    assert zs["finite"] is True and zs["checksum"] == pytest.approx(float((x + 1).sum()))


# ---------------------------------------------------------------------------------------- bad input


NAN_IMAGE = image(3)
NAN_IMAGE[0, 1, 2, 3] = np.nan
INF_IMAGE = image(4)
INF_IMAGE[0, 0, 0, 0] = np.inf
GOOD = tensor(image(5))


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        (b'{"model": "mobilenet_v1", "synthetic": true, "qos_ms": 1e309}', 422, "qos_ms", "finite"),
        (b'{"model": "mobilenet_v1", "synthetic": true, "qos_ms": NaN}', 422, "qos_ms", "finite"),
        (b'{"model": "mobilenet_v1", "synthetic": true, "accuracy_min": -Infinity}', 422, "accuracy_min", "finite"),
        ({"model": "mobilenet_v1", "input": tensor(NAN_IMAGE)}, 422, "input.data_b64", "non-finite"),
        ({"model": "mobilenet_v1", "inputs": {"input": tensor(INF_IMAGE)}}, 422, "inputs.input.data_b64", "index 0"),
        ({"model": "mobilenet_v1", "input": GOOD, "outputs": ["probs"]}, 422, "outputs", "logits"),
        ({"model": "mobilenet_v1", "input": GOOD, "outputs": []}, 422, "outputs", "at least 1"),
        ({"model": "mobilenet_v1", "input": GOOD, "outputs": ["logits", "logits"]}, 422, "outputs", "twice"),
        ({"model": "mobilenet_v1", "input": GOOD, "output_format": "raw"}, 422, "output_format", "summary"),
        (
            {"model": "mobilenet_v1", "input": {**GOOD, "data_b64": str(GOOD["data_b64"])[:-8]}},
            422,
            "input.data_b64",
            "base64 characters",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_learned(
    client: httpx.Client, body: dict[str, object] | bytes, status: int, field: str, message: str
) -> None:
    before = settled_stats(client)
    if isinstance(body, bytes):
        resp = client.post("/infer", content=body, headers={"content-type": "application/json"})
    else:
        resp = client.post("/infer", json=body)
    assert resp.status_code == status, resp.text
    err = strict_json(resp.text)["error"]
    assert err["field"] == field and message in err["message"], err
    assert settled_stats(client) == before, "a rejected request must not reach the Q-table"


def test_the_learning_counter_moves_on_a_served_request(client: httpx.Client) -> None:
    """The control for the test above: the same counters do count a served request."""
    before = settled_stats(client)
    assert client.post("/infer", json={"model": "mobilenet_v1", "input": GOOD}).status_code == 200
    after = settled_stats(client)
    assert after["submitted_total"] == before["submitted_total"] + 1
    assert after["version"] == before["version"] + 1  # one update reached Redis


# ---------------------------------------------------------------------------------------- fast path


def _counter(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_fast_path_times_records_and_stays_documented(client: httpx.Client) -> None:
    before = _counter(client.get("/metrics").text, "autoscale_decider_requests_total")
    resp = client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True})
    assert resp.status_code == 200
    timing = dict(part.strip().split(";dur=") for part in resp.headers["server-timing"].split(","))
    assert set(timing) == {"decider", "runner"} and all(float(v) >= 0 for v in timing.values())
    deadline = time.monotonic() + 10
    while _counter(client.get("/metrics").text, "autoscale_decider_requests_total") < before + 1:
        assert time.monotonic() < deadline, "the request's metrics were not recorded after the response"
        time.sleep(0.1)
    spec = client.get("/openapi.json").json()
    infer = spec["paths"]["/infer"]["post"]
    assert "InferRequest" in json.dumps(infer["requestBody"]) and "InferResponse" in json.dumps(infer["responses"])
    v2 = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert "inputs" in json.dumps(v2["requestBody"]) and "InferenceResponse" in json.dumps(v2["responses"])


def test_runner_run_selects_outputs_and_formats(mesh: Mesh, client: httpx.Client) -> None:
    target = client.post("/infer", json={"model": "mobilebert", "synthetic": True, "policy": FP32_CPU}).json()["target"]
    tensors = run_directly(mesh, target, {"model": "mobilebert", "synthetic": True, "outputs": ["end_logits"]})
    assert [o["name"] for o in tensors["outputs"]] == ["end_logits"] and tensors["output_bytes"] == 128 * 4
    summaries = run_directly(mesh, target, {"model": "mobilebert", "synthetic": True, "output_format": "summary"})
    assert [set(o) >= {"mean", "std", "checksum", "finite"} for o in summaries["outputs"]] == [True, True]
    resp = httpx.post(
        f"{mesh.url('edge')}/run",
        json={"model": "mobilebert", "synthetic": True, "target": target, "outputs": ["nope"]},
        timeout=TIMEOUT,
        trust_env=False,
    )
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "outputs"
