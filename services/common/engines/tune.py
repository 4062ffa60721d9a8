"""MetaSchedule auto-tuning of a model for TVM, stored as a JSON database the TVM engine picks up.

``tune(model, "llvm", trials=N)`` writes ``<tuning dir>/<model sha>-<target family>/`` holding
``database_workload.json`` + ``database_tuning_record.json`` (MetaSchedule's JSONDatabase), its
``logs/`` and a ``meta.json`` summary. ``TvmEngine.load`` then compiles with those records (a
separate artefact cache entry from the untuned build).

Costs on this kind of host: the first TuneContext of a process imports TVM's tensor-intrinsic
library (~18 s, once); every trial is one LLVM build plus one measurement (~0.3 s at least).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import onnx
import tvm
from tvm import relax

from services.common.engines.base import EngineError, file_sha256
from services.common.engines.tvm_engine import (
    TvmEngine,
    _last_line,
    default_tuning_dir,
    import_onnx,
    make_target,
    tuning_db_dir,
)
from services.core.schemas import Precision

log = logging.getLogger(__name__)

TARGETS = {"llvm": "cpu", "cpu": "cpu", "cuda": "cuda"}


def _build(mod: tvm.IRModule, target: tvm.target.Target, _params: Any) -> Any:
    """MetaSchedule builder without ``import tvm.s_tir.tensor_intrin``.

    The stock ``default_build`` imports the whole tensor-intrinsic library (~18 s of TVMScript
    parsing) in every fresh builder process, and LocalBuilder starts fresh processes for every batch:
    on a 2-core host that is most of the tuning time and makes tiny candidates time out. The
    intrinsics are only needed while *scheduling* (tensorize, in the parent process); a scheduled
    module builds without them.
    """
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.tirx.build(mod, target=target)


def fuse_for_tuning(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalise + fuse exactly like ``compile_relax`` does, so tuned workloads match at compile time."""
    try:
        dispatch = relax.pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):
        dispatch = []
    seq = tvm.transform.Sequential(
        [
            *dispatch,
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )
    with target:
        return seq(mod)


def _cost_model() -> str:
    """XGBoost cost model when installed (better search), else random (no extra dependency)."""
    return "xgb" if importlib.util.find_spec("xgboost") is not None else "random"


def count_valid_records(db_dir: Path) -> int:
    """Tuning records that built and ran (failed candidates are stored too, with a 1e10 s cost)."""
    from tvm.s_tir import meta_schedule as ms

    if not (db_dir / "database_tuning_record.json").is_file():
        return 0
    db = ms.database.JSONDatabase(work_dir=str(db_dir), allow_missing=False)
    return sum(1 for r in db.get_all_tuning_records() if r.run_secs and min(float(s) for s in r.run_secs) < 1e9)


def _tuning_target(target: str, threads: int) -> tvm.target.Target:
    """The TVM target for "llvm" or "cuda"; EngineError when the name is unknown or the device is not here."""
    if target not in TARGETS:
        raise EngineError(f"unknown tuning target {target!r}; use one of {sorted(TARGETS)}")
    if TARGETS[target] not in TvmEngine().devices():
        raise EngineError(f"cannot tune for {target}: no such device on this host (TVM sees {TvmEngine().devices()})")
    return make_target(TARGETS[target], threads)


def _tunable_tasks(model_path: Path, tgt: tvm.target.Target, dim_values: dict[str, int] | None) -> tuple[Any, Any]:
    """The model fused as TVM compiles it, and MetaSchedule's tasks (its fused kernels) in it; never empty."""
    from tvm.s_tir import meta_schedule as ms

    model = onnx.load(str(model_path))
    sup = TvmEngine().supports(model, Precision.fp32)
    if not sup:
        raise EngineError(f"cannot tune {model_path.name}: {sup.reason}")
    mod, _ = import_onnx(model, dim_values)
    fused = fuse_for_tuning(mod, tgt)
    tasks = ms.relax_integration.extract_tasks(fused, tgt)
    if not tasks:
        raise EngineError(f"{model_path.name} has no tunable kernels")
    return fused, tasks


def _search_strategy(strategy: str, per_task: int) -> Any:
    """MetaSchedule's search strategy: its name, or an evolutionary search sized to the budget per task."""
    from tvm.s_tir import meta_schedule as ms

    if strategy != "evolutionary":
        return strategy
    # The stock population (512, >= 50 fresh samples per round) costs ~25 s of search per task
    # per round on 2 cores; a small budget gains nothing from it, so scale it with the budget.
    return ms.search_strategy.EvolutionarySearch(
        population_size=min(512, max(32, 8 * per_task)), init_min_unmeasured=min(50, max(8, 2 * per_task))
    )


def tune(
    model_path: Path,
    target: str = "llvm",
    trials: int = 64,
    work_dir: Path | None = None,
    *,
    threads: int = 2,
    max_trials_per_task: int | None = None,
    strategy: str = "evolutionary",
    builder_workers: int | None = None,
    min_repeat_ms: int = 100,
    dim_values: dict[str, int] | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> Path:
    """Run MetaSchedule on every fused kernel of ``model_path`` with a global budget of ``trials``.

    ``target``: "llvm" (host CPU, with ``threads`` cores) or "cuda". ``work_dir``: tuning root
    (default ``$AUTOSCALE_TVM_TUNING`` or ``<tvm cache>/tuning``, where TvmEngine looks).
    ``max_trials_per_task`` defaults to an even split of ``trials`` over the tasks so a small budget
    still touches every kernel. ``dim_values`` must match the TvmEngine's (default: symbolic dims = 1).
    Returns the database directory. Re-tuning appends records to the same database.
    """
    from tvm.s_tir import meta_schedule as ms

    if trials < 1:
        raise EngineError("trials must be >= 1")
    model_path = Path(model_path)
    tgt = _tuning_target(target, threads)
    db_dir = tuning_db_dir(Path(work_dir) if work_dir else default_tuning_dir(), file_sha256(model_path), tgt)
    db_dir.mkdir(parents=True, exist_ok=True)

    fused, tasks = _tunable_tasks(model_path, tgt, dim_values)
    per_task = max_trials_per_task or max(1, math.ceil(trials / len(tasks)))

    if not verbose:
        # Console handler level follows this logger's; the DEBUG file logs under db_dir/logs stay.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    cost_model = _cost_model()
    t0 = time.perf_counter()
    try:
        ms.relax_integration.tune_relax(
            mod=fused,
            params={},
            target=tgt,
            work_dir=str(db_dir),
            max_trials_global=trials,
            max_trials_per_task=per_task,
            num_trials_per_iter=min(64, per_task),
            builder=ms.builder.LocalBuilder(f_build=_build, max_workers=builder_workers or max(1, threads)),
            runner=ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(min_repeat_ms=min_repeat_ms)),
            cost_model=cost_model,
            strategy=_search_strategy(strategy, per_task),
            seed=seed,
        )
    except Exception as e:
        raise EngineError(f"MetaSchedule tuning failed: {type(e).__name__}: {_last_line(e)}") from e
    elapsed = time.perf_counter() - t0
    n_records = count_valid_records(db_dir)
    if n_records == 0:
        raise EngineError(f"tuning produced no valid record (all builds/runs failed, see {db_dir / 'logs'})")
    meta = {
        "model": model_path.name,
        "target": str(tgt),
        "trials": trials,
        "max_trials_per_task": per_task,
        "tasks": [t.task_name for t in tasks],
        "records": n_records,
        "strategy": strategy,
        "cost_model": cost_model,
        "tune_s": round(elapsed, 1),
        "tvm_version": tvm.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (db_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("tuned %s: %d records in %.0f s -> %s", model_path.name, n_records, elapsed, db_dir)
    return db_dir
