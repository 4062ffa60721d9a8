"""Tensor wire codec, validation against a model's input spec, synthetic inputs, output summaries."""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np

from services.common.errors import ApiError
from services.common.schemas import OutputSummary, TensorPayload, TensorSpec

MAX_TENSOR_BYTES = 64 * 1024 * 1024


def encode(array: np.ndarray) -> TensorPayload:
    arr = np.ascontiguousarray(array)
    return TensorPayload(dtype=str(arr.dtype), shape=list(arr.shape), data_b64=base64.b64encode(arr.tobytes()).decode())  # type: ignore[arg-type]


def spec_text(spec: TensorSpec) -> str:
    return f"{spec.name}: {spec.dtype}{list(spec.shape)}"


def check_against(payload: TensorPayload, spec: TensorSpec, field: str) -> None:
    """Raise a 422 naming the field and the expected spec when dtype or shape do not fit."""
    if payload.dtype != spec.dtype:
        raise ApiError(422, "invalid_dtype", f"{field}: dtype {payload.dtype} does not match the model input {spec_text(spec)}", field=f"{field}.dtype")
    if len(payload.shape) != len(spec.shape) or any(
        isinstance(want, int) and want > 0 and got != want for got, want in zip(payload.shape, spec.shape)
    ):
        raise ApiError(422, "invalid_shape", f"{field}: shape {payload.shape} does not match the model input {spec_text(spec)}", field=f"{field}.shape")


def decode(payload: TensorPayload, field: str = "input") -> np.ndarray:
    try:
        raw = base64.b64decode(payload.data_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_data", f"{field}.data_b64 is not valid base64: {exc}", field=f"{field}.data_b64") from exc
    dtype = np.dtype(payload.dtype)
    expected = int(np.prod(payload.shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ApiError(
            422, "invalid_data",
            f"{field}.data_b64 holds {len(raw)} bytes but {payload.dtype}{payload.shape} needs {expected}",
            field=f"{field}.data_b64",
        )
    if expected > MAX_TENSOR_BYTES:
        raise ApiError(413, "too_large", f"{field} is {expected} bytes; the limit is {MAX_TENSOR_BYTES}", field=field)
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

    On every runner response: kept to a handful of numpy calls (each costs microseconds)."""
    arr = np.asarray(array)
    flat = arr.astype(np.float64, copy=False).ravel()
    top: list[tuple[int, float]] | None = None
    n = flat.size
    total = float(flat.sum()) if n else 0.0
    mean = total / n if n else 0.0
    if n:  # two-pass variance, without np.std's half-dozen Python-level steps
        d = flat - mean
        std = float(np.sqrt(np.dot(d, d) / n))
    else:
        std = 0.0
    # A classifier head: one row of class scores. Report softmax probabilities of the top k.
    if top_k and arr.ndim == 2 and arr.shape[0] == 1 and arr.shape[1] > 1:
        k = min(top_k, n)
        idx = np.argpartition(flat, n - k)[n - k:]  # the k largest scores, unordered
        idx = idx[np.argsort(-flat[idx], kind="stable")]
        e = np.exp(flat - flat[idx[0]])
        z = float(e.sum())
        top = [(int(i), round(float(e[i]) / z, 6)) for i in idx.tolist()]
    return OutputSummary.model_construct(  # values made here: no validation pass
        name=name, shape=list(arr.shape), dtype=str(arr.dtype), top_k=top, mean=mean, std=std, checksum=total,
    )
