"""Engines: ONNX Runtime vs TVM parity, TVM artefact cache, supports(), tuning, zoo MobileNet v1.

Tolerances (TVM vs ONNX Runtime on the same file):
- fp32: np.allclose(rtol=1e-3, atol=1e-4) - both compute in fp32, only summation order differs.
- int8 (QDQ): relative L2 error <= 0.15 and cosine >= 0.98. ORT fuses QDQ pairs into integer kernels
  while TVM runs dequantize -> fp32 op -> quantize; one-LSB rounding differences per requantisation
  compound over depth (measured on MobileNet v1: 8-12 % relative L2, cosine >= 0.993).
- fp16: relative L2 <= 0.25: TVM accumulates in fp16, ORT's CPU kernels in fp32 (measured 12-14 %).
The whole file runs in ~2 min on 2 cores; the tuning test alone ~45 s (18 s of it is TVM importing
its tensor-intrinsic library once per process).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.common.engines import EngineError, Support, available_engines, get_engine, pick_device
from services.common.engines.onnxruntime_engine import OnnxRuntimeEngine
from services.common.engines.tvm_engine import TvmEngine
from services.core.schemas import Precision, Processor, TensorSpec
from tests.onnx_ops import IMPORTABLE, f32, graph_model, op_case, with_output_shapes


class Tolerance(TypedDict):
    rtol: float
    atol: float


FP32_TOL: Tolerance = {"rtol": 1e-3, "atol": 1e-4}
INT8_MAX_REL_L2, INT8_MIN_COS = 0.15, 0.98
FP16_MAX_REL_L2 = 0.25

# ----------------------------------------------------------------------------- graph builders


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def small_cnn(path: Path, seed: int = 0) -> Path:
    """Conv 3->8, ReLU, depthwise Conv, ReLU, GlobalAveragePool, Gemm 8->10, Softmax; batch symbolic."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float = 0.3) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = [
        w("w1", 8, 3, 3, 3),
        w("b1", 8, scale=0.1),
        w("w2", 8, 1, 3, 3),
        w("b2", 8, scale=0.1),
        w("w3", 10, 8),
        w("b3", 10, scale=0.1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    return _save(graph_model(nodes, [x], [y], inits), path)


def two_conv(path: Path) -> Path:
    """The tuning test's graph: two 3x3 convs (two MetaSchedule tasks)."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
        for n, s in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 3, 3)))
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    return _save(graph_model(nodes, [x], [y], inits), path)


def lstm_model() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    hidden = 4
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, 8)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, 1, hidden])
    return graph_model([helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden)], [x], [y], inits)


def qlinearconv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    scalars = [
        ("xs", np.float32(0.05)),
        ("xz", np.uint8(128)),
        ("ws", np.float32(0.02)),
        ("wz", np.uint8(128)),
        ("ys", np.float32(0.1)),
        ("yz", np.uint8(128)),
    ]
    inits = [numpy_helper.from_array(np.array(v), n) for n, v in scalars]
    inits.append(numpy_helper.from_array(rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8), "w"))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 6, 6])
    return graph_model([node], [x], [y], inits)


def qdq_cnn(src: Path, dst: Path) -> Path:
    """Static int8 QDQ quantisation of ``src`` with ORT, 8 synthetic calibration samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(4)
            self.feeds = iter([{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def image(seed: int, shape: tuple[int, ...] = (1, 3, 32, 32)) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def cnn_path(work: Path) -> Path:
    return small_cnn(work / "cnn.onnx")


@pytest.fixture(scope="module")
def ort_engine() -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine()


@pytest.fixture(scope="module")
def tvm_engine(work: Path) -> TvmEngine:
    # A private cache so runs never hit artefacts of earlier runs (the cache test needs a miss first).
    return TvmEngine(cache_dir=work / "tvm_cache", tuning_dir=work / "tuning")


# ----------------------------------------------------------------------------- tests


def test_registry_and_devices() -> None:
    engines = available_engines()
    assert set(engines) == {"onnxruntime", "tvm"}
    assert get_engine("tvm") is engines["tvm"]  # process-wide singletons
    with pytest.raises(EngineError, match="unknown engine"):
        get_engine("tensorflow")
    import onnxruntime as ort
    import tvm

    for e in engines.values():
        assert e.devices()[0] == "cpu" and e.version
        assert pick_device(e, Processor.cpu) == "cpu"
    # Detected, not assumed: GPU devices appear exactly when the runtime reports them.
    assert ("cuda" in engines["onnxruntime"].devices()) == ("CUDAExecutionProvider" in ort.get_available_providers())
    assert ("cuda" in engines["tvm"].devices()) == bool(tvm.cuda(0).exist)


def test_ort_uses_accelerator_providers_only_when_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    e = OnnxRuntimeEngine()
    listed = ["QNNExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    assert e.devices() == ["cpu", "cuda", "qnn"]
    assert e.providers_for("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert e.providers_for("qnn")[0] == ("QNNExecutionProvider", {"backend_path": "libQnnHtp.so"})
    assert pick_device(e, Processor.gpu) == "cuda" and pick_device(e, Processor.dsp) == "qnn"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert e.devices() == ["cpu"] and pick_device(e, Processor.gpu) is None
    with pytest.raises(EngineError, match="unavailable"):
        e.providers_for("cuda")


def test_small_cnn_ort_and_tvm_agree(cnn_path: Path, ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine) -> None:
    a = ort_engine.load(cnn_path, threads=2)
    b = tvm_engine.load(cnn_path, threads=2)
    assert a.inputs[0].shape == ["N", 3, 32, 32] and a.output_names == ["y"]
    assert b.inputs[0].shape == [1, 3, 32, 32] and b.output_names == ["y"]  # TVM binds the batch dim to 1
    for seed in range(3):
        ra, rb = a.run(image(seed)), b.run(image(seed))
        assert ra[0].shape == rb[0].shape == (1, 10)
        np.testing.assert_allclose(rb[0], ra[0], **FP32_TOL)


def test_tvm_second_load_hits_disk_cache(cnn_path: Path, tvm_engine: TvmEngine, work: Path) -> None:
    first = tvm_engine.load(cnn_path, threads=2)  # compiled by the previous test or now
    so = first.info.artifact
    assert so.is_file() and so.suffix == ".so"
    mtime = so.stat().st_mtime_ns
    # A fresh engine (= a restarted runner) on the same cache dir must not compile.
    again = TvmEngine(cache_dir=work / "tvm_cache", tuning_dir=work / "tuning")
    t0 = time.perf_counter()
    second = again.load(cnn_path, threads=2)
    hit_s = time.perf_counter() - t0
    assert second.info.from_cache and again.compiles == 0 and again.cache_hits == 1
    assert second.info.artifact == so and so.stat().st_mtime_ns == mtime
    assert hit_s < second.info.compile_s / 2, (hit_s, second.info.compile_s)
    np.testing.assert_array_equal(second.run(image(0))[0], first.run(image(0))[0])
    # A different target (thread count is part of it) is a different artefact.
    assert again.load(cnn_path, threads=1).info.artifact != so


def test_supports_refuses_lstm_and_qlinearconv(
    ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine, work: Path
) -> None:
    for model, op in ((lstm_model(), "LSTM"), (qlinearconv_model(), "QLinearConv")):
        s = tvm_engine.supports(model, Precision.fp32 if op == "LSTM" else Precision.int8)
        assert isinstance(s, Support), s
        assert not s.ok and op in s.reason, s
        assert ort_engine.supports(model, Precision.fp32).ok  # ONNX Runtime runs both
        path = _save(model, work / f"{op}.onnx")
        ort_engine.load(path)
        with pytest.raises(EngineError, match=op):  # load() refuses with the same reason
            tvm_engine.load(path)


# --- the empirical op list: what TVM 0.27's Relax ONNX frontend imports and runs like ORT ---------


def _random_input(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    """Token ids for int64 inputs, standard-normal values otherwise."""
    shape = [int(d) for d in spec.shape]  # TVM binds every dim to a number
    return (rng.integers(0, 30, shape) if spec.dtype == "int64" else rng.standard_normal(shape)).astype(spec.dtype)


@pytest.mark.parametrize("case", IMPORTABLE)
def test_tvm_imports_and_matches_ort(
    case: str, ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine, work: Path
) -> None:
    slug = re.sub(r"\W+", "_", case)
    path = _save(with_output_shapes(op_case(case)), work / f"op_{slug}.onnx")
    model = onnx.load(str(path))
    assert tvm_engine.supports(model, Precision.fp32).ok
    a, b = ort_engine.load(path), tvm_engine.load(path)
    rng = np.random.default_rng(8)
    feeds = {s.name: _random_input(rng, s) for s in b.inputs}
    tol: Tolerance = {"rtol": 1e-2, "atol": 2e-2} if case.startswith("fp16") else FP32_TOL  # fp16 arithmetic in both
    for ra, rb in zip(a.run(feeds), b.run(feeds), strict=True):
        np.testing.assert_allclose(rb, ra, **tol)


@pytest.mark.filterwarnings("ignore::UserWarning")  # onnx.checker: the 1-input nodes are deliberately minimal
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN", "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger"])
def test_deny_list_is_truthful(op: str, tvm_engine: TvmEngine) -> None:
    """Each refused op really fails in the frontend (so a TVM upgrade that adds one shows up here)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    domain = "com.microsoft" if op == "QGemm" else ""
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    model = graph_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [],
        domains=(domain,) if domain else (),
    )
    s = tvm_engine.supports(model, Precision.int8)
    assert not s.ok and op in s.reason
    with pytest.raises(tvm.error.OpNotImplemented, match=op):
        from_onnx(model)


def test_ort_dynamic_int8_matmul_runs_on_tvm(ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine, work: Path) -> None:
    """ORT dynamic quantisation (DynamicQuantizeLinear + MatMulInteger, the zoo's MobileBERT int8) imports in TVM."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(f32(rng, 32, 64), "w1"), numpy_helper.from_array(f32(rng, 64, 16), "w2")]
    src = _save(
        graph_model(
            nodes,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])],
            inits,
        ),
        work / "mlp.onnx",
    )
    dst = work / "mlp_dyn.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in model.graph.node}
    assert tvm_engine.supports(model, Precision.int8).ok
    feeds = {"x": f32(rng, 1, 8, 32)}
    ra, rb = ort_engine.load(dst).run(feeds)[0], tvm_engine.load(dst).run(feeds)[0]
    assert rel_l2(rb, ra) <= 1e-3  # same integer arithmetic: measured bit-exact


def test_qdq_int8_supported_and_runs_on_tvm(
    cnn_path: Path, ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine, work: Path
) -> None:
    qdq = qdq_cnn(cnn_path, work / "cnn_int8.onnx")
    model = onnx.load(str(qdq))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert tvm_engine.supports(model, Precision.int8).ok
    a, b = ort_engine.load(qdq), tvm_engine.load(qdq)
    ref = ort_engine.load(cnn_path).run(image(0))[0]
    ra, rb = a.run(image(0))[0], b.run(image(0))[0]
    assert rel_l2(rb, ra) <= INT8_MAX_REL_L2 and cosine(rb, ra) >= INT8_MIN_COS
    assert rel_l2(rb, ref) <= 0.2  # and it is still the same network as fp32


def test_engine_errors(cnn_path: Path, ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine, work: Path) -> None:
    junk = work / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    for e in (ort_engine, tvm_engine):
        with pytest.raises(EngineError):
            e.load(junk)
        with pytest.raises(EngineError, match=r"unavailable|unknown"):
            e.load(cnn_path, device="nonexistent-accelerator")
    m = tvm_engine.load(cnn_path)
    with pytest.raises(EngineError, match="dtype"):
        m.run({"x": np.zeros((1, 3, 32, 32), np.float64)})
    with pytest.raises(EngineError, match="missing input"):
        ort_engine.load(cnn_path).run({})
    with pytest.raises(EngineError, match="no tuning database"):
        tvm_engine.load(cnn_path, tuned=True)
    custom = graph_model(
        [helper.make_node("Foo", ["x"], ["y"], domain="org.example")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [],
        domains=("org.example",),
    )
    for e in (ort_engine, tvm_engine):
        s = e.supports(custom, Precision.fp32)
        assert not s.ok and "Foo" in s.reason


def test_zoo_mobilenet_v1_parity(ort_engine: OnnxRuntimeEngine, tvm_engine: TvmEngine, work: Path) -> None:
    """The real zoo MobileNet v1 (fp32, its int8 QDQ and fp16 variants) through both engines."""
    from services.common.precision import make_variant
    from services.common.zoo import build, synthetic_inputs

    fp32 = build("mobilenet_v1", work / "models")
    int8 = make_variant(fp32, Precision.int8, work / "models")
    fp16 = make_variant(fp32, Precision.fp16, work / "models")
    feeds = synthetic_inputs("mobilenet_v1", seed=0)
    for path, prec in ((fp32, Precision.fp32), (int8, Precision.int8), (fp16, Precision.fp16)):
        model = onnx.load(str(path), load_external_data=False)
        assert ort_engine.supports(model, prec).ok and tvm_engine.supports(model, prec).ok
        ra = ort_engine.load(path).run(feeds)
        rb = tvm_engine.load(path).run(feeds)
        assert [r.shape for r in ra] == [r.shape for r in rb] == [(1, 1000)]
        if prec is Precision.fp32:
            np.testing.assert_allclose(rb[0], ra[0], **FP32_TOL)
        elif prec is Precision.int8:
            assert rel_l2(rb[0], ra[0]) <= INT8_MAX_REL_L2 and cosine(rb[0], ra[0]) >= INT8_MIN_COS
        else:
            assert rel_l2(rb[0], ra[0]) <= FP16_MAX_REL_L2


def test_tiny_tuning_database_and_tuned_compile(ort_engine: OnnxRuntimeEngine, work: Path) -> None:
    from services.common.engines.tune import count_valid_records, tune

    path = two_conv(work / "two_conv.onnx")
    db = tune(path, "llvm", trials=8, work_dir=work / "tuning", threads=2, builder_workers=1, min_repeat_ms=20)
    assert (db / "database_workload.json").is_file() and (db / "meta.json").is_file()
    assert count_valid_records(db) >= 2  # both convs got at least one working schedule
    engine = TvmEngine(cache_dir=work / "tvm_cache", tuning_dir=work / "tuning")
    tuned = engine.load(path, threads=2)
    assert tuned.info.tuned and not tuned.info.from_cache and engine.compiles == 1
    untuned = engine.load(path, threads=2, tuned=False)
    assert not untuned.info.tuned and untuned.info.artifact != tuned.info.artifact  # separate cache keys
    feeds = image(5, (1, 3, 16, 16))
    ref = ort_engine.load(path).run(feeds)[0]
    np.testing.assert_allclose(tuned.run(feeds)[0], ref, **FP32_TOL)
    np.testing.assert_allclose(untuned.run(feeds)[0], ref, **FP32_TOL)
    # A restarted engine reuses the tuned artefact.
    again = TvmEngine(cache_dir=work / "tvm_cache", tuning_dir=work / "tuning").load(path, threads=2)
    assert again.info.tuned and again.info.from_cache


def test_cli_engines_and_bad_target(work: Path) -> None:
    from typer.testing import CliRunner

    from services.cli.tune import app

    runner = CliRunner()
    res = runner.invoke(app, ["engines"])
    assert res.exit_code == 0 and "onnxruntime" in res.output and "tvm" in res.output
    path = small_cnn(work / "cli.onnx")
    res = runner.invoke(app, ["tune", str(path), "--target", "vulkan", "--trials", "1", "--out", str(work / "t")])
    assert res.exit_code == 1
