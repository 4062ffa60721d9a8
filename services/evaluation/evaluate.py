"""The paper's evaluation methodology (Sec. V-C, VI) on the simulator.

Per device (phone) and per held-out network k (leave-one-out across the NNs, Sec. V-C):

* **train** AutoScale on the other networks: ``runs`` inferences per (network, scenario), in a
  shuffled order, epsilon-greedy (0.1), learning from every outcome (Algorithm 1);
* the prediction-based comparators (LR, SVR, SVM, KNN, BO, LinUCB) get ``predictor_samples``
  uniformly explored observations of the same training inferences (offline profiling data, as
  the prediction-based approaches are trained in the paper) and are fitted once;
* **test** every policy on network k: ``test_runs`` consecutive inferences per scenario, exploiting
  (epsilon 0) while still learning online; the predictors are tested on the first
  ``predictor_test_runs`` of them (their per-decision cost is milliseconds).

Opt is the oracle of paper fn. 8 on the true (noise-free) costs. All policies see the same
conditions and the same outcome noise (common random numbers). Besides this main experiment:
convergence from scratch, transfer learning (Mi8Pro -> others) and the accuracy targets of Fig. 12.

AutoScale runs twice, side by side: ``autoscale`` as configured (``EvalConfig.reward_mode``,
``q_init``, ``lr_schedule``, ``explore_bonus``, ``explore_untried``: by default the improved
learner, ``QParams.improved()`` with the Opt-aligned reward) and ``autoscale-paper`` (Algorithm 1
and eq. 5 exactly as published). Every other learner gets the configured reward, as in the decider.

Speed: blocks precompute every candidate's cost, noise and reward matrix (vectorised); Opt replays
the precomputed oracle choice; offline-trained predictors decide each test window in one batch
(``decide_many``); BLAS runs single-threaded per worker process (the parallelism is over folds).

Modules: ``world`` (one device's cases and random blocks), ``contenders`` (the policies),
``fold`` (the main experiment's leave-one-out fold), ``scoring`` (sums over a test window),
``convergence`` (Fig. 14), ``accuracy_targets`` (Fig. 12); this one runs them all, over worker
processes, and assembles results.json.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from services.core.schemas import ModelFeatures, RuntimeConditions
from services.core.state import observe
from services.evaluation.accuracy_targets import run_accuracy_targets
from services.evaluation.config import EvalConfig
from services.evaluation.convergence import run_convergence_and_transfer
from services.evaluation.fold import run_fold
from services.evaluation.partitioning import partition_summary
from services.evaluation.scoring import Agg
from services.evaluation.summary import summarise
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
        device, model = arg
        return kind, arg, run_fold(cfg, device, model)
    if kind == "conv":
        return kind, arg, run_convergence_and_transfer(cfg)
    if kind == "acc":
        return kind, arg, run_accuracy_targets(cfg, arg)
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


def _evaluate(cfg: EvalConfig, progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    c0 = _cpu_s()
    for d in cfg.devices:  # fail fast, in this process, on bad inputs
        load_device(cfg, d)
    models = list(zoo_models(cfg.models))
    tasks: list[tuple[str, Any]] = [("fold", (d, m)) for d in cfg.devices for m in models]
    if cfg.extras:
        tasks.append(("conv", None))
        tasks += [("acc", d) for d in cfg.devices]
    # Longest first: the extras are the longest single tasks.
    tasks.sort(key=lambda t: 0 if t[0] != "fold" else 1)
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
    # identical run to run for the same seed.
    results = {(k, _key(a)): results[(k, _key(a))] for k, a in tasks}
    res = assemble(cfg, models, results, time.perf_counter() - t0)
    res["timing"]["cpu_s"] = _cpu_s() - c0  # this process and its (finished) workers
    return res


def _key(arg: Any) -> Any:
    return tuple(arg) if isinstance(arg, (list, tuple)) else arg


def assemble(cfg: EvalConfig, models: list[str], results: dict[tuple[str, Any], Any], seconds: float) -> dict[str, Any]:
    """Fold the per-task sums into the results document."""
    per: dict[str, dict[str, Any]] = {"adapted": {}, "cold": {}}  # window -> device -> scenario -> model -> policy
    decisions = 0
    cpu_seconds = 0.0
    floor: dict[str, dict[str, int]] = {}  # scenario -> sums over devices and networks
    for (kind, _key), res in results.items():
        if kind != "fold":
            continue
        decisions += res["decisions"]
        cpu_seconds += res["seconds"]
        for s, nf in (res.get("noise_floor") or {}).items():
            acc = floor.setdefault(s, {})
            for k, v in nf.items():
                acc[k] = acc.get(k, 0) + v
        for w, by_s in res["aggs"].items():
            for s, pol in by_s.items():
                for p, a in pol.items():
                    agg = Agg(**a)
                    summ = agg.summary()
                    summ["opt_energy_mj"] = 1e3 * agg.opt_energy_j / max(agg.n, 1)
                    per[w].setdefault(res["device"], {}).setdefault(s, {}).setdefault(res["model"], {})[p] = summ
    out: dict[str, Any] = {
        "config": cfg.to_json(),
        "models": models,
        "per_case": per["adapted"],
        "per_case_cold": per["cold"],
        "timing": {
            "wall_s": seconds,
            "fold_cpu_s": cpu_seconds,
            "decisions": decisions,
            "decisions_per_s": decisions / seconds if seconds > 0 else math.nan,
        },
        "noise_floor": floor,
    }
    out["state_sharing"] = state_sharing(models)
    out["summary"] = summarise(out)
    out["summary_cold"] = summarise({"per_case": out["per_case_cold"]})
    part = partition_summary(out)
    if part is not None:
        out["partition"] = part
    conv = results.get(("conv", None))
    if conv is not None:
        out["convergence"] = conv
    acc = {res["device"]: res["targets"] for (kind, key), res in results.items() if kind == "acc"}
    if acc:
        out["accuracy_targets"] = acc
        out["accuracy_refused"] = next(res["refused"] for (kind, _), res in results.items() if kind == "acc")
    return out


def state_sharing(models: Sequence[str]) -> dict[str, list[str]]:
    """For each network, the others with the same Table I NN bins (CONV, FC, RC, MAC): the only
    ones whose leave-one-out training fills its Q rows."""
    feats = zoo_models(models)
    nn = {m: observe(f, RuntimeConditions()).labels() for m, f in feats.items()}
    key = {m: tuple(v for k, v in lab.items() if k in ("conv", "fc", "rc", "mac")) for m, lab in nn.items()}
    return {m: [o for o in feats if o != m and key[o] == key[m]] for m in feats}


def cpu_count() -> int:
    """The CPUs this process may run on (the affinity mask where the platform has one: Linux)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
