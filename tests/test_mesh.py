"""End to end through the real mesh: decider, three runners, telemetry, embedded Redis."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from services.cli.launcher import Mesh
from services.core.schemas import POLICY_NAMES, InferResponse, OutputSummary
from services.decider.qstore import Keys
from services.decider.qstore.codec import decode_table, queue_table_read
from tests.conftest import MESH_MODELS

TIMEOUT = httpx.Timeout(120.0)


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.url("decider"), timeout=TIMEOUT, trust_env=False) as c:
        yield c


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()


def _check_response(body: dict[str, object], model: str) -> InferResponse:
    r = InferResponse.model_validate(body)
    assert r.model == model
    assert len(r.request_id) == 32
    assert r.target_id == r.target.id
    assert r.target.runner.value in ("edge", "peer", "cloud")
    assert r.latency_ms > 0 and r.inference_ms > 0 and r.host_exec_ms > 0
    assert r.transfer_ms >= 0
    if r.target.runner.value == "edge":
        assert r.transfer_ms == 0
    else:
        assert r.transfer_ms > 0
    assert r.energy_mj > 0 and r.energy_source in ("measured", "modelled")
    assert 0 < r.accuracy <= 100 and r.accuracy_source == "published"
    assert r.qos_ms == 50.0
    assert r.qos_met == (r.target_latency_ms < r.qos_ms)
    assert r.target_latency_ms == pytest.approx(r.inference_ms + r.transfer_ms, rel=1e-6)
    assert isinstance(r.reward, float)
    assert np.isfinite(r.reward)
    assert 0 <= r.state.index < 3072
    assert set(r.state.bins) == {"conv", "fc", "rc", "mac", "co_cpu", "co_mem", "rssi_w", "rssi_p"}
    assert set(r.state.raw) >= {"macs", "co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"}
    assert r.outputs and all(o.shape for o in r.outputs)
    return r


@pytest.mark.parametrize("model", MESH_MODELS)
def test_infer_synthetic_every_field(client: httpx.Client, model: str) -> None:
    resp = client.post("/infer", json={"model": model, "synthetic": True})
    assert resp.status_code == 200, resp.text
    _check_response(resp.json(), model)


def test_infer_with_real_tensor_gives_classifier_topk(client: httpx.Client) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    resp = client.post(
        "/infer",
        json={
            "model": "mobilenet_v1",
            "input": {"dtype": "float32", "shape": [1, 3, 224, 224], "data_b64": _b64(x)},
            "top_k": 3,
            "output_format": "summary",
        },
    )
    assert resp.status_code == 200, resp.text
    r = _check_response(resp.json(), "mobilenet_v1")
    summary = r.outputs[0]
    assert isinstance(summary, OutputSummary) and summary.finite
    top = summary.top_k
    assert top is not None and len(top) == 3
    assert top[0][1] >= top[1][1] >= top[2][1]


def test_streaming_uses_30fps_qos(client: httpx.Client) -> None:
    body = client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True, "streaming": True}).json()
    assert body["qos_ms"] == pytest.approx(1000 / 30)
    body = client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True, "qos_ms": 80}).json()
    assert body["qos_ms"] == 80


def test_every_policy_answers(client: httpx.Client) -> None:
    for policy in POLICY_NAMES:
        resp = client.post("/infer", json={"model": "mobilenet_v2", "synthetic": True, "policy": policy})
        assert resp.status_code == 200, (policy, resp.text)
        assert resp.json()["policy"] == policy


def _tables(red: redis.Redis) -> dict[str, dict[int, tuple[dict[str, float], dict[str, int]]]]:
    """Every device's packed table in this Redis, decoded as the admin export reads it."""
    out = {}
    for key in red.scan_iter(match="autoscale:*:cap", count=1000):
        device = key.decode().partition("{")[2].partition("}")[0]
        pipe = red.pipeline(transaction=True)
        n = queue_table_read(pipe, Keys(device))  # type: ignore[arg-type]  # the sync pipeline has the same calls
        out[device], _ = decode_table(pipe.execute()[:n])
    return out


def test_q_table_entries_appear_in_redis(client: httpx.Client, mesh: Mesh) -> None:
    r = client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True}).json()
    red = redis.Redis.from_url(mesh.redis_url)
    deadline = time.monotonic() + 10
    found = False
    while not found and time.monotonic() < deadline:
        tables = _tables(red)
        found = any(r["target_id"] in t.get(r["state"]["index"], ({}, {}))[0] for t in tables.values())
        if not found:
            time.sleep(0.1)
    red.close()
    assert found, f"no Q-table entry for state {r['state']['index']} / {r['target_id']} appeared in Redis"


def test_catalog_and_health(client: httpx.Client, mesh: Mesh) -> None:
    models = client.get("/models").json()["models"]
    names = [m["name"] for m in models]
    assert set(MESH_MODELS) <= set(names)
    one = client.get("/models/mobilenet_v1").json()
    assert one["features"]["conv"] == 14 and one["features"]["fc"] == 1
    assert "fp32" in one["precisions"]
    targets = client.get("/targets").json()
    assert {t["target"]["runner"] for t in targets["targets"]} == {"edge", "peer", "cloud"}
    assert all(v["healthy"] for v in targets["runners"].values())
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert "autoscale_decider_requests_total" in metrics
    for role in ("edge", "peer", "cloud"):
        base = mesh.url(role)
        assert httpx.get(f"{base}/healthz", trust_env=False).status_code == 200
        assert httpx.get(f"{base}/readyz", trust_env=False).status_code == 200
        offered = httpx.get(f"{base}/targets", trust_env=False).json()
        assert offered and all({"target", "id", "device"} <= set(t) for t in offered)
        assert "autoscale_runner" in httpx.get(f"{base}/metrics", trust_env=False).text
    state = httpx.get(f"{mesh.url('telemetry')}/state", trust_env=False).json()
    assert {"co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm"} <= set(state["conditions"])
    assert all(r["source"] in ("measured", "emulated") for r in state["readings"].values())


def test_every_service_freezes_its_startup_heap(mesh: Mesh) -> None:
    """What start-up built (imports, schemas, catalogs: tens of thousands of objects) is out of the
    cyclic collector's full passes, which otherwise walked it all about once a second under load."""
    for role in ("decider", "edge", "peer", "cloud", "telemetry"):
        text = httpx.get(f"{mesh.url(role)}/metrics", trust_env=False).text
        frozen = [
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("autoscale_gc_frozen_objects ")
        ]
        assert len(frozen) == 1, role
        assert frozen[0] > 10_000, (role, frozen)


def test_runner_run_directly(mesh: Mesh) -> None:
    body = {
        "model": "mobilenet_v1",
        "synthetic": True,
        "target": {"runner": "edge", "processor": "cpu", "precision": "fp32", "dvfs": None},
    }
    offered = httpx.get(f"{mesh.url('edge')}/targets", trust_env=False).json()
    cpu = next(t for t in offered if t["target"]["processor"] == "cpu" and t["target"]["precision"] == "fp32")
    body["target"] = cpu["target"]
    resp = httpx.post(f"{mesh.url('edge')}/run", json=body, timeout=TIMEOUT, trust_env=False)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["latency_source"] == "modelled" and out["energy_source"] == "modelled"
    assert out["tx_s"] == 0 and out["host_exec_s"] > 0


def _cpu_target(mesh: Mesh) -> dict[str, object]:
    offered = httpx.get(f"{mesh.url('edge')}/targets", trust_env=False).json()
    return next(
        t["target"] for t in offered if t["target"]["processor"] == "cpu" and t["target"]["precision"] == "fp32"
    )


def _count(metrics_text: str, name: str, target: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and f'target="{target}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_runner_run_records_metrics_and_is_documented(mesh: Mesh) -> None:
    """/run's fast route still records duration and energy (after the response) and the
    OpenAPI schema still documents it with its request and response models."""
    base = mesh.url("edge")
    target = _cpu_target(mesh)
    tid = httpx.get(f"{base}/targets", trust_env=False).json()
    tid = next(t["id"] for t in tid if t["target"] == target)
    before = httpx.get(f"{base}/metrics", trust_env=False).text
    for _ in range(3):
        r = httpx.post(
            f"{base}/run",
            json={"model": "mobilenet_v1", "synthetic": True, "target": target},
            timeout=TIMEOUT,
            trust_env=False,
        )
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while True:  # the record runs as a background task once each response is out
        after = httpx.get(f"{base}/metrics", trust_env=False).text
        done = _count(after, "autoscale_runner_execution_seconds_count", tid) - _count(
            before, "autoscale_runner_execution_seconds_count", tid
        )
        if done >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done >= 3
    assert _count(after, "autoscale_runner_energy_joules_total", tid) > _count(
        before, "autoscale_runner_energy_joules_total", tid
    )
    spec = httpx.get(f"{base}/openapi.json", trust_env=False).json()
    post = spec["paths"]["/run"]["post"]
    assert "RunRequest" in json.dumps(post["requestBody"]) and "RunResult" in json.dumps(post["responses"]["200"])


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"model": "mobilenet_v1", ', 422, "body"),
        (b'{"model": "mobilenet_v1", "synthetic": true}', 422, "target"),
        (
            b'{"model": "mobilenet_v1", "synthetic": true, "target": {"runner": "edge", "processor": "npu", '
            b'"precision": "fp32"}}',
            422,
            "target.processor",
        ),
        (
            b'{"model": "mobilenet_v1", "synthetic": true, "target": {"runner": "edge", "processor": "cpu", '
            b'"precision": "fp32", "dvfs": 999}}',
            404,
            "target",
        ),
        (b'{"model": "nope", "synthetic": true, "target": TARGET}', 404, "model"),
        (b'{"model": "mobilenet_v1", "target": TARGET}', 422, "inputs"),
        (
            b'{"model": "mobilenet_v1", "target": TARGET, '
            b'"inputs": {"input": {"dtype": "float32", "shape": [1, 3, 9, 9], "data_b64": "AAAA"}}}',
            422,
            "input",
        ),
    ],
)
def test_runner_run_bad_input(mesh: Mesh, body: bytes, status: int, field: str) -> None:
    """The runner's /run answers bad input with the mesh's JSON error naming the field."""
    body = body.replace(b"TARGET", json.dumps(_cpu_target(mesh)).encode())
    resp = httpx.post(
        f"{mesh.url('edge')}/run",
        content=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
        trust_env=False,
    )
    _assert_error(resp, status, field)


# ---------------------------------------------------------------------------------------- bad input


def _assert_error(resp: httpx.Response, status: int, field_part: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] and err["message"]
    if field_part is not None:
        assert field_part in (err.get("field") or "") or field_part in err["message"], err
    return err


def test_unknown_model_404_lists_known(client: httpx.Client) -> None:
    err = _assert_error(client.post("/infer", json={"model": "nope", "synthetic": True}), 404, "model")
    assert "nope" in err["message"] and "mobilenet_v1" in err["message"]


def test_malformed_json_422(client: httpx.Client) -> None:
    resp = client.post("/infer", content=b'{"model": "mobilenet_v1", ', headers={"content-type": "application/json"})
    _assert_error(resp, 422)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"model": "mobilenet_v1", "synthetic": True, "qos_ms": 0}, "qos_ms"),
        ({"model": "mobilenet_v1", "synthetic": True, "qos_ms": -5}, "qos_ms"),
        ({"model": "mobilenet_v1", "synthetic": True, "accuracy_min": 101}, "accuracy_min"),
        ({"model": "mobilenet_v1", "synthetic": True, "accuracy_min": -1}, "accuracy_min"),
        ({"model": "mobilenet_v1", "synthetic": True, "policy": "magic"}, "policy"),
        ({"model": "mobilenet_v1"}, "input"),
        ({"model": "mobilenet_v1", "input": {"dtype": "float64", "shape": [1], "data_b64": ""}}, "input.dtype"),
        (
            {"model": "mobilenet_v1", "input": {"dtype": "int64", "shape": [1, 3, 224, 224], "data_b64": ""}},
            "input.dtype",
        ),
        (
            {"model": "mobilenet_v1", "input": {"dtype": "float32", "shape": [1, 3, 100, 100], "data_b64": ""}},
            "input.shape",
        ),
        (
            {"model": "mobilenet_v1", "input": {"dtype": "float32", "shape": [1, 3, 224, 224], "data_b64": "AAAA"}},
            "input.data_b64",
        ),
        (
            {"model": "mobilenet_v1", "input": {"dtype": "float32", "shape": [1, 3, 224, 224], "data_b64": "!!"}},
            "input.data_b64",
        ),
        ({"model": "mobilenet_v1", "synthetic": True, "surprise": 1}, "surprise"),
    ],
)
def test_bad_input_422_names_field(client: httpx.Client, payload: dict[str, object], field: str) -> None:
    err = _assert_error(client.post("/infer", json=payload), 422, field)
    if field == "policy":
        assert "autoscale" in err["message"]
    if field == "input.shape":
        assert "224" in err["message"]


def test_unreachable_accuracy_is_422(client: httpx.Client) -> None:
    _assert_error(
        client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True, "accuracy_min": 99.9}),
        422,
        "accuracy_min",
    )


def test_no_500_on_garbage(client: httpx.Client) -> None:
    for body in (b"null", b"[]", b'"x"', b"{}", b'{"model": 5}', b'{"model": "mobilenet_v1", "input": 3}'):
        resp = client.post("/infer", content=body, headers={"content-type": "application/json"})
        assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)


def test_admin_q_table_through_the_mesh(client: httpx.Client) -> None:
    for _ in range(3):
        assert client.post("/infer", json={"model": "mobilenet_v1", "synthetic": True}).status_code == 200
    deadline = time.monotonic() + 10
    states: dict[str, object] = {}
    while not states and time.monotonic() < deadline:
        states = client.get("/policy").json()["states"]
        time.sleep(0.1)
    assert states, "visited states must show in GET /policy"
    # Updates are applied after the responses: wait until the table in Redis is settled.
    exported, previous = client.get("/qtable/export").json(), None
    while exported != previous and time.monotonic() < deadline:
        time.sleep(0.3)
        previous, exported = exported, client.get("/qtable/export").json()
    assert exported["states"]
    broken = dict(exported, states={"not-a-state": {}})
    resp = client.post("/qtable/import", json=broken)
    assert resp.status_code == 422 and resp.json()["error"]["field"].startswith("states")
    assert client.get("/qtable/export").json()["states"] == exported["states"]
    stats = client.get("/qtable/stats").json()
    assert stats["paper_memory_bytes"] == 400_000
