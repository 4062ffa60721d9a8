"""ONNX Runtime engine: one InferenceSession per loaded model, execution provider chosen per device."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx.external_data_helper import uses_external_data

from services.common.engines.base import DEFAULT_DOMAINS, EngineError, Support, check_feeds, np_dtype_name, op_types
from services.common.engines.summary_graph import (
    TOP_K_FEED,
    SummarySpec,
    add_summaries,
    read_summaries,
    summary_outputs,
    top_k_feeds,
)
from services.common.tensors import summarize
from services.core.schemas import OutputSummary, Precision, TensorSpec

log = logging.getLogger("autoscale.engines")

# Engine device name -> execution providers to try, best first. CPU is always appended as the
# fallback for ops the accelerator lacks (ORT partitions the graph itself).
_DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cuda": ("CUDAExecutionProvider",),
    "rocm": ("ROCMExecutionProvider", "MIGraphXExecutionProvider"),
    "dml": ("DmlExecutionProvider",),
    "nnapi": ("NnapiExecutionProvider",),
    "qnn": ("QNNExecutionProvider",),
}
# QNN needs to be told which backend library to drive; HTP is the Hexagon DSP (the paper's "DSP").
_PROVIDER_OPTIONS: dict[str, dict[str, str]] = {"QNNExecutionProvider": {"backend_path": "libQnnHtp.so"}}
# Custom-op domains ORT ships kernels for; anything else needs a custom-op library we do not load.
_KNOWN_DOMAINS = DEFAULT_DOMAINS | {"ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.training"}


def _with_summaries(model_path: Path) -> tuple[bytes, list[SummarySpec]] | None:
    """The model with in-graph output summaries, serialised; None where it does not apply (a model
    with external data is loaded from its path)."""
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:
        return None  # the session load below reports what is wrong with the file
    if any(uses_external_data(t) for t in model.graph.initializer):
        return None
    rewritten = add_summaries(model)
    if rewritten is None:
        return None
    return rewritten[0].SerializeToString(), rewritten[1]


def _spec_from_nodearg(arg: Any) -> TensorSpec:
    """NodeArg ('tensor(float)', [None, 3, 224, 224]) -> TensorSpec; unknown dims become 'dim{i}'."""
    elem = onnx.TensorProto.DataType.Value(arg.type[len("tensor(") : -1].upper())
    shape: list[int | str] = [d if isinstance(d, int) else (d or f"dim{i}") for i, d in enumerate(arg.shape)]
    try:
        # Validated, not constructed: the dtype may be one the mesh cannot carry.
        return TensorSpec.model_validate({"name": arg.name, "dtype": np_dtype_name(elem), "shape": shape})
    except ValueError as e:
        raise EngineError(f"input {arg.name!r} has type {arg.type}, which the mesh cannot carry") from e


class OrtLoadedModel:
    """An InferenceSession plus its I/O description.

    ``specs``: the session's graph also computes each output's summary (``summary_graph``);
    ``summarize`` then fetches those few scalars instead of the tensors."""

    def __init__(self, session: ort.InferenceSession, device: str, specs: list[SummarySpec] | None = None) -> None:
        self.session = session
        self.device = device
        self.providers: list[str] = session.get_providers()
        self.specs = specs
        self.inputs: list[TensorSpec] = [
            _spec_from_nodearg(a) for a in session.get_inputs() if not a.name.startswith(TOP_K_FEED)
        ]
        self.output_names: list[str] = [s.name for s in specs] if specs else [o.name for o in session.get_outputs()]
        self._summary_names = summary_outputs(specs) if specs else []
        # InferenceSession.run is thread-safe already; the lock only serialises calls so that two
        # runner requests do not fight over the same intra-op thread pool (and skew latencies).
        self._lock = threading.Lock()

    def _run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            try:
                return list(self.session.run(names, feeds))
            except Exception as e:  # ORT raises its own pybind exception types
                raise EngineError(f"onnxruntime run failed: {e}") from e

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        check_feeds(self.inputs, feeds)
        return self._run(self.output_names, feeds)

    def summarize(self, feeds: dict[str, np.ndarray], top_k: int) -> list[OutputSummary]:
        check_feeds(self.inputs, feeds)
        if not self.specs:
            return [
                summarize(n, o, top_k)
                for n, o in zip(self.output_names, self._run(self.output_names, feeds), strict=True)
            ]
        values = self._run(self._summary_names, {**feeds, **top_k_feeds(self.specs, top_k)})
        return read_summaries(self.specs, values, top_k)


@functools.cache
def _preload_cuda() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels of ``onnxruntime-gpu[cuda,cudnn]`` (the ``gpu`` extra)
    before the first CUDA session: ONNX Runtime does not search site-packages on its own. With a
    system-wide CUDA it finds nothing there and the loader's usual path applies."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # a missing library shows again, with its name, when the session fails
        log.warning("onnxruntime.preload_dlls failed: %s", exc)


class OnnxRuntimeEngine:
    """ONNX Runtime with the CPU provider, or CUDA / ROCm / DML / NNAPI / QNN when this build has them."""

    name = "onnxruntime"
    version: str = ort.__version__

    def devices(self) -> list[str]:
        available = set(ort.get_available_providers())
        return ["cpu"] + [dev for dev, provs in _DEVICE_PROVIDERS.items() if available.intersection(provs)]

    def providers_for(self, device: str) -> list[str | tuple[str, dict[str, str]]]:
        """Provider list for an InferenceSession on ``device`` (accelerator first, CPU fallback)."""
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device not in _DEVICE_PROVIDERS:
            raise EngineError(f"unknown device {device!r}; onnxruntime knows cpu, {', '.join(_DEVICE_PROVIDERS)}")
        available = ort.get_available_providers()
        chosen = next((p for p in _DEVICE_PROVIDERS[device] if p in available), None)
        if chosen is None:
            raise EngineError(f"device {device!r} unavailable: this onnxruntime build offers {available}")
        if chosen == "CUDAExecutionProvider":
            _preload_cuda()
        first: str | tuple[str, dict[str, str]] = (
            (chosen, _PROVIDER_OPTIONS[chosen]) if chosen in _PROVIDER_OPTIONS else chosen
        )
        return [first, "CPUExecutionProvider"]

    def supports(self, model: onnx.ModelProto, precision: Precision) -> Support:
        """Static check of IR version, opsets and op schemas; ORT runs fp32, fp16 and QDQ/QOperator int8."""
        if model.ir_version > onnx.IR_VERSION:
            return Support(False, f"IR version {model.ir_version} is newer than this onnx ({onnx.IR_VERSION})")
        opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
        max_opset = onnx.defs.onnx_opset_version()
        if opsets.get("", 0) > max_opset:
            return Support(False, f"opset {opsets['']} is newer than supported ({max_opset})")
        for domain, op in sorted(op_types(model)):
            if domain not in _KNOWN_DOMAINS:
                return Support(False, f"op {op} is in custom domain {domain!r} (needs a custom-op library)")
            if domain in DEFAULT_DOMAINS or domain == "ai.onnx.ml":
                # get_schema(max_inclusive_version) fails when no version of the op exists at that opset.
                try:
                    onnx.defs.get_schema(op, opsets.get(domain, max_opset), domain)
                except onnx.defs.SchemaError:
                    return Support(
                        False, f"op {op} does not exist at opset {opsets.get(domain)} of {domain or 'ai.onnx'}"
                    )
        return Support(True)

    def load(self, model_path: Path, *, device: str = "cpu", threads: int = 2) -> OrtLoadedModel:
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1  # sequential executor: one request at a time per model
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Pool threads that spin after a run steal the core the server's event loop needs to answer
        # (measured: runner /run 1.7-2.6x raw ORT with spinning on, 2 cores); wake them on demand instead.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: QDQ models otherwise warn about every unused initializer
        providers = self.providers_for(device)
        specs: list[SummarySpec] | None = None
        session: ort.InferenceSession | None = None
        augmented = _with_summaries(model_path)
        if augmented is not None:
            try:
                session = ort.InferenceSession(augmented[0], so, providers=providers)
                specs = augmented[1]
            except Exception as e:  # a model the rewrite does not suit: serve it as it is
                log.warning("in-graph output summaries off for %s: %s", model_path.name, e)
        if session is None:
            try:
                session = ort.InferenceSession(str(model_path), so, providers=providers)
            except Exception as e:
                raise EngineError(f"onnxruntime could not load {model_path}: {e}") from e
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if wanted not in session.get_providers():
            # ORT silently drops a provider whose shared libraries fail to load (e.g. no CUDA driver).
            raise EngineError(f"{wanted} failed to initialise for {device!r}; session has {session.get_providers()}")
        return OrtLoadedModel(session, device, specs)
