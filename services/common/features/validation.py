"""What an uploaded model must be to be served: one self-contained, checker-valid ONNX file whose
graph inputs and outputs the wire can carry."""

from __future__ import annotations

import re

import onnx
from onnx import AttributeProto, TensorProto

from services.common.features.graph import iter_graphs
from services.common.features.ops import SPEC_DTYPES
from services.core.errors import AutoScaleError
from services.core.schemas import ErrorDetail, TensorSpec

DEFAULT_MAX_BYTES = 200 * 1024 * 1024


class ModelValidationError(AutoScaleError, ValueError):
    """A model upload that cannot be served; ``field`` names the offending request field."""

    status = 422
    code = "invalid_model"

    def __init__(self, message: str, field: str | None = "file") -> None:
        super().__init__(message, field=field or "file")

    def detail(self, code: str | None = None) -> ErrorDetail:
        return ErrorDetail(code=code or self.code, message=self.message, field=self.field)


class ModelTooLarge(ModelValidationError):
    """An upload over the configured byte limit."""

    status = 413


def _spec(vi: onnx.ValueInfoProto, role: str) -> TensorSpec:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or tt.elem_type not in SPEC_DTYPES:
        kind = TensorProto.DataType.Name(tt.elem_type) if vi.type.HasField("tensor_type") else "non-tensor"
        raise ModelValidationError(
            f"{role} {vi.name!r} has type {kind}; supported: {', '.join(sorted(set(SPEC_DTYPES.values())))}"
        )
    if not tt.HasField("shape"):
        raise ModelValidationError(f"{role} {vi.name!r} has no declared shape (rank is required)")
    shape: list[int | str] = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        else:
            shape.append(d.dim_param or ("batch" if i == 0 else f"d{i}"))
    return TensorSpec(name=vi.name, dtype=SPEC_DTYPES[tt.elem_type], shape=shape)


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Declared graph inputs (initializers excluded) and outputs as wire ``TensorSpec``s."""
    init_names = {t.name for t in model.graph.initializer}
    inputs = [_spec(vi, "input") for vi in model.graph.input if vi.name not in init_names]
    outputs = [_spec(vi, "output") for vi in model.graph.output]
    return inputs, outputs


_EXTERNAL = TensorProto.EXTERNAL


def _external_tensors(model: onnx.ModelProto) -> list[str]:
    names: list[str] = []
    for graph in iter_graphs(model.graph):
        names += [t.name for t in graph.initializer if t.data_location == _EXTERNAL]
        names += [s.values.name for s in graph.sparse_initializer if s.values.data_location == _EXTERNAL]
        for n in graph.node:
            for a in n.attribute:
                if a.type == AttributeProto.TENSOR and a.t.data_location == _EXTERNAL:
                    names.append(a.t.name or n.name)
    return names


def _parse(data: bytes, max_bytes: int) -> onnx.ModelProto:
    """The ModelProto in ``data``, refused when empty, oversized or not a graph with nodes."""
    size = len(data)
    if size == 0:
        raise ModelValidationError("the uploaded model is empty")
    if size > max_bytes:
        raise ModelTooLarge(f"the model is {size} bytes, over the {max_bytes}-byte limit")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:
        raise ModelValidationError(f"not an ONNX model: protobuf decoding failed ({exc})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise ModelValidationError("not an ONNX model: no graph with nodes")
    return model


def load_and_validate(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> onnx.ModelProto:
    """Parse and check an uploaded ONNX file; raises :class:`ModelValidationError`.

    Rejected: empty or oversized payloads, bytes that are not an ONNX ModelProto, tensors
    stored as external data (a single self-contained file is the upload unit, and external
    paths would let an upload point at files on the server), graphs failing
    ``onnx.checker``, graphs without inputs/outputs, and I/O dtypes the wire cannot carry.
    """
    model = _parse(data, max_bytes)
    external = _external_tensors(model)
    if external:
        shown = ", ".join(external[:5]) + (" ..." if len(external) > 5 else "")
        raise ModelValidationError(
            f"tensors stored as external data are not supported ({shown}); embed the weights in the .onnx file"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        msg = re.sub(r"\s+", " ", str(exc)).strip()
        raise ModelValidationError(f"onnx.checker rejected the model: {msg[:500]}") from exc
    init_names = {t.name for t in model.graph.initializer}
    if not [i for i in model.graph.input if i.name not in init_names]:
        raise ModelValidationError("the graph has no inputs")
    if not model.graph.output:
        raise ModelValidationError("the graph has no outputs")
    io_specs(model)  # raises on unsupported I/O dtypes
    return model
