"""INT8 and FP16 variants of an FP32 ONNX model (the paper's quantisation actions, Sec. V-C).

Formats produced, and why
-------------------------
INT8, float inputs (CNNs)
    Static post-training quantisation in **QDQ format** (``QuantizeLinear`` /
    ``DequantizeLinear`` pairs around float ops), per-channel symmetric int8 weights,
    per-tensor asymmetric uint8 activations, MinMax calibration on a small deterministic
    synthetic set (8 samples).  QDQ keeps standard ONNX ops only, so the same file runs in
    ONNX Runtime (which fuses the pairs into integer kernels) and imports into TVM's Relax
    ONNX frontend (which supports Quantize/DequantizeLinear, not ORT's QLinear* contrib
    fusions).  U8S8 is ORT's recommended CPU pairing; on x86 CPUs without VNNI its int16
    accumulation can saturate (ORT docs) - these machines have VNNI.
INT8, integer inputs or recurrent / attention graphs (MobileBERT)
    Static calibration of activations does not apply to token-id inputs and is fragile on
    attention, so these get **dynamic quantisation**: int8 weights, activation scales
    computed at run time (``DynamicQuantizeLinear`` + ``MatMulInteger``, standard ONNX ops
    that TVM also imports).
FP16
    ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``: weights
    and compute in float16, inputs/outputs still float32 so clients send the same tensors.

Variants are cached next to each other under ``cache_dir/variants`` keyed by the FP32 file's
sha256, the precision and the converter versions; a second call returns the cached file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from services.core.schemas import Dtype, Precision, TensorSpec

CALIBRATION_SAMPLES = 8
CALIBRATION_SEED = 1234
# Bump when the recipe below changes so cached variants are rebuilt.
VARIANT_FORMAT = "1"

Feed = dict[str, np.ndarray]


class _Reader:
    """ORT CalibrationDataReader over a list of feeds (duck-typed: get_next / rewind)."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._feeds = list(feeds)
        self._it: Iterator[Feed] = iter(self._feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _versions() -> str:
    import onnxconverter_common
    import onnxruntime

    return f"ort{onnxruntime.__version__}-occ{onnxconverter_common.__version__}-onnx{onnx.__version__}"


def _sha256(path: Path) -> str:
    from services.common.zoo import file_sha256

    return file_sha256(path)


def variant_path(fp32_path: Path, precision: Precision, cache_dir: Path) -> Path:
    """Where the variant of ``fp32_path`` lives (whether or not it exists yet)."""
    fp32_path = Path(fp32_path)
    key = hashlib.sha256(f"{VARIANT_FORMAT}|{_sha256(fp32_path)}|{precision}|{_versions()}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "variants" / f"{fp32_path.stem}-{precision}-{key}.onnx"


def model_input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    from services.common.features import io_specs

    return io_specs(model)[0]


def calibration_feeds(model: onnx.ModelProto, n: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED) -> list[Feed]:
    """``n`` deterministic feeds matching the model's inputs: real training images for a trained
    zoo model, synthetic ones otherwise (zoo-aware for token ids)."""
    from services.common import zoo

    props = {p.key: p.value for p in model.metadata_props}
    name = props.get("autoscale.zoo")
    source: str | list[TensorSpec] = name if name in zoo.ZOO else model_input_specs(model)
    return zoo.calibration_inputs(source, n, seed)


def quantization_mode(model: onnx.ModelProto) -> str:
    """``static`` for float-input feed-forward graphs, ``dynamic`` otherwise."""
    from services.common.features import analyze

    if any(s.dtype not in ("float32", "float16") for s in model_input_specs(model)):
        return "dynamic"
    return "dynamic" if analyze(model).rc > 0 else "static"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converters' chatter: ORT's "consider pre-processing" root-logger warning
    (our graphs already carry full shapes) and float16's truncation warnings for |w| < 1e-7."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        root.setLevel(level)


def _quantize_int8(src: Path, dst: Path, calibration: Sequence[Feed] | None) -> dict[str, object]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = onnx.load(str(src))
    mode = quantization_mode(model)
    if mode == "static":
        feeds = list(calibration) if calibration is not None else calibration_feeds(model)
        quantize_static(
            model,
            str(dst),
            _Reader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return {"mode": "static", "format": "QDQ", "calibration_samples": len(feeds)}
    quantize_dynamic(model, str(dst), weight_type=QuantType.QInt8, per_channel=False)
    return {"mode": "dynamic", "format": "QOperator (DynamicQuantizeLinear + MatMulInteger)"}


def _to_fp16(src: Path, dst: Path) -> dict[str, object]:
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    fp16 = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save_model(fp16, str(dst))
    return {"mode": "fp16", "format": "float16 weights and compute, float32 I/O"}


_ORT_DTYPES: dict[str, Dtype] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


def _smoke_run(path: Path) -> None:
    """Refuse to cache a variant ONNX Runtime cannot execute (or that yields NaN / inf)."""
    import onnxruntime as ort

    from services.common import zoo

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_modelmeta().custom_metadata_map.get("autoscale.zoo")
    if name in zoo.ZOO:
        feed = zoo.synthetic_inputs(name, CALIBRATION_SEED + 999)
    else:
        specs = [
            TensorSpec(
                name=i.name,
                dtype=_ORT_DTYPES.get(i.type, "float32"),
                shape=[d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
            )
            for i in sess.get_inputs()
        ]
        feed = zoo.synthetic_inputs(specs, CALIBRATION_SEED + 999)
    for out in sess.run(None, feed):
        arr = np.asarray(out)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise RuntimeError(f"variant {path.name} produced non-finite outputs")


def make_variant(
    fp32_path: Path,
    precision: Precision | str,
    cache_dir: Path,
    calibration: Sequence[Feed] | None = None,
) -> Path:
    """Path of the ``precision`` variant of ``fp32_path``, converting on first use.

    ``calibration``: feeds for static INT8 calibration (default: 8 synthetic samples).
    FP32 returns ``fp32_path`` itself.  Concurrent callers are safe: each converts into a
    private temp file and renames it into place atomically.
    """
    precision = Precision(precision)
    fp32_path = Path(fp32_path)
    if precision is Precision.fp32:
        return fp32_path
    dst = variant_path(fp32_path, precision, cache_dir)
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".convert-") as tmpdir:
        tmp = Path(tmpdir) / dst.name
        with _quiet():
            if precision is Precision.int8:
                meta = _quantize_int8(fp32_path, tmp, calibration)
            else:
                meta = _to_fp16(fp32_path, tmp)
        _smoke_run(tmp)
        data = tmp.read_bytes()
        meta.update(
            precision=str(precision),
            source=fp32_path.name,
            source_sha256=_sha256(fp32_path),
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            versions=_versions(),
        )
        side = Path(tmpdir) / "meta.json"
        side.write_text(json.dumps(meta, indent=2))
        os.replace(side, dst.with_suffix(".json"))
        os.replace(tmp, dst)
    return dst
