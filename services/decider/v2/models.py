"""The Open Inference Protocol's JSON objects (REST), as the decider reads and writes them.

https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol ; parameter
values are booleans, numbers or strings. Numbers are finite (``WireModel``), as everywhere in the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool, StrictInt

from services.core.schemas import WireModel

ParameterValue = StrictBool | StrictInt | float | str
Parameters = dict[str, ParameterValue]


class RequestInput(WireModel):
    name: str
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(description="BOOL, UINT8, INT8, INT32, INT64, FP16, FP32, FP64, ...")
    parameters: Parameters = Field(default_factory=dict, description="binary_data_size: bytes in the binary part")
    data: list[Any] | None = Field(None, description="the elements, flat or nested, row-major")


class RequestOutput(WireModel):
    name: str
    parameters: Parameters = Field(default_factory=dict, description="binary_data: return it as raw bytes")


class InferenceRequest(WireModel):
    """``POST /v2/models/{name}/infer``: the JSON object (the header, with the binary extension)."""

    id: str | None = None
    parameters: Parameters = Field(
        default_factory=dict,
        description="AutoScale's controls: qos_ms, accuracy_min, streaming, policy; and binary_data_output",
    )
    inputs: list[RequestInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestOutput] | None = Field(None, min_length=1, max_length=64)


class ResponseOutput(WireModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(WireModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: Parameters = Field(description="the decision: target, latency, energy and their sources, reward, ...")
    outputs: list[ResponseOutput]


class TensorMetadata(WireModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a variable dimension")


class ModelMetadata(WireModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(WireModel):
    name: str
    version: str
    extensions: list[str]


class Live(WireModel):
    live: bool


class Ready(WireModel):
    ready: bool


class ModelReady(WireModel):
    name: str
    ready: bool


class ErrorResponse(WireModel):
    """Every V2 error: ``{"error": "<message>"}``."""

    error: str
