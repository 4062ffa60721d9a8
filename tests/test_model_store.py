"""ModelStore: built-ins without weights, validated uploads, persistence, atomic files."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.common.features import DEFAULT_MAX_BYTES, ModelValidationError
from services.common.model_store import ModelStore
from services.common.zoo import BUILTIN_NAMES
from services.core.schemas import AccuracyEntry, ModelInfo, Precision

ZOO = ["mobilenet_v1", "mobilebert"]
SMALL_CNN_MACS = 8 * 64 * 27 + 10 * 8  # conv 3->8 (3x3, 8x8 map) + dense 8->10


def small_cnn(batch: int = 1) -> onnx.ModelProto:
    """A user model: conv 3x3 3->8, global pool, dense 8->10."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "user",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("wf", 10, 8), w("bf", 10)],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path, zoo=ZOO)


def test_builtin_info_needs_no_build(store: ModelStore, tmp_path: Path) -> None:
    info = store.info("mobilebert")
    assert info.builtin and info.task == "question_answering"
    assert (info.features.conv, info.features.fc, info.features.rc) == (0, 1, 24)
    assert info.inputs[0].name == "input_ids" and info.inputs[0].dtype == "int64"
    assert info.precisions[Precision.fp32].source == "published"
    assert info.sha256 == ""  # not built yet
    assert _files(tmp_path) == set()  # nothing generated
    assert store.names() == ZOO and store.has("mobilenet_v1") and not store.has("resnet50")
    with pytest.raises(KeyError):
        store.info("resnet50")


def test_unknown_builtin_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        ModelStore(tmp_path, zoo=["no_such_net"])
    assert ModelStore(tmp_path, zoo=None).names() == list(BUILTIN_NAMES)  # None = every built-in


def test_builtin_path_builds_lazily(store: ModelStore) -> None:
    path = store.path("mobilenet_v1")
    assert path.exists() and path.parent.name == "zoo"
    assert store.path("mobilenet_v1", "fp32") == path
    assert store.info("mobilenet_v1").sha256  # known once built


def test_upload_register_and_persist(store: ModelStore, tmp_path: Path) -> None:
    data = small_cnn().SerializeToString()
    info = store.add("tiny-cnn.v1", data)
    assert not info.builtin and info.features.macs == SMALL_CNN_MACS and info.features.conv == 1
    assert info.inputs[0].shape == [1, 3, 8, 8] and info.outputs[0].name == "y"
    # content-addressed: the file is named by its sha256, the entry points at it
    assert (tmp_path / "user" / "blobs" / f"{info.sha256}.onnx").read_bytes() == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.names() == [*ZOO, "tiny-cnn.v1"]

    again = ModelStore(tmp_path, zoo=ZOO)  # a restart, or the other process
    assert again.has("tiny-cnn.v1") and again.info("tiny-cnn.v1") == info
    path = again.path("tiny-cnn.v1")
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros((1, 3, 8, 8), np.float32)}
    )[0]
    assert out.shape == (1, 10)


def test_user_model_variants(store: ModelStore) -> None:
    store.add("tiny", small_cnn().SerializeToString())
    for p in (Precision.int8, Precision.fp16):
        path = store.path("tiny", p)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})[0].shape == (1, 10)
    assert store.precisions("tiny") == list(Precision)


def _rejected(
    store: ModelStore, tmp_path: Path, name: str, data: bytes, field: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> None:
    before_names, before_files = store.names(), _files(tmp_path)
    with pytest.raises(ModelValidationError) as err:
        store.add(name, data, max_bytes=max_bytes)
    assert err.value.field == field
    assert store.names() == before_names and _files(tmp_path) == before_files  # registry unchanged


def test_rejections_leave_the_registry_unchanged(store: ModelStore, tmp_path: Path) -> None:
    good = small_cnn().SerializeToString()
    store.add("existing", good)
    _rejected(store, tmp_path, "corrupt", b"\x08\x01garbage-not-onnx" * 50, "file")
    _rejected(store, tmp_path, "empty", b"", "file")
    _rejected(store, tmp_path, "too-big", good, "file", max_bytes=len(good) - 1)
    ext = small_cnn()
    t = ext.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="weights.bin")
    _rejected(store, tmp_path, "external", ext.SerializeToString(), "file")
    _rejected(store, tmp_path, "existing", good, "name")  # clash with an upload
    _rejected(store, tmp_path, "mobilenet_v1", good, "name")  # clash with a built-in
    _rejected(store, tmp_path, "resnet50", good, "name")  # a zoo name even if not registered here
    for bad in ("Upper", "-lead", "", "a" * 65, "sp ace", "../x", "x.onnx"):
        _rejected(store, tmp_path, bad, good, "name")
    assert store.info("existing").features.macs == SMALL_CNN_MACS


def test_overwrite_and_remove(store: ModelStore, tmp_path: Path) -> None:
    first = store.add("m", small_cnn().SerializeToString())
    old_path = store.path("m")
    int8 = store.path("m", Precision.int8)
    bigger = small_cnn(batch=2).SerializeToString()
    info = store.add("m", bigger, overwrite=True)
    assert info.inputs[0].shape == [2, 3, 8, 8]
    # re-pointing the name writes a new file: what a runner loaded from the old one is untouched
    assert store.path("m") != old_path and old_path.read_bytes() == small_cnn().SerializeToString()
    assert first.sha256 != info.sha256
    store.add("m", small_cnn().SerializeToString(), overwrite=True)  # back to the first bytes
    store.remove("m")
    assert not store.has("m") and "m" not in store.names()
    assert not int8.exists() and not old_path.exists()
    with pytest.raises(KeyError):
        store.remove("m")
    with pytest.raises(ModelValidationError):
        store.remove("mobilenet_v1")


def test_measured_accuracy_is_recorded(store: ModelStore, tmp_path: Path) -> None:
    store.add("tiny", small_cnn().SerializeToString())
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(store.path("tiny")), providers=["CPUExecutionProvider"])
    y = np.array([int(sess.run(None, {"x": xi[None]})[0].argmax()) for xi in x])
    np.savez(tmp_path / "labelled.npz", x=x, y=y)
    info = store.measure("tiny", Precision.fp32, tmp_path / "labelled.npz")
    assert info.precisions[Precision.fp32].top1 == 100.0
    assert info.precisions[Precision.fp32].source == "measured"
    assert ModelStore(tmp_path, zoo=ZOO).info("tiny").precisions[Precision.fp32].source == "measured"
    info = store.set_accuracy("tiny", "int8", AccuracyEntry(top1=50.0, source="measured"))
    assert set(info.precisions) == {Precision.fp32, Precision.int8}
    # the same bytes pushed again keep what is known; different bytes start from scratch
    assert set(store.add("tiny", small_cnn().SerializeToString(), overwrite=True).precisions) == set(info.precisions)
    assert store.add("tiny", small_cnn(batch=2).SerializeToString(), overwrite=True).precisions == {}


def test_push_checks_the_hash_and_the_model(store: ModelStore, tmp_path: Path) -> None:
    """A push carries the sha256 the sender validated: other bytes, or a model ORT cannot run, change nothing."""
    from services.common.model_store import Sha256Mismatch, UnsupportedModel, require_servable
    from tests.test_models_api import custom_op_model

    data = small_cnn().SerializeToString()
    before = _files(tmp_path)
    with pytest.raises(Sha256Mismatch) as err:
        store.add("pushed", data, expected_sha256=hashlib.sha256(b"other bytes").hexdigest())
    assert err.value.status == 422 and err.value.field == "x-model-sha256"
    bad = custom_op_model()
    with pytest.raises(UnsupportedModel) as unsupported:
        store.add("pushed", bad, expected_sha256=hashlib.sha256(bad).hexdigest(), accept=require_servable)
    assert unsupported.value.code == "unsupported_op" and unsupported.value.field == "file"
    assert _files(tmp_path) == before and not store.has("pushed")
    info = store.add("pushed", data, expected_sha256=hashlib.sha256(data).hexdigest(), accept=require_servable)
    assert store.path("pushed").read_bytes() == data and info.sha256 == hashlib.sha256(data).hexdigest()


def _upload_in_child(root: str, name: str) -> None:
    ModelStore(Path(root), zoo=ZOO).add(name, small_cnn().SerializeToString(), overwrite=True)


def test_two_processes_share_one_directory(store: ModelStore, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_upload_in_child, args=(str(tmp_path), f"p{i}")) for i in range(2)]
    for p in procs:
        p.start()
    store.add("p0", small_cnn().SerializeToString(), overwrite=True)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert {"p0", "p1"} <= set(store.names())
    assert all(isinstance(store.info(n), ModelInfo) for n in ("p0", "p1"))
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]
    onnx.checker.check_model(onnx.load(str(store.path("p0"))))
