"""Zoo graphs reproduce Table III, variants run in ONNX Runtime, accuracy table is sound."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from services.common import zoo
from services.common.accuracy import expected_accuracy, measure_accuracy, metric, published_accuracies
from services.common.features import ModelValidationError, extract_features
from services.common.precision import make_variant, quantization_mode, variant_path
from services.core.schemas import Precision

# Table III of Kim & Wu (MICRO 2020): (CONV, FC, RC)
TABLE_III = {
    "inception_v1": (49, 1, 0),
    "inception_v3": (94, 1, 0),
    "mobilenet_v1": (14, 1, 0),
    "mobilenet_v2": (35, 1, 0),
    "mobilenet_v3": (23, 20, 0),
    "resnet50": (53, 1, 0),
    "ssd_mobilenet_v1": (19, 1, 0),
    "ssd_mobilenet_v2": (52, 1, 0),
    "ssd_mobilenet_v3": (28, 20, 0),
    "mobilebert": (0, 1, 24),
}
INPUT_SHAPES = {
    **{n: [1, 3, 224, 224] for n in TABLE_III},
    "inception_v3": [1, 3, 299, 299],
    **{n: [1, 3, 300, 300] for n in TABLE_III if n.startswith("ssd")},
    "mobilebert": [1, 128],
}


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_zoo_names_are_table_iii() -> None:
    assert tuple(TABLE_III) == zoo.ZOO_NAMES


@pytest.mark.parametrize("name", list(TABLE_III))
def test_counts_match_table_iii_and_macs_match_published(name: str) -> None:
    f = zoo.zoo_features(name)
    assert (f.conv, f.fc, f.rc) == TABLE_III[name] == zoo.spec(name).table3
    published = zoo.spec(name).published_macs
    assert abs(f.macs / published - 1) <= 0.15, f"{name}: {f.macs / 1e6:.0f} M vs published {published / 1e6:.0f} M"
    assert zoo.spec(name).macs_reference
    assert f.params > 1_000_000


@pytest.mark.parametrize("name", list(TABLE_III))
def test_input_specs_are_the_real_shapes(name: str) -> None:
    (spec,) = zoo.input_specs(name)
    assert spec.shape == INPUT_SHAPES[name]
    assert spec.dtype == ("int64" if name == "mobilebert" else "float32")
    f = zoo.zoo_features(name)
    assert f.input_bytes == math.prod(INPUT_SHAPES[name]) * (8 if name == "mobilebert" else 4)
    assert zoo.task(name) in ("image_classification", "object_detection", "question_answering")


def test_skeleton_graph_equals_real_graph() -> None:
    """zoo_features works on shape-only weights: the real graph must give identical features."""
    real = zoo.build_model("mobilenet_v3")
    skeleton = zoo.build_model("mobilenet_v3", weights=False)
    assert [n.op_type for n in real.graph.node] == [n.op_type for n in skeleton.graph.node]
    assert extract_features(real) == zoo.zoo_features("mobilenet_v3")
    onnx.checker.check_model(real)


def test_source_hash_is_stable_and_per_model() -> None:
    assert zoo.source_hash("mobilenet_v1") == zoo.source_hash("mobilenet_v1")
    assert len({zoo.source_hash(n) for n in zoo.ZOO_NAMES}) == len(zoo.ZOO_NAMES)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_build_caches_by_content_hash_and_runs(cache: Path) -> None:
    path = zoo.build("mobilenet_v3", cache)
    assert path.parent == cache / "zoo" and path.name == f"mobilenet_v3-{zoo.source_hash('mobilenet_v3')[:12]}.onnx"
    mtime = path.stat().st_mtime_ns
    assert zoo.build("mobilenet_v3", cache) == path and path.stat().st_mtime_ns == mtime  # no rebuild
    sess = _session(path)
    a = sess.run(None, zoo.synthetic_inputs("mobilenet_v3", 0))[0]
    b = sess.run(None, zoo.synthetic_inputs("mobilenet_v3", 1))[0]
    assert a.shape == (1, 1000) and np.isfinite(a).all() and a.std() > 0.1
    assert _cos(a, b) < 0.9  # outputs depend on the input (not a degenerate constant)
    assert zoo.file_sha256(path) and (path.with_suffix(".json")).exists()


def test_detector_outputs(cache: Path) -> None:
    sess = _session(zoo.build("ssd_mobilenet_v3", cache))
    boxes, scores = sess.run(None, zoo.synthetic_inputs("ssd_mobilenet_v3"))
    out = {s.name: s.shape for s in zoo.output_specs("ssd_mobilenet_v3")}
    assert list(boxes.shape) == out["boxes"] and list(scores.shape) == out["scores"]
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()


# ----------------------------------------------------------------------------- precision variants


@pytest.fixture(scope="session")
def mobilenet_v1(cache: Path) -> dict[Precision, Path]:
    fp32 = zoo.build("mobilenet_v1", cache)
    return {p: make_variant(fp32, p, cache) for p in Precision}


def test_mobilenet_v1_variants_run_and_agree(mobilenet_v1: dict[Precision, Path]) -> None:
    assert mobilenet_v1[Precision.fp32].name.startswith("mobilenet_v1-")
    sessions = {p: _session(path) for p, path in mobilenet_v1.items()}
    agree = {Precision.int8: 0, Precision.fp16: 0}
    seeds = range(10, 18)
    for seed in seeds:
        feed = zoo.synthetic_inputs("mobilenet_v1", seed)
        ref = sessions[Precision.fp32].run(None, feed)[0]
        for p in (Precision.int8, Precision.fp16):
            out = sessions[p].run(None, feed)[0]
            assert out.shape == ref.shape and out.dtype == np.float32  # FP32 I/O for every variant
            assert _cos(ref, out) > (0.9 if p is Precision.int8 else 0.99), p
            assert ref.argmax() in np.argsort(-out.ravel())[:5], p  # FP32's class stays near the top
            agree[p] += int(out.argmax() == ref.argmax())
    # 1000 random-weight classes are often near-ties, so exact top-1 agreement is a majority test
    assert agree[Precision.int8] >= len(seeds) // 2 and agree[Precision.fp16] >= len(seeds) - 1


def test_int8_is_qdq_and_fp16_keeps_float_io(mobilenet_v1: dict[Precision, Path]) -> None:
    int8 = onnx.load(str(mobilenet_v1[Precision.int8]))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and not ops & {"QLinearConv", "ConvInteger"}
    fp16 = onnx.load(str(mobilenet_v1[Precision.fp16]))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    # counts survive quantisation (QDQ pairs are pass-through for the extractor)
    keys = {"conv", "fc", "rc", "macs", "input_bytes", "output_bytes"}
    ref = zoo.zoo_features("mobilenet_v1").model_dump(include=keys)
    assert extract_features(int8).model_dump(include=keys) == ref == extract_features(fp16).model_dump(include=keys)


def test_variants_are_cached(mobilenet_v1: dict[Precision, Path], cache: Path) -> None:
    path = mobilenet_v1[Precision.int8]
    mtime = path.stat().st_mtime_ns
    fp32 = mobilenet_v1[Precision.fp32]
    assert make_variant(fp32, "int8", cache) == path == variant_path(fp32, Precision.int8, cache)
    assert path.stat().st_mtime_ns == mtime
    assert make_variant(fp32, Precision.fp32, cache) == fp32


def test_mobilebert_int8_is_dynamic_and_runs(cache: Path) -> None:
    fp32 = zoo.build("mobilebert", cache)
    assert quantization_mode(onnx.load(str(fp32), load_external_data=False)) == "dynamic"
    int8 = make_variant(fp32, Precision.int8, cache)
    assert int8.stat().st_size < fp32.stat().st_size / 2.5
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    feed = zoo.synthetic_inputs("mobilebert", 3)
    assert feed["input_ids"].dtype == np.int64 and feed["input_ids"].max() < zoo.TOKEN_VOCAB
    ref, out = _session(fp32).run(None, feed), _session(int8).run(None, feed)
    assert [o.shape for o in out] == [(1, 128), (1, 128)]
    assert _cos(ref[0], out[0]) > 0.9 and np.isfinite(out[0]).all()


def test_static_calibration_can_be_supplied(tmp_path: Path) -> None:
    fp32 = zoo.build("mobilenet_v3", tmp_path)
    calib = [zoo.synthetic_inputs("mobilenet_v3", 50 + i) for i in range(2)]
    path = make_variant(fp32, "int8", tmp_path, calibration=calib)
    meta = path.with_suffix(".json").read_text()
    assert '"calibration_samples": 2' in meta and '"format": "QDQ"' in meta


# ----------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("name", list(TABLE_III))
def test_every_zoo_model_has_published_fp32_and_fp16(name: str) -> None:
    for p in (Precision.fp32, Precision.fp16):
        entry = expected_accuracy(name, p)
        assert entry is not None and entry.source == "published" and entry.reference
        assert 0 < entry.top1 <= 100
    assert metric(name)
    assert published_accuracies(name)[Precision.fp32] == expected_accuracy(name, "fp32")


def test_int8_figures_make_accuracy_masking_matter() -> None:
    int8 = {n: expected_accuracy(n, Precision.int8) for n in TABLE_III}
    below_70 = [n for n, e in int8.items() if e and e.top1 < 70 and metric(n) == "ImageNet top-1"]
    below_65 = [n for n, e in int8.items() if e and e.top1 < 65 and metric(n) == "ImageNet top-1"]
    assert below_65 and set(below_65) < set(below_70)
    assert all(e is None or e.source == "published" for e in int8.values())
    assert expected_accuracy("not_a_zoo_model", Precision.fp32) is None


def test_measure_accuracy_on_a_labelled_set(cache: Path, tmp_path: Path) -> None:
    path = zoo.build("mobilenet_v3", cache)
    sess = _session(path)
    feeds = [zoo.synthetic_inputs("mobilenet_v3", 200 + i)["input"] for i in range(4)]
    preds = [int(sess.run(None, {"input": x})[0].argmax()) for x in feeds]
    labels = np.array([*preds[:3], (preds[3] + 1) % 1000])  # 3 of 4 right by construction
    npz = tmp_path / "set.npz"
    np.savez(npz, x=np.concatenate(feeds), y=labels)
    entry = measure_accuracy(path, Precision.fp32, npz)
    assert entry.source == "measured" and entry.top1 == pytest.approx(75.0)
    with pytest.raises(ModelValidationError) as err:
        measure_accuracy(path, Precision.fp32, {"x": np.concatenate(feeds)})
    assert err.value.field == "labelled_set"


def test_full_zoo_builds_and_runs(cache: Path) -> None:
    for name in zoo.ZOO_NAMES:
        outs = _session(zoo.build(name, cache)).run(None, zoo.synthetic_inputs(name))
        assert all(np.isfinite(o).all() for o in outs), name
