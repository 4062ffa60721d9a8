"""Engine contract shared by the runners, the benchmark and the CLI.

An :class:`Engine` turns an ONNX file into a :class:`LoadedModel` for one device; a loaded model
runs numpy feeds and returns numpy outputs. Both are Protocols so that tests can stub them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnx

from services.common.features import iter_graphs
from services.core.errors import AutoScaleError
from services.core.schemas import OutputSummary, Precision, Processor, TensorSpec

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})

# Which engine device names can serve a paper processor, best first. Engines report the names in
# devices(); the runner picks the first one both lists share (see pick_device).
PROCESSOR_DEVICES: dict[Processor, tuple[str, ...]] = {
    Processor.cpu: ("cpu",),
    Processor.gpu: ("cuda", "rocm", "dml", "nnapi"),
    Processor.dsp: ("qnn", "nnapi"),
}


class EngineError(AutoScaleError, RuntimeError):
    """An engine could not import, compile, load or run a model (the message says which and why)."""

    status = 500
    code = "engine_error"


@dataclass(frozen=True)
class Support:
    """Answer of :meth:`Engine.supports`: ``ok`` plus a human-readable reason when it is not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to run on one device."""

    inputs: list[TensorSpec]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one inference; outputs in ``output_names`` order. Safe for sequential calls from any thread."""
        ...

    def summarize(self, feeds: dict[str, np.ndarray], top_k: int) -> list[OutputSummary]:
        """Run one inference and return each output's summary (``services.common.tensors.summarize``)."""
        ...


@runtime_checkable
class Engine(Protocol):
    """An inference engine (ONNX Runtime, TVM...)."""

    name: str
    version: str

    def devices(self) -> list[str]:
        """Devices this engine can use on this host, detected at call time (always starts with "cpu")."""
        ...

    def supports(self, model: onnx.ModelProto, precision: Precision) -> Support:
        """Cheap static check (no compile, no session) whether ``model`` can run on this engine."""
        ...

    def load(self, model_path: Path, *, device: str = "cpu", threads: int = 2) -> LoadedModel:
        """Load (compile if needed) ``model_path`` for ``device``; raises :class:`EngineError`."""
        ...


# ----------------------------------------------------------------------------- helpers


def pick_device(engine: Engine, processor: Processor) -> str | None:
    """First device of ``engine`` able to act as ``processor``, or None."""
    have = engine.devices()
    return next((d for d in PROCESSOR_DEVICES[processor] if d in have), None)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (streamed, models can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def op_types(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """(domain, op_type) pairs used by the model; the default domain is reported as ""."""
    return {("" if n.domain == "ai.onnx" else n.domain, n.op_type) for g in iter_graphs(model.graph) for n in g.node}


def np_dtype_name(elem_type: int) -> str:
    """ONNX TensorProto element type -> numpy dtype name ("float32", "int64"...)."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_specs(model: onnx.ModelProto, dim_values: dict[str, int] | None = None) -> list[TensorSpec]:
    """TensorSpecs of the model inputs; symbolic dims stay strings unless ``dim_values`` binds them.

    An unnamed dynamic dim is reported as ``"dim{i}"`` so that it is still a string (symbolic).
    """
    specs = []
    for vi in graph_inputs(model):
        tt = vi.type.tensor_type
        shape: list[int | str] = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            else:
                sym = d.dim_param or f"dim{i}"
                shape.append(dim_values[sym] if dim_values and sym in dim_values else sym)
        dtype = np_dtype_name(tt.elem_type)
        try:
            specs.append(TensorSpec.model_validate({"name": vi.name, "dtype": dtype, "shape": shape}))
        except ValueError as e:  # pydantic: dtype outside the wire contract (bool, float64...)
            raise EngineError(f"input {vi.name!r} has dtype {dtype}, which the mesh cannot carry") from e
    return specs


def check_feeds(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> None:
    """Raise EngineError when feeds miss an input or use the wrong dtype (cheap, before running)."""
    for s in specs:
        if s.name not in feeds:
            raise EngineError(f"missing input {s.name!r} (expected {s.dtype}{s.shape})")
        if feeds[s.name].dtype != np.dtype(s.dtype):
            raise EngineError(f"input {s.name!r} has dtype {feeds[s.name].dtype}, expected {s.dtype}")
