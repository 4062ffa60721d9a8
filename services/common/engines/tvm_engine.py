"""Apache TVM engine: Relax ONNX import -> compile -> shared library cached on disk -> Relax VM.

Compiling is slow (seconds to minutes), so every artefact is exported with ``export_library`` and
cached under ``AUTOSCALE_TVM_CACHE`` (default ``<data_dir>/tvm_cache``), keyed by the model bytes, the
target, the TVM version, the bound input shapes and the tuning database used (if any). A runner
restart then only ``load_module``s the ``.so``.

When ``services.common.engines.tune`` produced a MetaSchedule database for the model+target (under
``AUTOSCALE_TVM_TUNING``, default ``<cache>/tuning``), the compile applies it; otherwise it is the
default (untuned) pipeline, which is far slower than ONNX Runtime on CPU (unscheduled loops).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# TVM caps its CPU thread pool at TVM_NUM_THREADS when the pool is first created; without it an x86
# host gets hardware_concurrency()/2 threads (1 on a 2-core VM) and runtime.config_threadpool cannot
# go higher. Set it before tvm starts any pool; loads then narrow it to their `threads`.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

import numpy as np
import onnx
import tvm
from tvm import relax

from services.common.engines.base import (
    DEFAULT_DOMAINS,
    EngineError,
    Support,
    check_feeds,
    file_sha256,
    graph_inputs,
    input_specs,
    op_types,
)
from services.common.tensors import summarize
from services.core.schemas import OutputSummary, Precision, TensorSpec

CACHE_ENV = "AUTOSCALE_TVM_CACHE"
TUNING_ENV = "AUTOSCALE_TVM_TUNING"
# Bump when the compile recipe below changes, so stale artefacts are not reused.
PIPELINE_VERSION = 1

# Ops the Relax ONNX frontend of TVM 0.27 cannot import (verified in tests/test_engines.py), with the
# reason shown to users. Ops missing from the frontend's converter table are refused too (generic
# reason); this list exists for the common ones so the message says what to do instead.
DENY: dict[str, str] = {
    **dict.fromkeys(("LSTM", "GRU", "RNN"), "recurrent op, no converter in TVM's Relax ONNX frontend"),
    **dict.fromkeys(
        (
            "QLinearConv",
            "QLinearMatMul",
            "QGemm",
            "QLinearAdd",
            "QLinearMul",
            "QLinearConcat",
            "QLinearAveragePool",
            "QLinearGlobalAveragePool",
            "QLinearSigmoid",
            "QLinearLeakyRelu",
            "QLinearSoftmax",
            "QAttention",
            "ConvInteger",
            "DynamicQuantizeMatMul",
            "DynamicQuantizeLSTM",
            "MatMulIntegerToFloat",
        ),
        "QOperator int8 op, no converter in TVM's Relax ONNX frontend (quantise in QDQ format instead)",
    ),
}


def _frontend_ops() -> frozenset[str] | None:
    """Op types the installed Relax ONNX frontend has converters for (None if that table moved)."""
    try:
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

        return frozenset(_get_convert_map()) | {"Constant", "If"}
    except Exception:  # private API: fall back to the deny-list alone
        return None


_FRONTEND_OPS = _frontend_ops()


# ----------------------------------------------------------------------------- locations & targets


def default_cache_dir() -> Path:
    """``$AUTOSCALE_TVM_CACHE``, else ``<settings.data_dir>/tvm_cache`` (``var/tvm_cache``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from services.common.settings import get_settings

    return get_settings().data_dir / "tvm_cache"


def default_tuning_dir(cache_dir: Path | None = None) -> Path:
    """``$AUTOSCALE_TVM_TUNING``, else ``<cache>/tuning``: where tune() writes and load() looks."""
    env = os.environ.get(TUNING_ENV)
    return Path(env) if env else (cache_dir or default_cache_dir()) / "tuning"


def make_target(device: str = "cpu", threads: int = 2) -> tvm.target.Target:
    """Compilation target for ``device``: host-CPU LLVM (native ISA via mcpu), or CUDA with that host."""
    cpu = tvm.target.Target(
        {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": max(1, threads)}
    )
    if device == "cpu":
        return cpu
    if device == "cuda":
        return tvm.target.Target(tvm.target.Target.from_device(tvm.cuda(0)), host=cpu)
    raise EngineError(f"unknown TVM device {device!r} (cpu, cuda)")


def target_family(target: tvm.target.Target) -> str:
    """Tuning databases are per ISA, not per thread count: 'llvm-emeraldrapids', 'cuda-sm_90'."""
    attrs = target.attrs
    detail = attrs.get("mcpu") or attrs.get("arch") or "generic"
    return f"{target.kind.name}-{detail}"


def tuning_db_dir(root: Path, model_sha: str, target: tvm.target.Target) -> Path:
    """Directory of the MetaSchedule JSON database for one model (by content) on one target family."""
    return root / f"{model_sha[:16]}-{target_family(target)}"


def has_tuning_db(db_dir: Path) -> bool:
    rec = db_dir / "database_tuning_record.json"
    return rec.is_file() and rec.stat().st_size > 0 and (db_dir / "database_workload.json").is_file()


def _device(device: str) -> Any:
    return tvm.cpu(0) if device == "cpu" else tvm.cuda(0)


# ----------------------------------------------------------------------------- import


def import_onnx(
    model: onnx.ModelProto, dim_values: dict[str, int] | None = None
) -> tuple[tvm.IRModule, list[TensorSpec]]:
    """ONNX -> Relax IRModule with static shapes (symbolic dims bound via ``dim_values``, default 1).

    TVM compiles for fixed shapes (MetaSchedule tunes them), so e.g. the batch dim becomes 1; the
    returned specs are what the compiled function accepts.
    """
    raw = input_specs(model)
    bound = {str(d): 1 for s in raw for d in s.shape if isinstance(d, str)} | (dim_values or {})
    specs = input_specs(model, bound)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the frontend re-warns every onnx.checker nit
            from tvm.relax.frontend.onnx import from_onnx

            mod = from_onnx(
                model,
                shape_dict={s.name: list(s.shape) for s in specs},
                dtype_dict={s.name: s.dtype for s in specs},
                keep_params_in_input=False,
            )
    except Exception as e:
        raise EngineError(f"TVM Relax ONNX frontend failed: {type(e).__name__}: {_last_line(e)}") from e
    return mod, specs


def _last_line(e: BaseException) -> str:
    """TVM errors carry a C++ backtrace; the last non-empty line is the message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else repr(e)


def compile_module(mod: tvm.IRModule, target: tvm.target.Target, db_dir: Path | None = None) -> Any:
    """Relax module -> VM executable; applies the MetaSchedule database in ``db_dir`` when given."""
    try:
        if db_dir is None:
            return tvm.compile(mod, target=target)
        from tvm.s_tir import meta_schedule as ms

        db = ms.database.JSONDatabase(work_dir=str(db_dir), allow_missing=False)
        return ms.relax_integration.compile_relax(db, mod, target, params=None)
    except Exception as e:
        raise EngineError(f"TVM compile failed for {target}: {type(e).__name__}: {_last_line(e)}") from e


# ----------------------------------------------------------------------------- loaded model


class _PoolConf(threading.local):
    """config_threadpool acts on the calling thread's pool: what each thread's was set to (None: not yet)."""

    n: int | None = None


_pool_conf = _PoolConf()


def _ensure_threads(n: int) -> None:
    if _pool_conf.n != n:
        tvm.get_global_func("runtime.config_threadpool")(1, n)  # 1 = all (big) cores, n workers
        _pool_conf.n = n


@dataclass
class CompileInfo:
    """How a TvmLoadedModel came to be (for the benchmark and the runner's /targets)."""

    artifact: Path
    from_cache: bool
    tuned: bool
    load_s: float
    compile_s: float
    target: str


class TvmLoadedModel:
    """A compiled artefact in a Relax VM on one device."""

    def __init__(
        self, lib: Any, device: str, threads: int, inputs: list[TensorSpec], output_names: list[str], info: CompileInfo
    ) -> None:
        self.device = device
        self.threads = threads
        self.inputs = inputs
        self.output_names = output_names
        self.info = info
        self._dev = _device(device)
        self._vm = relax.VirtualMachine(lib, self._dev)
        self._main = self._vm["main"]
        self._lib = lib  # keep the module alive as long as the VM
        self._lock = threading.Lock()  # the Relax VM is not re-entrant

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        check_feeds(self.inputs, feeds)
        for s in self.inputs:
            if tuple(feeds[s.name].shape) != tuple(s.shape):
                raise EngineError(f"input {s.name!r} has shape {feeds[s.name].shape}, TVM compiled {s.shape}")
        with self._lock:
            if self.device == "cpu":
                _ensure_threads(self.threads)
            try:
                args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[s.name]), device=self._dev) for s in self.inputs]
                out = self._main(*args)
            except Exception as e:
                raise EngineError(f"TVM run failed: {_last_line(e)}") from e
        outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)  # a tuple for multi-output graphs
        return [o.numpy() for o in outs]

    def summarize(self, feeds: dict[str, np.ndarray], top_k: int) -> list[OutputSummary]:
        return [summarize(n, o, top_k) for n, o in zip(self.output_names, self.run(feeds), strict=True)]


# ----------------------------------------------------------------------------- engine


class TvmEngine:
    """Apache TVM (Relax) engine with an on-disk artefact cache and optional MetaSchedule tuning."""

    name = "tvm"
    version: str = tvm.__version__

    def __init__(
        self,
        cache_dir: Path | None = None,
        tuning_dir: Path | None = None,
        dim_values: dict[str, int] | None = None,
    ) -> None:
        """``dim_values`` binds symbolic input dims (e.g. {"seq": 128}); unnamed ones default to 1."""
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._tuning_dir = Path(tuning_dir) if tuning_dir else None
        self.dim_values = dict(dim_values or {})
        self.compiles = 0  # artefacts compiled by this engine (tests use it to prove cache hits)
        self.cache_hits = 0
        self._lock = threading.Lock()  # one compile at a time: they are CPU-bound and memory-hungry

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir or default_cache_dir()

    @property
    def tuning_dir(self) -> Path:
        return self._tuning_dir or default_tuning_dir(self._cache_dir)

    def devices(self) -> list[str]:
        devs = ["cpu"]
        try:
            if tvm.cuda(0).exist:
                devs.append("cuda")
        except Exception:  # a build without the CUDA runtime raises instead of answering False
            pass
        return devs

    def supports(self, model: onnx.ModelProto, precision: Precision) -> Support:
        """Op-list check against DENY and the frontend's converter table; no import, no compile.

        Verified to import and match ONNX Runtime (tests): fp32 CNN/transformer ops, QDQ int8
        (QuantizeLinear/DequantizeLinear, per-channel too), ORT dynamic quantisation of MatMul
        (DynamicQuantizeLinear + MatMulInteger), and fp16 graphs with fp32 I/O on CPU.
        """
        found = op_types(model)
        for domain, op in sorted(found):
            if op in DENY:
                return Support(False, f"op {op}: {DENY[op]}")
            if domain not in DEFAULT_DOMAINS and domain != "com.microsoft":
                return Support(False, f"op {op} of custom domain {domain!r} is not importable by TVM")
            if _FRONTEND_OPS is not None and op not in _FRONTEND_OPS:
                return Support(False, f"op {op} has no converter in TVM {self.version}'s Relax ONNX frontend")
        for vi in graph_inputs(model):
            if vi.type.WhichOneof("value") != "tensor_type":
                return Support(False, f"input {vi.name!r} is not a tensor (sequence/map inputs are unsupported)")
        return Support(True)

    def artifact_key(self, model_sha: str, target: tvm.target.Target, specs_key: str, db_dir: Path | None) -> str:
        """Cache key: model bytes, target, TVM version, bound shapes, tuning records (tuned vs untuned)."""
        db = "untuned"
        if db_dir is not None:
            db = "tuned:" + file_sha256(db_dir / "database_tuning_record.json")
        blob = json.dumps(
            [model_sha, str(target), tvm.__version__, PIPELINE_VERSION, specs_key, db], sort_keys=True
        ).encode()
        return f"{model_sha[:16]}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def load(
        self, model_path: Path, *, device: str = "cpu", threads: int = 2, tuned: bool | None = None
    ) -> TvmLoadedModel:
        """Load the cached artefact or compile it. ``tuned``: None = use a tuning DB when one exists,
        False = never, True = require one (EngineError if missing)."""
        model_path = Path(model_path)
        if device not in self.devices():
            raise EngineError(f"TVM device {device!r} unavailable here (have {self.devices()})")
        target = make_target(device, threads)
        model_sha = file_sha256(model_path)
        candidate = tuning_db_dir(self.tuning_dir, model_sha, target)
        db_dir = candidate if tuned is not False and has_tuning_db(candidate) else None
        if tuned and db_dir is None:
            raise EngineError(f"no tuning database for {model_path.name} at {candidate}; run `autoscale tune`")
        # The shape binding only depends on dim_values, so it is part of the key without parsing the model.
        key = self.artifact_key(model_sha, target, json.dumps(self.dim_values, sort_keys=True), db_dir)
        so_path = self.cache_dir / f"{key}.so"
        meta_path = self.cache_dir / f"{key}.json"
        t0 = time.perf_counter()
        with self._lock:
            lib: Any = None
            meta: dict[str, Any] = {}
            from_cache = False
            if so_path.is_file() and meta_path.is_file():
                try:
                    meta = json.loads(meta_path.read_text())
                    lib = tvm.runtime.load_module(str(so_path))
                    from_cache = True
                    self.cache_hits += 1
                except Exception:  # truncated / foreign artefact: rebuild it below
                    lib = None
            if lib is None:
                lib, meta = self._compile(model_path, target, db_dir, so_path, meta_path)
        load_s = time.perf_counter() - t0
        info = CompileInfo(
            artifact=so_path,
            from_cache=from_cache,
            tuned=db_dir is not None,
            load_s=load_s,
            compile_s=float(meta["compile_s"]),
            target=str(target),
        )
        inputs = [TensorSpec(**s) for s in meta["inputs"]]
        try:
            return TvmLoadedModel(lib, device, threads, inputs, list(meta["output_names"]), info)
        except Exception as e:
            raise EngineError(f"TVM could not start a VM for {so_path}: {_last_line(e)}") from e

    def _compile(
        self, model_path: Path, target: tvm.target.Target, db_dir: Path | None, so_path: Path, meta_path: Path
    ) -> tuple[Any, dict[str, Any]]:
        t0 = time.perf_counter()
        try:
            model = onnx.load(str(model_path))
        except Exception as e:
            raise EngineError(f"cannot read ONNX model {model_path}: {e}") from e
        sup = self.supports(model, Precision.fp32)
        if not sup:
            raise EngineError(f"TVM cannot run {model_path.name}: {sup.reason}")
        mod, specs = import_onnx(model, self.dim_values)
        ex = compile_module(mod, target, db_dir)
        compile_s = time.perf_counter() - t0
        self.compiles += 1
        so_path.parent.mkdir(parents=True, exist_ok=True)
        # Write under a unique temporary name, then rename: concurrent runners may compile the same
        # model, and a reader must never load a half-written library.
        tmp = so_path.with_name(f".{so_path.stem}.{os.getpid()}.{threading.get_ident()}.so")
        try:
            ex.export_library(str(tmp))
            os.replace(tmp, so_path)
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise EngineError(f"TVM export_library failed (is a C compiler installed?): {_last_line(e)}") from e
        meta = {
            "model": model_path.name,
            "inputs": [s.model_dump() for s in specs],
            "output_names": [o.name for o in model.graph.output],
            "target": str(target),
            "tvm_version": tvm.__version__,
            "tuning_db": str(db_dir) if db_dir else None,
            "compile_s": round(compile_s, 3),
        }
        tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, meta_path)
        # Run from the exported file, exactly what a later cache hit would load.
        return tvm.runtime.load_module(str(so_path)), meta
