"""The Open Inference Protocol's wire format to and from the decider's own request and response.

``decode`` turns a V2 infer request (a JSON object, or with the binary tensor data extension a
JSON header of ``Inference-Header-Content-Length`` bytes followed by the tensors' raw bytes) into
the ``InferRequest`` the native ``/infer`` takes; ``encode`` turns the ``InferResponse`` into the
V2 response, each output as JSON ``data`` or as raw bytes after the header, as the client asked.
Everything else (validation against the model, the decision, the dispatch, the learning) is the
native path's. Errors: ``V2Error`` (400) for a message that is not a well-formed V2 request (bad
framing, bad JSON, a tensor with neither data nor bytes); the shared tensor errors (422, naming the
tensor) for one that does not fit the model or holds NaN/Infinity; a refused parameter is a 422 naming it.

An output that holds NaN or +-Infinity cannot be JSON numbers: it is sent as raw bytes (the
binary extension, ``binary_data_size`` says so) even where JSON was asked for.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from services.common.errors import validation_error_body
from services.common.tensors import (
    MAX_TENSOR_BYTES,
    InvalidDtype,
    InvalidShape,
    InvalidTensorData,
    TensorTooLarge,
    check_finite,
    nbytes,
)
from services.core.errors import AutoScaleError
from services.core.schemas import InferRequest, InferResponse, OutputTensor, TensorPayload
from services.decider.v2.models import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    ResponseOutput,
)

V2_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}
HEADER_LENGTH = b"inference-header-content-length"
# The request parameters read here: AutoScale's controls, the binary extension's, and two of
# Triton's that are hints only (this mesh has no request priority or queue timeout to honour).
CONTROLS = ("qos_ms", "accuracy_min", "streaming", "policy")
KNOWN_PARAMETERS = frozenset({*CONTROLS, "binary_data_output", "priority", "timeout"})
# Which JSON element kinds each numpy kind accepts (numpy's dtype.kind letters).
_ACCEPTS = {"f": "fiub", "i": "iu", "u": "iu", "b": "b"}


class V2Error(AutoScaleError):
    """A message that is not a well-formed Open Inference Protocol request."""

    status = 400
    code = "bad_request"


class UnsupportedEncoding(AutoScaleError):
    status = 415
    code = "unsupported_encoding"


class InvalidParameter(AutoScaleError):
    """A request, input or output parameter the mesh does not read, or a control out of its range."""

    status = 422
    code = "invalid_parameter"


def datatype(dtype: str) -> str:
    """The V2 datatype of a numpy dtype name (FP32 for float32, ...)."""
    return NUMPY_TO_V2.get(dtype, dtype.upper())


@dataclass(frozen=True, slots=True)
class Decoded:
    """A V2 request as the native path takes it, plus how the client wants its outputs."""

    request: InferRequest
    id: str | None
    binary: dict[str, bool]  # per requested output
    binary_default: bool  # outputs not named in the request


def decode(model: str, body: bytes, header_length: bytes | None, content_encoding: bytes | None) -> Decoded:
    """The V2 request in ``body`` as an ``InferRequest`` for ``model``."""
    if content_encoding not in (None, b"identity"):
        raise UnsupportedEncoding(
            f"Content-Encoding {content_encoding.decode(errors='replace')} is not supported: send the body uncompressed"
        )
    head, tail = _split(body, header_length)
    try:
        req = InferenceRequest.model_validate_json(head)
    except ValidationError as exc:
        raise V2Error(_message(exc)) from None
    for name in req.parameters:
        if name not in KNOWN_PARAMETERS:
            raise InvalidParameter(
                f"parameters.{name}: unknown parameter; AutoScale reads {', '.join(CONTROLS)} (and binary_data_output)",
                field=f"parameters.{name}",
            )
    inputs = _inputs(req.inputs, tail)
    binary_default = req.parameters.get("binary_data_output") is True
    binary = {}
    for out in req.outputs or ():
        for key in out.parameters:
            if key != "binary_data":
                raise InvalidParameter(
                    f"outputs.{out.name}.parameters.{key}: not supported (the mesh offers binary_data only)",
                    field=f"outputs.{out.name}.parameters.{key}",
                )
        binary[out.name] = out.parameters.get("binary_data", binary_default) is True
    controls = {k: req.parameters[k] for k in CONTROLS if k in req.parameters}
    try:
        native = InferRequest.model_validate(
            {"model": model, "inputs": inputs, "outputs": [o.name for o in req.outputs] if req.outputs else None}
            | controls
        )
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        prefix = "parameters." if loc and loc[0] in CONTROLS else ""
        raise InvalidParameter(_message(exc, prefix), field=prefix + ".".join(map(str, loc))) from None
    return Decoded(native, req.id, binary, binary_default)


def _split(body: bytes, header_length: bytes | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary part (empty without the extension; a view, not a copy)."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if n < 0:
        raise V2Error(
            f"Inference-Header-Content-Length must be a byte count, got {header_length.decode(errors='replace')!r}"
        )
    if n > len(body):
        raise V2Error(f"Inference-Header-Content-Length {n} is larger than the body ({len(body)} bytes)")
    return body[:n], memoryview(body)[n:]


def _inputs(inputs: list[RequestInput], binary: memoryview) -> dict[str, TensorPayload]:
    """Each input as the native wire's tensor, after the checks only its V2 form allows."""
    out: dict[str, TensorPayload] = {}
    offset = 0
    for t in inputs:
        field = f"inputs.{t.name}"
        if t.name in out:
            raise V2Error(f"{field}: input {t.name!r} is given twice")
        dtype = V2_TO_NUMPY.get(t.datatype)
        if dtype is None:
            raise InvalidDtype(
                f"{field}: datatype {t.datatype!r} is not one of {', '.join(V2_TO_NUMPY)}", field=f"{field}.datatype"
            )
        if any(d <= 0 for d in t.shape):
            raise InvalidShape(f"{field}: every dimension of shape {t.shape} must be positive", field=f"{field}.shape")
        size = nbytes(dtype, t.shape)
        if size > MAX_TENSOR_BYTES:
            raise TensorTooLarge(f"{field} is {size} bytes; the limit is {MAX_TENSOR_BYTES}", field=field)
        for key in t.parameters:
            if key != "binary_data_size":
                raise InvalidParameter(f"{field}.parameters.{key}: not supported", field=f"{field}.parameters.{key}")
        declared = t.parameters.get("binary_data_size")
        if declared is not None:
            if t.data is not None:
                raise V2Error(f"{field}: give data or parameters.binary_data_size, not both")
            if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
                raise V2Error(f"{field}.parameters.binary_data_size must be a byte count, got {declared!r}")
            if offset + declared > len(binary):
                raise V2Error(
                    f"{field}: binary_data_size {declared} runs past the end of the body: the binary part holds "
                    f"{len(binary)} bytes and the inputs before this one use {offset} (truncated body?)"
                )
            if declared != size:
                raise InvalidTensorData(
                    f"{field}: binary_data_size is {declared} bytes but {t.datatype}{t.shape} takes {size}",
                    field=f"{field}.parameters.binary_data_size",
                )
            raw = binary[offset : offset + declared]
            offset += declared
            array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        elif t.data is not None:
            array = _from_json(t.data, dtype, t.shape, field)
            raw = memoryview(array.tobytes())
        else:
            raise V2Error(f"{field}: give its elements in data or its bytes with parameters.binary_data_size")
        check_finite(array, field)
        data_b64 = base64.b64encode(raw).decode()
        # A datatype outside the native wire's set is refused by the shared check against the model.
        out[t.name] = TensorPayload.model_construct(dtype=dtype, shape=list(t.shape), data_b64=data_b64)  # type: ignore[arg-type]
    if offset != len(binary):
        raise V2Error(
            f"the body has {len(binary) - offset} bytes after the inputs' binary data "
            f"(their binary_data_size values add up to {offset})"
        )
    return out


def _from_json(data: list[Any], dtype: str, shape: list[int], field: str) -> np.ndarray:
    """JSON elements (flat or nested, row-major) as a little-endian array of ``dtype``."""
    want = np.dtype(dtype)
    try:
        got = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nesting
        raise InvalidTensorData(f"{field}.data is not a regular array: {exc}", field=f"{field}.data") from None
    n = int(np.prod(shape, dtype=np.int64))
    if got.size != n:
        raise InvalidTensorData(
            f"{field}.data holds {got.size} elements but shape {shape} takes {n}", field=f"{field}.data"
        )
    if got.size and got.dtype.kind not in _ACCEPTS.get(want.kind, ""):
        raise InvalidTensorData(
            f"{field}.data: {got.dtype.name} elements cannot be {datatype(dtype)}", field=f"{field}.data"
        )
    if want.kind in "iu" and got.size:
        info = np.iinfo(want)
        if int(got.min()) < info.min or int(got.max()) > info.max:
            raise InvalidTensorData(
                f"{field}.data: an element is outside {datatype(dtype)}'s range {info.min}..{info.max}",
                field=f"{field}.data",
            )
    return np.ascontiguousarray(got.reshape(shape), dtype=want.newbyteorder("<"))


def _message(exc: ValidationError, prefix: str = "") -> str:
    message = validation_error_body(exc.errors())["error"]["message"]  # type: ignore[index]
    return prefix + str(message)


# ---------------------------------------------------------------------------------------- response


def encode(decoded: Decoded, response: InferResponse, version: str | None) -> tuple[bytes, int | None]:
    """The V2 response body and, when outputs travel as raw bytes, the JSON header's length."""
    outputs: list[ResponseOutput] = []
    chunks: list[bytes] = []
    for o in response.outputs:
        if not isinstance(o, OutputTensor):  # the V2 door always asks for tensors
            raise TypeError(f"output {o.name} is a summary")
        raw = base64.b64decode(o.data_b64)
        data = None
        if not decoded.binary.get(o.name, decoded.binary_default):
            array = np.frombuffer(raw, dtype=np.dtype(o.dtype).newbyteorder("<"))
            if array.dtype.kind != "f" or bool(np.isfinite(array).all()):
                data = array.tolist()
        if data is None:
            chunks.append(raw)
            params: Parameters | None = {"binary_data_size": len(raw)}
        else:
            params = None
        outputs.append(
            ResponseOutput.model_construct(  # values made here: no validation pass over the data
                name=o.name, shape=o.shape, datatype=datatype(o.dtype), parameters=params, data=data
            )
        )
    header = InferenceResponse.model_construct(
        model_name=response.model,
        model_version=version,
        id=decoded.id if decoded.id is not None else response.request_id,
        parameters=decision_parameters(response),
        outputs=outputs,
    ).model_dump_json(exclude_none=True)
    head = header.encode()
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def decision_parameters(r: InferResponse) -> Parameters:
    """AutoScale's decision, flat (V2 parameter values are scalars)."""
    return {
        "request_id": r.request_id,
        "policy": r.policy,
        "target": r.target_id,
        "runner": r.target.runner.value,
        "processor": r.target.processor.value,
        "precision": r.target.precision.value,
        **({"dvfs": r.target.dvfs} if r.target.dvfs is not None else {}),
        "engine": r.target.engine,
        "device": r.device,
        "explored": r.explored,
        "reward": r.reward,
        "latency_ms": r.latency_ms,
        "target_latency_ms": r.target_latency_ms,
        "latency_source": r.latency_source,
        "inference_ms": r.inference_ms,
        "transfer_ms": r.transfer_ms,
        "host_exec_ms": r.host_exec_ms,
        "energy_mj": r.energy_mj,
        "energy_source": r.energy_source,
        "accuracy": r.accuracy,
        "accuracy_source": r.accuracy_source,
        "qos_ms": r.qos_ms,
        "qos_met": r.qos_met,
        "accuracy_met": r.accuracy_met,
        "state": r.state.index,
    }


def error_body(message: str) -> bytes:
    """``{"error": "<message>"}``: the protocol's error object."""
    return ErrorResponse(error=message).model_dump_json().encode()
