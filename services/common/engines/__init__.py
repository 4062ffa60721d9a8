"""Inference engines behind the runners: ONNX Runtime and Apache TVM, behind one small Protocol.

>>> from services.common.engines import get_engine
>>> m = get_engine("onnxruntime").load(path, threads=2)
>>> outputs = m.run({m.inputs[0].name: x})

Engines are created lazily (importing TVM costs ~1 s) and are process-wide singletons, so the TVM
artefact cache and its counters are shared by every caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from services.common.engines.base import Engine, EngineError, LoadedModel, Support, input_specs, op_types, pick_device
from services.core.extras import EXTRA_OF, MissingExtra

__all__ = [
    "Engine",
    "EngineError",
    "LoadedModel",
    "Support",
    "available_engines",
    "engine_names",
    "get_engine",
    "input_specs",
    "op_types",
    "pick_device",
]


def _onnxruntime() -> Engine:
    from services.common.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine()


def _tvm() -> Engine:
    from services.common.engines.tvm_engine import TvmEngine

    return TvmEngine()


_FACTORIES: dict[str, Callable[[], Engine]] = {"onnxruntime": _onnxruntime, "tvm": _tvm}
_instances: dict[str, Engine] = {}
_failed: dict[str, str] = {}
_lock = threading.Lock()


def engine_names() -> list[str]:
    """Every engine this code knows, installed or not."""
    return list(_FACTORIES)


def get_engine(name: str) -> Engine:
    """The process-wide engine called ``name``; EngineError if unknown or not installed."""
    if name not in _FACTORIES:
        raise EngineError(f"unknown engine {name!r}; known: {', '.join(_FACTORIES)}")
    with _lock:
        if name not in _instances:
            if name in _failed:
                raise EngineError(f"engine {name!r} is unavailable: {_failed[name]}")
            try:
                _instances[name] = _FACTORIES[name]()
            except ImportError as e:  # e.g. a runner image without apache-tvm
                _failed[name] = str(MissingExtra(f"engine {name!r}", e.name)) if e.name in EXTRA_OF else str(e)
                raise EngineError(f"engine {name!r} is unavailable: {_failed[name]}") from e
        return _instances[name]


def available_engines() -> dict[str, Engine]:
    """Engines that import on this host, by name (a missing optional engine is left out)."""
    out: dict[str, Engine] = {}
    for name in _FACTORIES:
        try:
            out[name] = get_engine(name)
        except EngineError:
            continue
    return out
