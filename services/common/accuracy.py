"""Expected accuracy per (model, precision): the R_accuracy of the paper's reward and the
value the decider masks targets with (``accuracy_min``; Fig. 12 uses 50 / 65 / 70 %).

Every zoo entry is a *published* figure with its reference.  The metric is the model's task
metric, in percent:

* image classification - ImageNet top-1;
* object detection - COCO mAP@[.5:.95] (TF detection-zoo numbers, 15-22 %: an
  ``accuracy_min`` of 50 masks every SSD target, as it should on that scale);
* MobileBERT - SQuAD v1.1 dev F1 (the paper's Table III calls the workload "Translation" but
  publishes no metric for it; SQuAD F1 is MobileBERT's headline result).

INT8 figures are post-training-quantised where such a figure is published (TFLite model
optimisation guide), otherwise the quantised release (quantisation-aware training) - say
which in each reference.  FP16 entries repeat the FP32 figure: FP16 weights/compute are
documented as accuracy-neutral (TFLite post-training float16 quantisation: "insignificant
accuracy loss"), and no per-model FP16 figures are published for these networks.

User models have no published figure; :func:`measure_accuracy` computes top-1 on a labelled
set the user supplies (``source="measured"``). So does the trained built-in ``digits``, on its
held-out split (``services.common.model_store``): it has no entry here.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from services.common.features import ModelValidationError
from services.core.schemas import AccuracyEntry, Precision


class LabelledSetError(ModelValidationError):
    """A labelled set that cannot be measured on (malformed, wrong rank, labels that do not fit)."""

    code = "invalid_labelled_set"

    def __init__(self, message: str, field: str | None = "labelled_set") -> None:
        super().__init__(message, field=field)


class LabelledSetTooLarge(LabelledSetError):
    """A labelled set whose arrays would expand past the upload limit (a zip bomb, or just too big)."""

    status = 413
    code = "too_large"


# ----------------------------------------------------------------------------- sources

_SLIM = "TF-Slim image models README (tensorflow/models research/slim), single-crop ImageNet top-1"
_SLIM_V1 = "TF-Slim mobilenet_v1.md, MobileNet_v1_1.0_224"
_SLIM_V3 = "TF-Slim mobilenet README, MobilenetV3 checkpoints table"
_TFLITE_OPT = "TensorFlow Lite model optimization guide, Table 1 (post-training quantized, ImageNet top-1)"
_TFLITE_HOSTED = "TensorFlow Lite hosted models, quantized table (quantization-aware trained, ImageNet top-1)"
_TF1_ZOO = "TF1 detection model zoo (tensorflow/models object_detection g3doc), COCO mAP"
_FP16_NOTE = (
    "FP32 figure; FP16 is accuracy-neutral per the TFLite post-training float16 quantization guide "
    "('insignificant accuracy loss')"
)

# model -> metric, fp32 (value, reference), int8 (value, reference) or None
_TABLE: dict[str, tuple[str, tuple[float, str], tuple[float, str] | None]] = {
    "inception_v1": (
        "ImageNet top-1",
        (69.8, f"{_SLIM}: Inception V1 69.8"),
        (70.1, f"{_TFLITE_HOSTED}: Inception_V1_quant 70.1"),
    ),
    "inception_v3": (
        "ImageNet top-1",
        (78.0, f"{_SLIM}: Inception V3 78.0; {_TFLITE_OPT}: Inception_v3 0.78"),
        (77.2, f"{_TFLITE_OPT}: Inception_v3 0.772"),
    ),
    "mobilenet_v1": (
        "ImageNet top-1",
        (70.9, f"{_SLIM_V1}: 70.9; {_TFLITE_OPT}: Mobilenet-v1-1-224 0.709"),
        (65.7, f"{_TFLITE_OPT}: Mobilenet-v1-1-224 0.657 (QAT release: 70.0)"),
    ),
    "mobilenet_v2": (
        "ImageNet top-1",
        (71.9, f"{_TFLITE_OPT}: Mobilenet-v2-1-224 0.719 (TF-Slim: 71.8)"),
        (63.7, f"{_TFLITE_OPT}: Mobilenet-v2-1-224 0.637 (QAT release: 70.8)"),
    ),
    "mobilenet_v3": (
        "ImageNet top-1",
        (67.5, f"{_SLIM_V3}: Small dm=1 (float) 67.5 (Howard et al. 2019, Table 3: 67.4)"),
        (64.9, f"{_SLIM_V3}: Small dm=1 (8-bit) 64.9"),
    ),
    "resnet50": (
        "ImageNet top-1",
        (75.2, f"{_SLIM}: ResNet V1 50 75.2"),
        (74.9, "Jacob et al. 2018 (CVPR), Sec. 4.1 ResNet table: ResNet-50 integer-quantized 74.9 (float 76.4)"),
    ),
    "ssd_mobilenet_v1": (
        "COCO mAP",
        (21.0, f"{_TF1_ZOO}: ssd_mobilenet_v1_coco 21"),
        (18.0, f"{_TF1_ZOO}: ssd_mobilenet_v1_quantized_coco 18"),
    ),
    "ssd_mobilenet_v2": (
        "COCO mAP",
        (22.0, f"{_TF1_ZOO}: ssd_mobilenet_v2_coco 22"),
        (22.0, f"{_TF1_ZOO}: ssd_mobilenet_v2_quantized_coco 22"),
    ),
    "ssd_mobilenet_v3": (
        "COCO mAP",
        (15.4, f"{_TF1_ZOO}: ssd_mobilenet_v3_small_coco 15.4"),
        None,  # no quantised SSD-MobileNetV3 figure is published
    ),
    "mobilebert": (
        "SQuAD v1.1 F1",
        (90.0, "Sun et al. 2020 (MobileBERT), abstract: SQuAD v1.1 dev F1 90.0"),
        (88.0, "MLCommons mobile_models v0.7 README: mobilebert_int8_384 SQuAD v1.1 F1 88 (float: 90), seq 384"),
    ),
}


def metric(model: str) -> str | None:
    """The metric the figures of ``model`` are in (None for non-zoo models)."""
    row = _TABLE.get(model)
    return row[0] if row else None


def expected_accuracy(model: str, precision: Precision | str) -> AccuracyEntry | None:
    """Published accuracy of a zoo model at a precision, or None when none is published."""
    row = _TABLE.get(model)
    if row is None:
        return None
    metric_name, fp32, int8 = row
    p = Precision(precision)
    if p is Precision.int8:
        if int8 is None:
            return None
        value, ref = int8
    elif p is Precision.fp16:
        value, ref = fp32[0], f"{_FP16_NOTE}: {fp32[1]}"
    else:
        value, ref = fp32
    return AccuracyEntry(top1=value, source="published", reference=f"{metric_name}: {ref}")


def published_accuracies(model: str) -> dict[Precision, AccuracyEntry]:
    """All published entries of ``model`` (precisions without a figure are absent)."""
    out: dict[Precision, AccuracyEntry] = {}
    for p in Precision:
        entry = expected_accuracy(model, p)
        if entry is not None:
            out[p] = entry
    return out


# ----------------------------------------------------------------------------- measured

LabelledSet = Path | str | Mapping[str, np.ndarray] | tuple[np.ndarray, np.ndarray]
_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


def _member_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> int:
    """The bytes the array of one ``.npy`` member will take, from its header alone; refused when it is
    not a plain numeric array, when it would pass ``max_bytes``, or when the zip's declared size
    cannot hold it (numpy allocates the header's shape before reading a byte)."""
    key = info.filename.removesuffix(".npy")
    if info.file_size > max_bytes:
        raise LabelledSetTooLarge(f"'{key}' expands to {info.file_size} bytes; the limit is {max_bytes}")
    try:
        with zf.open(info) as f:
            version = npy_format.read_magic(f)
            reader = _HEADER_READERS.get(version)
            if reader is None:
                raise LabelledSetError(f"'{key}': .npy format version {version} is not supported (1.0 and 2.0 are)")
            shape, _, dtype = reader(f)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LabelledSetError(f"'{key}' is not a readable .npy array ({exc})") from exc
    if dtype.hasobject or dtype.kind not in "biuf":
        raise LabelledSetError(f"'{key}' has dtype {dtype}; numeric arrays only")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise LabelledSetError(f"'{key}' declares shape {list(shape)} ({nbytes} bytes) but holds {info.file_size}")
    return nbytes


def read_labelled_set(data: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """``x`` and ``y`` of an uploaded ``.npz``, each member's size and shape checked from the zip directory
    and the ``.npy`` header before anything is loaded (a 2 MB file can declare a 2 GiB array). Blocking:
    call it in a worker thread."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise LabelledSetError(f"body must be an .npz with arrays 'x' and 'y' ({exc})") from exc
    with zf:
        members = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
        missing = [k for k in ("x", "y") if k not in members]
        if missing:
            raise LabelledSetError(f"the .npz has no array {missing[0]!r}; it needs 'x' and 'y'")
        total = sum(_member_bytes(zf, members[k], max_bytes) for k in ("x", "y"))
        if total > max_bytes:
            raise LabelledSetTooLarge(f"'x' and 'y' take {total} bytes together; the limit is {max_bytes}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in ("x", "y")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise LabelledSetError(f"body must be an .npz with arrays 'x' and 'y' ({exc})") from exc


def _load_labelled(labelled_set: LabelledSet) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(labelled_set, tuple):
        x, y = labelled_set
    elif isinstance(labelled_set, (str, Path)):
        try:
            with np.load(Path(labelled_set), allow_pickle=False) as npz:
                x, y = npz["x"], npz["y"]
        except (OSError, ValueError, KeyError) as exc:
            raise LabelledSetError(f"labelled set must be an .npz with arrays 'x' and 'y' ({exc})") from exc
    else:
        if "x" not in labelled_set or "y" not in labelled_set:
            raise LabelledSetError("labelled set needs arrays 'x' and 'y'")
        x, y = labelled_set["x"], labelled_set["y"]
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(axis=1)
    if x.shape[0] == 0 or x.shape[0] != y.shape[0] or y.ndim != 1:
        raise LabelledSetError(
            f"labelled set: x has {x.shape[0]} samples, y has shape {y.shape}; need one integer label per sample",
        )
    return x, y.astype(np.int64)


def measure_accuracy(
    model_path: Path,
    precision: Precision | str,
    labelled_set: LabelledSet,
    description: str = "user-supplied labelled samples",
) -> AccuracyEntry:
    """Top-1 (%) of the model at ``model_path`` on ``labelled_set`` (npz / mapping with ``x``
    [N, ...] for the first input and integer labels ``y`` [N]; one-hot also accepted),
    argmax over the first output, with ONNX Runtime on CPU. ``description`` names the set in the
    figure's reference."""
    import onnxruntime as ort

    x, y = _load_labelled(labelled_set)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if len(sess.get_inputs()) != 1:
        raise LabelledSetError("measure_accuracy supports single-input models only")
    dtype = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(uint8)": np.uint8,
        "tensor(int8)": np.int8,
    }.get(inp.type, np.float32)
    expected_rank = len(inp.shape)
    if x.ndim != expected_rank:
        raise LabelledSetError(
            f"x has rank {x.ndim}, the model input {inp.name!r} expects rank {expected_rank} (batch first)",
        )
    fixed_batch = isinstance(inp.shape[0], int)
    step = inp.shape[0] if fixed_batch else min(len(x), 64)
    correct = total = 0
    for start in range(0, len(x), step):
        chunk = x[start : start + step].astype(dtype, copy=False)
        if len(chunk) < step and fixed_batch:
            break  # a fixed batch the set cannot fill; remaining samples are skipped
        logits = np.asarray(sess.run(None, {inp.name: chunk})[0])
        pred = logits.reshape(len(chunk), -1).argmax(axis=1)
        correct += int((pred == y[start : start + len(chunk)]).sum())
        total += len(chunk)
    if total == 0:
        raise LabelledSetError("labelled set too small for the model's fixed batch size")
    return AccuracyEntry(
        top1=round(100.0 * correct / total, 3),
        source="measured",
        reference=f"top-1 on {total} {description}, {Precision(precision)} variant, onnxruntime CPU",
    )
