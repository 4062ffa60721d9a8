"""Partitioned inference through a running mesh (real processes, loopback only).

Every zoo CNN at every offered cut: the edge runner runs ``[input, cut)``, its boundary tensor
really crosses to the cloud runner (another process), which runs ``[cut, outputs)``; the result
equals the whole network's within 1e-4 (FP32) and the bytes each reports are the tensor's size.
Then the decider: cut points in ``GET /models/{name}``, plans pinned by a client and chosen by
NeuroSurgeon and MOSAIC, the phone's energy as the sum of the parts, the 422s naming the field,
and a runner that stops between the two parts of a plan (the documented fallback, never a hang).
"""

from __future__ import annotations

import base64
import math
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from services.cli.launcher import Mesh
from services.common.tensors import encode
from services.common.zoo import ZOO_NAMES, input_specs
from tests.conftest import mesh_settings

CNNS = [n for n in ZOO_NAMES if n != "mobilebert"]
EDGE = {"runner": "edge", "processor": "cpu", "precision": "fp32", "dvfs": 22}  # Mi8Pro's top CPU step
CLOUD = {"runner": "cloud", "processor": "cpu", "precision": "fp32"}
TOL = 1e-4


@pytest.fixture(scope="module")
def pmesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    settings = mesh_settings(
        tmp_path_factory.mktemp("partition"),
        zoo=[*CNNS, "mobilebert"],
        preload_models=["mobilenet_v1"],
        eject_base_s=3.0,  # the fault test's hung runner must not stay out for the default 30 s
        partition_actions=1,  # AutoScale with split actions (only policy "autoscale" sees them)
    )
    m = Mesh(settings).start(timeout_s=600)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=300.0, trust_env=False) as c:
        yield c


def tensor(out: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(out["data_b64"]), dtype=out["dtype"]).reshape(out["shape"])


def payload(out: dict[str, Any]) -> dict[str, Any]:
    return {"dtype": out["dtype"], "shape": out["shape"], "data_b64": out["data_b64"]}


def sample(name: str, seed: int = 5) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return {
        s.name: encode(rng.standard_normal([int(d) for d in s.shape]).astype(np.float32)).model_dump()
        for s in input_specs(name)
    }


def post(client: httpx.Client, url: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = client.post(url, json=body)
    assert r.status_code == status, r.text[:800]
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", CNNS)
def test_every_cut_composes_to_the_whole_network(pmesh: Mesh, client: httpx.Client, name: str) -> None:
    info = client.get(f"{pmesh.url('decider')}/models/{name}").json()
    cuts = info["cut_points"]
    assert cuts, f"{name} offers no cut point"
    inputs = sample(name)
    run = {"model": name, "inputs": inputs}
    whole = post(client, f"{pmesh.url('cloud')}/run", {**run, "target": CLOUD})
    for cut in cuts:
        head = post(client, f"{pmesh.url('edge')}/run", {**run, "target": EDGE, "partition": {"end": cut["name"]}})
        names = [t["name"] for t in cut["tensors"]]
        assert [o["name"] for o in head["outputs"]] == names
        sizes = [math.prod(o["shape"]) * np.dtype(o["dtype"]).itemsize for o in head["outputs"]]
        assert [o["shape"] for o in head["outputs"]] == [t["shape"] for t in cut["tensors"]]
        assert head["output_bytes"] == sum(sizes) == cut["bytes"]  # the boundary's real size
        boundary = {o["name"]: payload(o) for o in head["outputs"]}
        tail = post(
            client,
            f"{pmesh.url('cloud')}/run",
            {"model": name, "target": CLOUD, "partition": {"start": cut["name"]}, "inputs": boundary},
        )
        assert tail["input_bytes"] == cut["bytes"]
        assert [o["name"] for o in tail["outputs"]] == [o["name"] for o in whole["outputs"]]
        for got, ref in zip(tail["outputs"], whole["outputs"], strict=True):
            diff = float(np.abs(tensor(got) - tensor(ref)).max())
            assert diff <= TOL, f"{name} cut at {cut['name']}: {got['name']} differs by {diff}"
        # each part is priced on its own layers: the two parts' MACs are the network's
        assert head["inference_s"] > 0 and tail["inference_s"] > 0


def test_cut_points_are_listed_per_model(pmesh: Mesh, client: httpx.Client) -> None:
    info = client.get(f"{pmesh.url('decider')}/models/mobilenet_v1").json()
    total = info["features"]
    for cut in info["cut_points"]:
        assert {"name", "tensors", "bytes", "before", "after"} <= set(cut)
        t = cut["tensors"][0]
        assert t["bytes"] == math.prod(t["shape"]) * 4 and t["dtype"] == "float32"
        for k in ("conv", "fc", "rc", "macs"):
            assert cut["before"][k] + cut["after"][k] == total[k]
    assert client.get(f"{pmesh.url('decider')}/models/mobilebert").json()["cut_points"] == []


def test_bad_partitions_are_422s_naming_the_field(pmesh: Mesh, client: httpx.Client) -> None:
    url = f"{pmesh.url('cloud')}/run"
    cut = client.get(f"{pmesh.url('decider')}/models/mobilenet_v1").json()["cut_points"][2]
    t = cut["tensors"][0]
    good = encode(np.zeros(t["shape"], np.float32)).model_dump()
    base = {"model": "mobilenet_v1", "target": CLOUD}
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {**base, "partition": {"start": "no_such_cut"}, "inputs": {t["name"]: good}},
            "partition.start",
            "invalid_partition",
        ),
        ({**base, "partition": {"end": "no_such_cut"}, "synthetic": True}, "partition.end", "invalid_partition"),
        (
            {**base, "partition": {"start": cut["name"], "end": cut["name"]}, "synthetic": True},
            "partition.end",
            "invalid_partition",
        ),
        (
            {**base, "partition": {"start": cut["name"]}, "inputs": {t["name"]: {**good, "shape": [1, 7, 7, 7]}}},
            f"inputs.{t['name']}.shape",
            "invalid_shape",
        ),
        (
            {**base, "partition": {"start": cut["name"]}, "inputs": {t["name"]: {**good, "dtype": "int32"}}},
            f"inputs.{t['name']}.dtype",
            "invalid_dtype",
        ),
        (
            {**base, "partition": {"start": cut["name"]}, "inputs": {"input": good}},
            f"inputs.{t['name']}",
            "missing_input",
        ),
        (
            {"model": "mobilebert", "target": CLOUD, "partition": {"end": "anything"}, "synthetic": True},
            "partition.end",
            "invalid_partition",
        ),
    ]
    for body, field, code in cases:
        err = post(client, url, body, 422)["error"]
        assert (err["field"], err["code"]) == (field, code), err
    assert "no cut points" in post(client, url, cases[-1][0], 422)["error"]["message"]


def _infer(pmesh: Mesh, client: httpx.Client, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    return post(client, f"{pmesh.url('decider')}/infer", {"model": "mobilenet_v1", **body}, status)


def test_a_pinned_plan_through_the_decider_equals_the_whole_network(pmesh: Mesh, client: httpx.Client) -> None:
    cuts = [c["name"] for c in client.get(f"{pmesh.url('decider')}/models/mobilenet_v1").json()["cut_points"]]
    x = sample("mobilenet_v1", seed=9)
    whole = _infer(pmesh, client, {"inputs": x, "policy": "edge-cpu-fp32"})
    plan = [{"target": "edge/cpu/fp32@22", "end": cuts[1]}, {"target": "edge/gpu/fp32@6", "end": cuts[3]}]
    plan.append({"target": "cloud/gpu/fp32", "end": None})
    r = _infer(pmesh, client, {"inputs": x, "plan": plan})
    assert (
        r["policy"] == "plan"
        and r["target_id"] == f"edge/cpu/fp32@22|{cuts[1]}|edge/gpu/fp32@6|{cuts[3]}|cloud/gpu/fp32"
    )
    assert float(np.abs(tensor(r["outputs"][0]) - tensor(whole["outputs"][0])).max()) <= TOL
    parts = r["plan"]["parts"]
    assert [p["target_id"] for p in parts] == ["edge/cpu/fp32@22", "edge/gpu/fp32@6", "cloud/gpu/fp32"]
    assert [p["end"] for p in parts] == [cuts[1], cuts[3], None] and r["plan"]["fallback"] is None
    assert parts[0]["output_bytes"] == parts[1]["input_bytes"] and parts[1]["output_bytes"] == parts[2]["input_bytes"]
    assert parts[1]["copy_ms"] > 0 and parts[2]["copy_ms"] == 0  # CPU -> GPU in memory; the phone's radio to the cloud
    assert parts[0]["tx_ms"] == 0 and parts[2]["tx_ms"] > 0 and parts[2]["rx_ms"] > 0
    # the phone's energy and the latency are the parts' sums (copies and transfers included)
    assert r["energy_mj"] == pytest.approx(sum(p["energy_mj"] for p in parts), rel=1e-9)
    lat = sum(p["inference_ms"] + p["tx_ms"] + p["rx_ms"] + p["copy_ms"] for p in parts)
    assert r["target_latency_ms"] == pytest.approx(lat, rel=1e-9)
    assert r["device"] == "mi8pro>cloud_p100"


def test_pinned_plans_that_do_not_fit_are_422s(pmesh: Mesh, client: httpx.Client) -> None:
    cut = client.get(f"{pmesh.url('decider')}/models/mobilenet_v1").json()["cut_points"][0]["name"]
    cases = [
        ([{"target": "edge/cpu/fp32@22", "end": "nope"}, {"target": "cloud/gpu/fp32"}], "plan.0.end"),
        ([{"target": "edge/npu/fp32", "end": cut}, {"target": "cloud/gpu/fp32"}], "plan.0.target"),
        ([{"target": "edge/cpu/fp32@22", "end": cut}, {"target": "cloud/gpu/fp32", "end": cut}], "plan.1.end"),
        ([{"target": "edge/cpu/fp32@22"}, {"target": "cloud/gpu/fp32"}], "plan.0.end"),
        ([{"target": "edge/cpu/fp32@22"}], "plan"),
    ]
    for plan, field in cases:
        err = _infer(pmesh, client, {"synthetic": True, "plan": plan}, 422)["error"]
        assert err["field"] == field, err
    err = _infer(pmesh, client, {"model": "mobilebert", "synthetic": True, "plan": cases[0][0]}, 422)["error"]
    assert err["field"] == "plan.0.end" and "no cut points" in err["message"]


@pytest.mark.parametrize("policy", ["neurosurgeon", "neurosurgeon-latency", "mosaic"])
def test_partitioning_policies_serve_through_the_mesh(pmesh: Mesh, client: httpx.Client, policy: str) -> None:
    for model in ("mobilenet_v2", "mobilenet_v1"):
        r = _infer(pmesh, client, {"model": model, "synthetic": True, "policy": policy, "output_format": "summary"})
        assert r["policy"] == policy and r["outputs"][0]["finite"]
        if r["plan"] is not None:  # a split: its parts are in the answer and add up
            assert r["target_id"] == r["plan"]["id"] and len(r["plan"]["parts"]) >= 2
            assert r["energy_mj"] == pytest.approx(sum(p["energy_mj"] for p in r["plan"]["parts"]), rel=1e-9)
        else:
            assert "|" not in r["target_id"]


def test_autoscale_with_split_actions_serves_a_split(pmesh: Mesh, client: httpx.Client) -> None:
    """With AUTOSCALE_PARTITION_ACTIONS=1 the learner's action space holds MobileNet v3's split
    actions (one per remote location; with the phone's base power charged, MobileNet v2's split wins
    nowhere on the Mi8Pro's grid); trying every action of a state once (the decider's default
    exploration) serves one."""
    url = pmesh.url("decider")
    body = {"model": "mobilenet_v3", "synthetic": True, "output_format": "summary"}
    served = None
    t_end = time.monotonic() + 240
    for _ in range(300):  # 66 whole-network actions + the two splits, in one or two Table I states
        r = post(client, f"{url}/infer", body)
        if r["plan"] is not None:
            served = r
            break
        assert time.monotonic() < t_end, "no split action served in time"
    assert served is not None, "no split action served"
    assert served["policy"] == "autoscale" and served["target_id"] == served["plan"]["id"]
    parts = served["plan"]["parts"]
    assert parts[0]["target"]["runner"] == "edge" and parts[1]["target"]["runner"] in ("cloud", "peer")
    assert served["energy_mj"] == pytest.approx(sum(p["energy_mj"] for p in parts), rel=1e-9)
    table = client.get(f"{url}/qtable/export").json()
    assert served["target_id"] in table["actions"]  # learned like any action (and exportable)


def test_a_runner_that_stops_between_two_parts_gets_the_fallback_never_a_hang(
    pmesh: Mesh, client: httpx.Client
) -> None:
    """The cloud runner is stopped (SIGSTOP) right before a plan's second part: that part times out
    within its share of the deadline, and the rest of the network runs on the first part's target."""
    cut = client.get(f"{pmesh.url('decider')}/models/mobilenet_v1").json()["cut_points"][2]["name"]
    x = sample("mobilenet_v1", seed=11)
    whole = _infer(pmesh, client, {"inputs": x, "policy": "edge-cpu-fp32"})
    plan = [{"target": "edge/cpu/fp32@22", "end": cut}, {"target": "cloud/gpu/fp32"}]
    _infer(pmesh, client, {"inputs": x, "plan": plan})  # both parts loaded: the timing below is the fault's
    cloud = pmesh.services["cloud"].proc.pid
    os.kill(cloud, signal.SIGSTOP)
    try:
        # A hang is bounded by the client's timeout; a 200 (not the decider's 504 deadline_exceeded)
        # means the fallback finished inside the request's deadline by the decider's own clock.
        r = _infer(pmesh, client, {"inputs": x, "plan": plan, "deadline_ms": 6000})
    finally:
        os.kill(cloud, signal.SIGCONT)
    fb = r["plan"]["fallback"]
    assert fb is not None and "cloud runner failed" in fb and f"from {cut}" in fb
    assert [p["target_id"] for p in r["plan"]["parts"]] == ["edge/cpu/fp32@22", "edge/cpu/fp32@22"]
    assert float(np.abs(tensor(r["outputs"][0]) - tensor(whole["outputs"][0])).max()) <= TOL
    # the cloud runner is back: the same plan runs as planned again (bounded wait for its probe)
    deadline = time.monotonic() + 60
    while True:
        resp = client.post(f"{pmesh.url('decider')}/infer", json={"model": "mobilenet_v1", "inputs": x, "plan": plan})
        if resp.status_code == 200 and resp.json()["plan"]["fallback"] is None:
            break
        assert time.monotonic() < deadline, resp.text[:500]
        time.sleep(0.5)
