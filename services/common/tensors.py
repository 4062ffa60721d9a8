"""Tensor wire codec, validation against a model's input spec, synthetic inputs, output summaries."""

from __future__ import annotations

import base64
import binascii
import math
import zlib

import numpy as np

from services.core.errors import AutoScaleError
from services.core.schemas import OutputSummary, TensorPayload, TensorSpec

MAX_TENSOR_BYTES = 64 * 1024 * 1024


class TensorError(AutoScaleError):
    """A client tensor that does not fit the model input it is meant for; ``field`` names it."""

    status = 422
    code = "invalid_tensor"


class MissingInput(TensorError):
    code = "missing_input"


class UnknownInput(TensorError):
    code = "unknown_input"


class InvalidDtype(TensorError):
    code = "invalid_dtype"


class InvalidShape(TensorError):
    code = "invalid_shape"


class InvalidTensorData(TensorError):
    code = "invalid_data"


class TensorTooLarge(TensorError):
    status = 413
    code = "too_large"


def encode(array: np.ndarray) -> TensorPayload:
    arr = np.ascontiguousarray(array)
    # model_validate: the dtype is checked against the wire's (a Literal) at run time, as the constructor would.
    return TensorPayload.model_validate(
        {"dtype": str(arr.dtype), "shape": list(arr.shape), "data_b64": base64.b64encode(arr.tobytes()).decode()}
    )


def spec_text(spec: TensorSpec) -> str:
    return f"{spec.name}: {spec.dtype}{list(spec.shape)}"


def check_against(payload: TensorPayload, spec: TensorSpec, field: str) -> None:
    """Raise a 422 naming the field and the expected spec when dtype or shape do not fit."""
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


def decode(payload: TensorPayload, field: str = "input") -> np.ndarray:
    try:
        raw = base64.b64decode(payload.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTensorData(f"{field}.data_b64 is not valid base64: {exc}", field=f"{field}.data_b64") from exc
    dtype = np.dtype(payload.dtype)
    expected = int(np.prod(payload.shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidTensorData(
            f"{field}.data_b64 holds {len(raw)} bytes but {payload.dtype}{payload.shape} needs {expected}",
            field=f"{field}.data_b64",
        )
    if expected > MAX_TENSOR_BYTES:
        raise TensorTooLarge(f"{field} is {expected} bytes; the limit is {MAX_TENSOR_BYTES}", field=field)
    return np.frombuffer(raw, dtype=dtype).reshape(payload.shape)


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
    call then costs tens of microseconds, so this makes as few as it can (about eight)."""
    arr = np.asarray(array)
    flat = arr.ravel()
    top: list[tuple[int, float]] | None = None
    n = flat.size
    total = float(flat.sum(dtype=np.float64)) if n else 0.0
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
        dtype=arr.dtype.name,
        top_k=top,
        mean=mean,
        std=std,
        checksum=total,
    )
