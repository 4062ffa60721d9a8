"""Tensor wire codec, validation against a model's input spec, synthetic inputs, output summaries.

Inputs are checked in two steps. ``check_against`` needs no decoding (dtype, shape, and the
base64 length those imply), so the decider runs it before deciding anything. ``decode`` checks
what only the bytes can tell (valid base64; floats that are all finite: a NaN or an infinity in
an input is refused, 422 naming the field) and runs where the tensor is decoded anyway: in the
runner, or in the decider for an Open Inference Protocol request that arrives as raw bytes.
Outputs are carried as they come, NaN included: ``encode_output`` is the bytes, base64.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from functools import lru_cache

import numpy as np

from services.core.errors import AutoScaleError
from services.core.schemas import ModelInfo, OutputSummary, OutputTensor, TensorPayload, TensorSpec

MAX_TENSOR_BYTES = 64 * 1024 * 1024
# 16 Mi elements (64 MiB of float32): beyond any input of the zoo (Inception v3: 268 k) by far, and
# checked on the declared shape before a byte of data is decoded.
MAX_TENSOR_ELEMENTS = 16 * 1024 * 1024


class TensorError(AutoScaleError):
    """A client tensor that does not fit the model input it is meant for; ``field`` names it."""

    status = 422
    code = "invalid_tensor"


class MissingInput(TensorError):
    code = "missing_input"


class UnknownInput(TensorError):
    code = "unknown_input"


class UnknownOutput(TensorError):
    code = "unknown_output"


class InvalidDtype(TensorError):
    code = "invalid_dtype"


class InvalidShape(TensorError):
    code = "invalid_shape"


class InvalidTensorData(TensorError):
    code = "invalid_data"


class NonFiniteTensor(TensorError):
    code = "non_finite"


class TensorTooLarge(TensorError):
    status = 413
    code = "too_large"


def _little_endian(array: np.ndarray) -> np.ndarray:
    """The array as contiguous little-endian memory (no copy when it already is, as on x86 and ARM)."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def encode(array: np.ndarray) -> TensorPayload:
    arr = _little_endian(array)
    # model_validate: the dtype is checked against the wire's (a Literal) at run time, as the constructor would.
    return TensorPayload.model_validate(
        {"dtype": str(arr.dtype), "shape": list(arr.shape), "data_b64": base64.b64encode(arr.tobytes()).decode()}
    )


@lru_cache(maxsize=64)
def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, remembered: numpy works it out in Python on every read (~3 µs, per output per answer)."""
    return dtype.name


def encode_output(name: str, array: np.ndarray) -> OutputTensor:
    """An output tensor for the wire: its raw little-endian bytes in base64, NaN and infinities as they are."""
    arr = _little_endian(array)
    return OutputTensor(  # validated: faster than model_construct (1.8 against 2.9 µs, measured)
        name=name, dtype=dtype_name(arr.dtype), shape=list(arr.shape), data_b64=base64.b64encode(arr.tobytes()).decode()
    )


def nbytes(dtype: str, shape: list[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def check_finite(array: np.ndarray, field: str) -> None:
    """Refuse a float tensor holding NaN or +-Infinity (422 naming the field and the first bad element)."""
    if array.dtype.kind != "f" or bool(np.isfinite(array).all()):
        return
    bad = np.flatnonzero(~np.isfinite(array.ravel()))
    raise NonFiniteTensor(
        f"{field} holds {bad.size} non-finite value(s) (NaN or +-Infinity), the first at flat index {int(bad[0])}; "
        "inputs must be finite numbers",
        field=field,
    )


def spec_text(spec: TensorSpec) -> str:
    return f"{spec.name}: {spec.dtype}{list(spec.shape)}"


def check_elements(payload: TensorPayload, field: str) -> int:
    """The element count of the declared shape; 413 over ``MAX_TENSOR_ELEMENTS`` (exact integers: no overflow)."""
    elements = math.prod(payload.shape)
    if elements > MAX_TENSOR_ELEMENTS:
        raise TensorTooLarge(
            f"{field}: shape {payload.shape} has {elements} elements; the limit is {MAX_TENSOR_ELEMENTS}",
            field=f"{field}.shape",
        )
    return elements


def input_bytes(info: ModelInfo) -> int:
    """Bytes of one input set of a model (symbolic dims counted as 1): what sizes ``/infer``'s body limit."""
    return sum(math.prod(concrete_shape(s)) * np.dtype(s.dtype).itemsize for s in info.inputs)


def _check_size(payload: TensorPayload, field: str) -> int:
    """The payload's byte count from its declared shape (413 over the limits) after checking that the
    base64 text has exactly the length those bytes take: no decoding needed to refuse a wrong body."""
    size = check_elements(payload, field) * np.dtype(payload.dtype).itemsize
    if size > MAX_TENSOR_BYTES:
        raise TensorTooLarge(f"{field} is {size} bytes; the limit is {MAX_TENSOR_BYTES}", field=field)
    chars = 4 * -(-size // 3)  # standard base64 with padding
    if len(payload.data_b64) != chars:
        raise InvalidTensorData(
            f"{field}.data_b64 has {len(payload.data_b64)} base64 characters but {payload.dtype}{payload.shape} "
            f"is {size} bytes, which take {chars}",
            field=f"{field}.data_b64",
        )
    return size


def check_against(payload: TensorPayload, spec: TensorSpec, field: str) -> None:
    """Raise a 422 naming the field and the expected spec when dtype, shape or the data's length
    do not fit (413: too large; no decoding: the base64 length follows from the byte count)."""
    check_elements(payload, field)  # first: a shape bomb is a 413 whatever else is wrong
    if payload.dtype != spec.dtype:
        raise InvalidDtype(
            f"{field}: dtype {payload.dtype} does not match the model input {spec_text(spec)}", field=f"{field}.dtype"
        )
    if len(payload.shape) != len(spec.shape) or any(
        isinstance(want, int) and want > 0 and got != want for got, want in zip(payload.shape, spec.shape, strict=True)
    ):
        raise InvalidShape(
            f"{field}: shape {payload.shape} does not match the model input {spec_text(spec)}", field=f"{field}.shape"
        )
    _check_size(payload, field)


def decode(payload: TensorPayload, field: str = "input") -> np.ndarray:
    """The array a payload carries (its size checked on the declared shape before any decoding); 422
    naming ``field`` when the data is not base64 of the right length or a float tensor holds NaN or +-Infinity."""
    dtype = np.dtype(payload.dtype).newbyteorder("<")
    expected = _check_size(payload, field)
    try:
        raw = base64.b64decode(payload.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTensorData(f"{field}.data_b64 is not valid base64: {exc}", field=f"{field}.data_b64") from exc
    if len(raw) != expected:  # padding that decodes to fewer bytes
        raise InvalidTensorData(
            f"{field}.data_b64 holds {len(raw)} bytes but {payload.dtype}{payload.shape} needs {expected}",
            field=f"{field}.data_b64",
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(payload.shape)
    check_finite(array, f"{field}.data_b64")
    return array


def concrete_shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]


def synthetic(spec: TensorSpec, seed: int = 0) -> np.ndarray:
    """A deterministic input for load tests: same model, same seed, same bytes."""
    rng = np.random.default_rng(seed + zlib.crc32(spec.name.encode()))
    shape = concrete_shape(spec)
    if spec.dtype in ("int64", "int32"):
        if "mask" in spec.name:
            return np.ones(shape, dtype=spec.dtype)
        return rng.integers(0, 1000, size=shape).astype(spec.dtype)
    if spec.dtype in ("uint8", "int8"):
        return rng.integers(0, 127, size=shape).astype(spec.dtype)
    return rng.standard_normal(shape).astype(spec.dtype)


def summarize(name: str, array: np.ndarray, top_k: int) -> OutputSummary:
    """Shape, moments, checksum and (for a classifier row) the top-k softmax probabilities.

    On every runner response, right after the inference has evicted the CPU caches: each numpy
    call then costs tens of microseconds, so this makes as few as it can (about eight). An output
    holding NaN or +-Infinity has a non-finite sum: it is reported ``finite=False`` with null
    moments and no top-k (``nonfinite_summary``)."""
    arr = np.asarray(array)
    flat = arr.ravel()
    top: list[tuple[int, float]] | None = None
    n = flat.size
    total = float(flat.sum(dtype=np.float64)) if n else 0.0
    if not math.isfinite(total):
        return nonfinite_summary(name, list(arr.shape), dtype_name(arr.dtype))
    mean = total / n if n else 0.0
    d = flat.astype(np.float64) - mean  # two-pass variance, without np.std's Python-level steps
    std = float(np.dot(d, d) / n) ** 0.5 if n else 0.0
    # A classifier head: one row of class scores. Report softmax probabilities of the top k.
    if top_k and arr.ndim == 2 and arr.shape[0] == 1 and arr.shape[1] > 1:
        k = min(top_k, n)
        part = np.argpartition(d, n - k)[n - k :].tolist()  # the k largest (d is flat - mean: same order)
        picked = sorted(
            zip(d[part].tolist(), part, strict=True), key=lambda vi: (-vi[0], vi[1])
        )  # ties: lower index first
        z = float(np.exp(d - picked[0][0]).sum())
        top = [(i, round(math.exp(v - picked[0][0]) / z, 6)) for v, i in picked]
    return OutputSummary.model_construct(  # values made here: no validation pass
        name=name,
        shape=list(arr.shape),
        dtype=dtype_name(arr.dtype),
        top_k=top,
        mean=mean,
        std=std,
        checksum=total,
    )


def nonfinite_summary(name: str, shape: list[int], dtype: str) -> OutputSummary:
    """The summary of an output holding NaN or +-Infinity: no moments, no top-k, ``finite`` false.

    (The sum is taken in float64, which a float32 or float16 tensor cannot overflow: a non-finite
    sum means a non-finite element. Only a float64 output summing past 1.8e308 reads the same.)"""
    return OutputSummary.model_construct(
        name=name, shape=shape, dtype=dtype, top_k=None, mean=None, std=None, checksum=None, finite=False
    )
