"""The evaluation protocol (README "Evaluation"; paper Sec. V-C, VI) on the simulator.

Per seed, phone and held-out network k (leave-one-network-out, Sec. V-C), ``fold.run_fold``:

* **train** every learner on the other networks: ``runs`` inferences per (network, scenario), in
  a shuffled order, epsilon-greedy (0.1), learning from every observed outcome (Algorithm 1); the
  prediction-based comparators (LR, SVR, SVM, KNN, BO) fit once on ``predictor_samples``
  uniformly explored observations of the same training inferences (offline profiling data);
* **test** on network k per scenario: the *cold* window first (no inference of k before it: the
  headline), then windows after 10, 30 and 100 online inferences of k (``curve_runs``).

The world is not the profiles: a hidden ``TrueWorld`` per seed (``truth``) makes every device
deviate from its profile; Opt (paper fn. 8) and the scores read the truth, policies the profiles
and the observed outcomes. Reports use the held-out seeds; settings are chosen on the tuning
seeds (``studies``: the sweep). The studies (``EvalConfig.studies``) add convergence and
transfer (Fig. 14), the accuracy targets (Fig. 12), the sweep, the profiles' world (sigma 0), the
streaming use case (Fig. 10), the swap table and the decider's energy overhead.

Speed: blocks precompute every candidate's cost, noise and reward matrix (vectorised); Opt and the
offline-profiled baselines replay precomputed choices; the predictors decide each window in one
batch (``decide_many``); BLAS runs single-threaded per worker process (parallel over folds).

Modules: ``world`` (one device's cases and random blocks), ``truth`` (the hidden world),
``contenders`` (the policies), ``fold`` (one leave-one-out fold), ``scoring`` (sums over a
window), ``studies`` (the variants), ``assemble`` (results.json), ``convergence`` (Fig. 14),
``accuracy_targets`` (Fig. 12), ``overhead``; this one runs the tasks over worker processes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from multiprocessing import get_context
from typing import Any

from services.core.schemas import ModelFeatures
from services.evaluation.accuracy_targets import run_accuracy_targets
from services.evaluation.assemble import assemble
from services.evaluation.config import EvalConfig
from services.evaluation.convergence import run_convergence_and_transfer
from services.evaluation.fold import run_fold
from services.evaluation.studies import study_variants, variant_config
from services.evaluation.world import known_features, load_device, preload_features, zoo_models


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """One BLAS thread per process: the evaluation parallelises over processes, and OpenBLAS's
    spinning worker threads otherwise burn a second core per process for nothing (measured: a
    fold costs up to 3x the CPU time with the default 2 threads on 2 cores). Returns the limiter
    (a context manager that restores the previous setting), or a null context."""
    try:
        from threadpoolctl import threadpool_limits

        limiter: contextlib.AbstractContextManager[object] = threadpool_limits(1)
        return limiter
    except Exception:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()


def _init_worker(features: dict[str, ModelFeatures]) -> None:
    _single_threaded_blas()
    preload_features(features)


def _task(kind: str, cfg: EvalConfig, arg: Any) -> tuple[str, Any, Any]:
    if kind == "fold":
        variant, seed, device, model = arg
        vcfg = replace(variant_config(cfg, variant), seed=seed)
        return kind, arg, run_fold(vcfg, device, model)
    first = replace(cfg, seed=cfg.seeds[0])  # the studies run on the first reported seed
    if kind == "conv":
        return kind, arg, run_convergence_and_transfer(first)
    if kind == "acc":
        return kind, arg, run_accuracy_targets(first, arg)
    raise ValueError(kind)


def _cpu_s() -> float:
    import resource

    return sum(
        resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
        for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def evaluate(cfg: EvalConfig, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run everything; returns the results document (services.evaluation.results is its contract)."""
    with _single_threaded_blas():
        return _evaluate(cfg, progress)


def tasks_of(cfg: EvalConfig, models: list[str]) -> list[tuple[str, Any]]:
    """Every unit of work: a fold per (variant, seed, device, held-out network), then the studies."""
    tasks: list[tuple[str, Any]] = []
    for variant in ["main", *study_variants(cfg)]:
        vcfg = variant_config(cfg, variant)
        tasks += [("fold", (variant, s, d, m)) for s in vcfg.seeds for d in vcfg.devices for m in models]
    if cfg.study("convergence") or cfg.study("transfer"):
        tasks.append(("conv", None))
    if cfg.study("accuracy"):
        tasks += [("acc", d) for d in cfg.devices]
    # Longest first: the studies' tasks are the longest single ones.
    tasks.sort(key=lambda t: 0 if t[0] != "fold" else 1)
    return tasks


def _evaluate(cfg: EvalConfig, progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    c0 = _cpu_s()
    for d in cfg.devices:  # fail fast, in this process, on bad inputs
        load_device(cfg, d)
    models = list(zoo_models(cfg.models))
    tasks = tasks_of(cfg, models)
    results: dict[tuple[str, Any], Any] = {}
    done = 0
    if cfg.workers > 1 and len(tasks) > 1:
        ctx = get_context("spawn")  # no fork of a process that runs a progress thread
        with ProcessPoolExecutor(
            max_workers=min(cfg.workers, len(tasks)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(known_features(),),
        ) as ex:
            futs: set[Future[Any]] = {ex.submit(_task, k, cfg, a) for k, a in tasks}
            while futs:
                finished, futs = wait(futs, return_when=FIRST_COMPLETED)
                for f in finished:
                    kind, arg, res = f.result()
                    results[(kind, _key(arg))] = res
                    done += 1
                    if progress:
                        progress(f"{kind} {arg or ''}", done, len(tasks))
    else:
        for k, a in tasks:
            kind, arg, res = _task(k, cfg, a)
            results[(kind, _key(arg))] = res
            done += 1
            if progress:
                progress(f"{kind} {arg or ''}", done, len(tasks))
    # In task order, not completion order: the sums then run in one order and results.json is
    # identical run to run for the same seeds.
    results = {(k, _key(a)): results[(k, _key(a))] for k, a in tasks}
    res = assemble(cfg, models, results, time.perf_counter() - t0)
    res["timing"]["cpu_s"] = _cpu_s() - c0  # this process and its (finished) workers
    return res


def _key(arg: Any) -> Any:
    return tuple(arg) if isinstance(arg, (list, tuple)) else arg


def cpu_count() -> int:
    """The CPUs this process may run on (the affinity mask where the platform has one: Linux)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
