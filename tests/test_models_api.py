"""Model upload through the decider: validated, featurised, pushed to the runners, servable."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.cli.launcher import Mesh


def custom_op_model() -> bytes:
    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    return model.SerializeToString()


def tiny_cnn(external: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [w, fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        w_ext = model.graph.initializer[0]
        w_ext.data_location = TensorProto.EXTERNAL
        w_ext.external_data.add(key="location", value="../../etc/passwd")
        w_ext.ClearField("raw_data")
    return model.SerializeToString()


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.url("decider"), timeout=120, trust_env=False) as c:
        yield c


def _names(client: httpx.Client) -> list[str]:
    return [m["name"] for m in client.get("/models").json()["models"]]


def test_upload_then_infer(client: httpx.Client, mesh: Mesh) -> None:
    resp = client.post("/models", params={"name": "tiny-cnn", "accuracy": 61.5}, content=tiny_cnn())
    assert resp.status_code == 201, resp.text
    info = resp.json()
    assert info["features"]["conv"] == 1 and info["features"]["fc"] == 1
    assert info["features"]["macs"] == 4 * 3 * 3 * 3 * 16 * 16 + 4 * 10
    assert info["precisions"]["fp32"]["source"] == "declared"
    assert client.get("/models/tiny-cnn").json()["name"] == "tiny-cnn"
    # Every runner has it and offers it on its FP32 targets.
    for role in ("edge", "peer", "cloud"):
        offered = httpx.get(f"{mesh.url(role)}/targets", trust_env=False).json()
        assert any("tiny-cnn" in (t["models"] or []) for t in offered), role
    x = np.ones((1, 3, 16, 16), np.float32)
    import base64

    body = {
        "model": "tiny-cnn",
        "input": {"dtype": "float32", "shape": [1, 3, 16, 16], "data_b64": base64.b64encode(x.tobytes()).decode()},
    }
    # The decider sees the new model's targets after its next runner refresh.
    r = client.post("/infer", json=body)
    for _ in range(20):
        if r.status_code == 200:
            break
        import time

        time.sleep(0.25)
        r = client.post("/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accuracy"] == 61.5 and out["accuracy_source"] == "declared"
    assert out["target"]["precision"] == "fp32"
    assert out["outputs"][0]["shape"] == [1, 10]


@pytest.mark.parametrize(
    ("params", "data", "status", "field"),
    [
        ({"name": "corrupt", "accuracy": 50}, b"\x08\x07not an onnx file at all", 422, "file"),
        ({"name": "external", "accuracy": 50}, None, 422, "file"),
        ({"name": "noacc"}, b"x", 422, "accuracy"),
        ({"name": "custom-op", "accuracy": 50}, custom_op_model(), 422, "file"),
        ({"name": "Bad Name!", "accuracy": 50}, b"x", 422, "name"),
        ({"name": "mobilenet_v1", "accuracy": 50}, b"x", 409, "name"),
        ({"name": "huge", "accuracy": 50}, b"\0" * (4 * 1024 * 1024 + 10), 413, "file"),
    ],
)
def test_bad_uploads_leave_registry_unchanged(
    client: httpx.Client, params: dict[str, str | int], data: bytes | None, status: int, field: str
) -> None:
    before = _names(client)
    resp = client.post("/models", params=params, content=data if data is not None else tiny_cnn(external=True))
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["field"] == field, err
    assert _names(client) == before


def test_name_clash_with_upload(client: httpx.Client) -> None:
    first = client.post("/models", params={"name": "clash", "accuracy": 50}, content=tiny_cnn())
    assert first.status_code == 201, first.text
    again = client.post("/models", params={"name": "clash", "accuracy": 50}, content=tiny_cnn())
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"


def _labelled_npz(model: bytes, n: int = 24, flip: int = 0) -> bytes:
    """x for tiny_cnn and the labels its FP32 outputs give (so FP32 scores 100 %), ``flip`` of them wrong."""
    import io

    import onnxruntime as ort

    x = np.random.default_rng(5).standard_normal((n, 1, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    y = np.array([int(sess.run(None, {"x": xi})[0].argmax()) for xi in x])
    y[:flip] = (y[:flip] + 1) % 10
    buf = io.BytesIO()
    np.savez(buf, x=x.reshape(n, 3, 16, 16), y=y)
    return buf.getvalue()


def test_measure_accuracy_on_a_labelled_set(client: httpx.Client, mesh: Mesh) -> None:
    model = tiny_cnn()
    assert (
        client.post(
            "/models", params={"name": "tiny-measured", "accuracy": 50, "accuracy_int8": 40}, content=model
        ).status_code
        == 201
    )
    resp = client.post("/models/tiny-measured/accuracy", content=_labelled_npz(model, n=24, flip=6))
    assert resp.status_code == 200, resp.text
    prec = resp.json()["precisions"]
    assert prec["fp32"]["source"] == "measured" and prec["fp32"]["top1"] == pytest.approx(75.0)
    assert prec["int8"]["source"] == "measured" and 0 <= prec["int8"]["top1"] <= 100
    assert "fp16" not in prec  # not offered before, not asked for: still not offered
    # the catalog and the runners serve the measured figures
    assert client.get("/models/tiny-measured").json()["precisions"]["fp32"]["source"] == "measured"
    edge = httpx.get(f"{mesh.url('edge')}/models", trust_env=False).json()
    assert next(m for m in edge if m["name"] == "tiny-measured")["precisions"]["fp32"]["top1"] == pytest.approx(75.0)


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/models/nope/accuracy", b"", 404, "model"),
        ("/models/mobilenet_v1/accuracy", b"", 409, "name"),
        ("/models/tiny-measured-bad/accuracy", b"not an npz", 422, "labelled_set"),
        ("/models/tiny-measured-bad/accuracy", "WRONG_RANK", 422, "labelled_set"),
        ("/models/tiny-measured-bad/accuracy", "NO_Y", 422, "labelled_set"),
    ],
)
def test_measure_accuracy_bad_input(
    client: httpx.Client, path: str, body: bytes | str, status: int, field: str
) -> None:
    import io

    if "tiny-measured-bad" not in _names(client):
        assert (
            client.post("/models", params={"name": "tiny-measured-bad", "accuracy": 50}, content=tiny_cnn()).status_code
            == 201
        )
    if body == "WRONG_RANK":
        buf = io.BytesIO()
        np.savez(buf, x=np.zeros((4, 3, 16), np.float32), y=np.zeros(4, np.int64))
        body = buf.getvalue()
    elif body == "NO_Y":
        buf = io.BytesIO()
        np.savez(buf, x=np.zeros((4, 3, 16, 16), np.float32))
        body = buf.getvalue()
    before = client.get("/models/tiny-measured-bad").json()["precisions"]
    resp = client.post(path, content=body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["message"] and field in (err.get("field") or ""), err
    assert client.get("/models/tiny-measured-bad").json()["precisions"] == before  # nothing recorded
