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
"""

from __future__ import annotations

import math
import os
import random
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from services.common.costmodel import Mesh
from services.common.profiles import load_profile
from services.common.scenarios import Scenario, load_scenario, qos_s
from services.common.schemas import POLICY_NAMES, ModelFeatures, Precision
from services.evaluation.simulator import (
    Block,
    ModelCase,
    Trace,
    make_block,
    model_case,
    run_steps,
    set_exploration,
    uniform_chooser,
)

DEFAULT_DEVICES = ("mi8pro", "galaxy_s10e", "moto_x_force")
STATIC = ("s1", "s2", "s3", "s4", "s5")
DYNAMIC = ("d1", "d2", "d3", "d4")
DEFAULT_SCENARIOS = STATIC + DYNAMIC
PREDICTORS = ("lr", "svr", "svm", "knn", "bo", "linucb")
TRAINED = ("autoscale",) + PREDICTORS  # policies with a LOO training phase
# Fig. 13's target categories (DVFS steps aggregated).
CATEGORIES = ("edge-cpu-fp32", "edge-cpu-int8", "edge-gpu-fp32", "edge-gpu-fp16", "edge-dsp-int8", "cloud", "peer")


def category(target_id: str) -> str:
    runner, proc, prec = target_id.partition("@")[0].split("/")
    return f"edge-{proc}-{prec}" if runner == "edge" else runner


@dataclass
class EvalConfig:
    devices: list[str] = field(default_factory=lambda: list(DEFAULT_DEVICES))
    scenarios: list[str] = field(default_factory=lambda: list(DEFAULT_SCENARIOS))
    models: list[str] | None = None  # None: the zoo's ten
    policies: list[str] = field(default_factory=lambda: list(POLICY_NAMES))
    runs: int = 100  # training inferences per (network, scenario)
    test_runs: int = 50  # measured test inferences per (held-out network, scenario) and window
    adapt_runs: int = 100  # online inferences of the held-out network between the cold and adapted windows
    predictor_samples: int = 600  # training observations per fold for each predictor
    predictor_test_runs: int = 5
    seed: int = 0
    noise_sigma: float = 0.07  # lognormal sigma of measured latency/energy around the model
    peer: str = "galaxy_tab_s6"
    cloud: str = "cloud_p100"
    profiles_dir: Path | None = None
    scenarios_dir: Path | None = None
    transfer_source: str = "mi8pro"
    convergence_runs: int = 100
    convergence_tolerance: float = 0.05  # greedy reward within 5 % of Opt's = converged
    accuracy_targets: list[float | None] = field(default_factory=lambda: [None, 50.0, 65.0, 70.0])
    accuracy_runs: int = 20  # training runs per (network, scenario) of the accuracy-target study
    accuracy_test_runs: int = 20  # test inferences per (held-out network, static scenario) of that study
    workers: int = 2
    extras: bool = True  # convergence, transfer and accuracy-target studies

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("profiles_dir", "scenarios_dir"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


# ----------------------------------------------------------------------------- inputs


_FEATURES: dict[str, ModelFeatures] = {}  # extracted once in the parent, handed to the workers


def zoo_models(names: Sequence[str] | None) -> dict[str, ModelFeatures]:
    from services.common.zoo import ZOO_NAMES, zoo_features

    chosen = list(names) if names else list(ZOO_NAMES)
    unknown = [n for n in chosen if n not in ZOO_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; the zoo has {list(ZOO_NAMES)}")
    for n in chosen:
        if n not in _FEATURES:
            _FEATURES[n] = zoo_features(n)  # graph walk, ~0.1-0.5 s per network
    return {n: _FEATURES[n] for n in chosen}


def _init_worker(features: dict[str, ModelFeatures]) -> None:
    _FEATURES.update(features)


def accuracy_of(model: str, precision: Precision) -> float | None:
    """Expected accuracy of a network at a precision (None: not offered at that precision)."""
    from services.common.accuracy import expected_accuracy

    try:
        v = expected_accuracy(model, precision)
    except (KeyError, ValueError):
        return None
    if v is None:
        return None
    return float(getattr(v, "top1", v))  # an AccuracyEntry (published figure) or a bare number


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass
class DeviceWorld:
    """Everything one device's experiments replay: cases and blocks, deterministic from the seed."""

    cfg: EvalConfig
    device: str
    mesh: Mesh
    scenarios: dict[str, Scenario]
    features: dict[str, ModelFeatures]
    cases: dict[tuple[str, float | None], ModelCase] = field(default_factory=dict)
    blocks: dict[tuple[str, str, str, float | None], Block] = field(default_factory=dict)

    def case(self, model: str, accuracy_min: float | None = None) -> ModelCase:
        key = (model, accuracy_min)
        if key not in self.cases:
            f = self.features[model]
            self.cases[key] = model_case(self.mesh, model, f, accuracy_of, qos_s(f), accuracy_min)
        return self.cases[key]

    def block(self, model: str, scenario: str, phase: str, n: int, accuracy_min: float | None = None) -> Block:
        """``phase`` names an independent random stream (train / test / conv)."""
        key = (model, scenario, phase, accuracy_min)
        b = self.blocks.get(key)
        if b is None or b.n < n:
            # Conditions and noise do not depend on accuracy_min: same stream for every target.
            rng = np.random.default_rng(_seed(self.cfg.seed, self.device, model, scenario, phase))
            b = make_block(self.case(model, accuracy_min), self.scenarios[scenario], n, rng, self.cfg.noise_sigma)
            self.blocks[key] = b
        return b


def load_device(cfg: EvalConfig, device: str) -> DeviceWorld:
    edge = load_profile(device, cfg.profiles_dir)
    if edge.kind != "phone":
        raise ValueError(f"{device} is a {edge.kind} profile; the decider serves a phone")
    mesh = Mesh(edge=edge, peer=load_profile(cfg.peer, cfg.profiles_dir), cloud=load_profile(cfg.cloud, cfg.profiles_dir))
    scen = {s: load_scenario(s, cfg.scenarios_dir) for s in cfg.scenarios}
    return DeviceWorld(cfg, edge.name, mesh, {v.name: v for v in scen.values()}, zoo_models(cfg.models))


# ----------------------------------------------------------------------------- policies


def build_policy(name: str, cfg: EvalConfig, seed: int) -> Any:
    """A fresh policy; predictors are set up to be fitted once on their training samples."""
    from services.decider.policies import make_policy
    from services.decider.policies.predictors import (
        BayesOptPolicy,
        ClassifierPolicy,
        PredictorParams,
        RegressionPolicy,
    )

    never = 10**12  # refit only when we say so: offline-trained predictors
    if name in ("lr", "svr"):
        return RegressionPolicy(name, PredictorParams(buffer=cfg.predictor_samples, refit_every=never, seed=seed,
                                                      background_fit=False))
    if name in ("svm", "knn"):
        return ClassifierPolicy(name, PredictorParams(buffer=cfg.predictor_samples, refit_every=never, seed=seed,
                                                      background_fit=False))
    if name == "bo":
        # A GP's fit is cubic in the samples: keep its buffer small (the BO policy's own default is 400).
        return BayesOptPolicy(PredictorParams(epsilon=0.0, buffer=min(cfg.predictor_samples, 150), refit_every=never,
                                              seed=seed, background_fit=False))
    return make_policy(name, seed=seed, background_fit=False)


def _fit_now(policy: Any) -> None:
    refit = getattr(policy, "_refit", None)  # the predictors' own (private) refit entry point
    if callable(refit):
        refit()


# ----------------------------------------------------------------------------- metrics


@dataclass
class Agg:
    """Sums over test inferences of one (device, scenario, model, policy)."""

    n: int = 0
    energy_j: float = 0.0
    latency_s: float = 0.0
    qos_violations: int = 0
    accuracy: float = 0.0
    reward: float = 0.0
    opt_energy_j: float = 0.0
    opt_match: int = 0
    opt_category_match: int = 0
    reward_oracle_match: int = 0  # choice == argmax of the expected eq. 5 reward
    reward_oracle_is_opt: int = 0  # that argmax == Opt's choice (the ceiling eq. 5 allows)
    choices: dict[str, int] = field(default_factory=dict)  # category -> count
    opt_choices: dict[str, int] = field(default_factory=dict)

    def add(self, tr: Trace, cands_ids: Sequence[str], start: int = 0) -> None:
        a = tr.arrays()
        sl = slice(start, None)
        ch, op = a["choice"][sl], a["opt"][sl]
        self.n += len(ch)
        self.energy_j += float(a["energy_j"][sl].sum())
        self.latency_s += float(a["latency_s"][sl].sum())
        self.qos_violations += int((a["latency_s"][sl] >= a["qos_s"][sl]).sum())
        self.accuracy += float(a["accuracy"][sl].sum())
        self.reward += float(a["reward"][sl].sum())
        self.opt_match += int((ch == op).sum())
        rb = a["best_reward"][sl]
        self.reward_oracle_match += int((ch == rb).sum())
        self.reward_oracle_is_opt += int((rb == op).sum())
        for c, o in zip(ch.tolist(), op.tolist()):
            cc, oc = category(cands_ids[c]), category(cands_ids[o])
            self.choices[cc] = self.choices.get(cc, 0) + 1
            self.opt_choices[oc] = self.opt_choices.get(oc, 0) + 1
            self.opt_category_match += cc == oc

    def merge(self, o: "Agg") -> None:
        for k in ("n", "energy_j", "latency_s", "qos_violations", "accuracy", "reward", "opt_energy_j", "opt_match",
                  "opt_category_match", "reward_oracle_match", "reward_oracle_is_opt"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        for src, dst in ((o.choices, self.choices), (o.opt_choices, self.opt_choices)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {
            "n": self.n,
            "energy_mj": 1e3 * self.energy_j / n,
            "latency_ms": 1e3 * self.latency_s / n,
            "qos_violation": self.qos_violations / n,
            "accuracy": self.accuracy / n,
            "reward": self.reward / n,
            "prediction_accuracy": self.opt_match / n,
            "category_accuracy": self.opt_category_match / n,
            "reward_oracle_accuracy": self.reward_oracle_match / n,
            "reward_oracle_is_opt": self.reward_oracle_is_opt / n,
            "choices": dict(sorted(self.choices.items())),
            "opt_choices": dict(sorted(self.opt_choices.items())),
        }


# ----------------------------------------------------------------------------- main experiment


def _train_steps(world: DeviceWorld, held_out: str, rng: random.Random) -> list[tuple[Block, int]]:
    cfg = world.cfg
    steps = [
        (world.block(m, s, "train", cfg.runs), i)
        for m in world.features if m != held_out
        for s in world.scenarios
        for i in range(cfg.runs)
    ]
    rng.shuffle(steps)  # interleaved use, as a phone serving several apps would see
    return steps


ONLINE = ("autoscale", "linucb", "edge-best", "connected-edge")  # keep learning on the held-out network


def run_fold(cfg: EvalConfig, device: str, held_out: str) -> dict[str, Any]:
    """Train on every network but ``held_out``, test every policy on it. Returns compact sums.

    Per scenario the held-out network's test sequence is: a *cold* window (``test_runs``, right
    after leave-one-out training), ``adapt_runs`` online inferences (Algorithm 1 continues with
    exploration; online learners only), then an *adapted* window (``test_runs``). Both windows
    exploit (epsilon 0) and keep learning. Offline predictors are measured on the first
    ``predictor_test_runs`` of each window.
    """
    world = _world(cfg, device)
    t0 = time.perf_counter()
    decisions = 0
    out: dict[str, dict[str, dict[str, Agg]]] = {"cold": defaultdict(dict), "adapted": defaultdict(dict)}
    train_rng = random.Random(_seed(cfg.seed, device, held_out, "order"))
    train = _train_steps(world, held_out, train_rng) if len(world.features) > 1 else []
    case = world.case(held_out)
    ids = [c.target.id for c in case.candidates]
    n_total = 2 * cfg.test_runs + cfg.adapt_runs
    windows = {"cold": 0, "adapted": cfg.test_runs + cfg.adapt_runs}
    for name in cfg.policies:
        pseed = _seed(cfg.seed, device, held_out, name) % (2**31)
        policy = build_policy(name, cfg, pseed)
        rng = random.Random(pseed)
        if name == "autoscale" and train:
            run_steps(policy, train, rng)
            decisions += len(train)
        elif name in PREDICTORS and train:
            sample = random.Random(pseed).sample(train, min(cfg.predictor_samples, len(train)))
            run_steps(policy, sample, rng, chooser=uniform_chooser)
            _fit_now(policy)
            decisions += len(sample)
        n_test = cfg.predictor_test_runs if name in PREDICTORS else cfg.test_runs
        offline = name in PREDICTORS and name not in ONLINE  # never refitted: both windows are alike
        for s in world.scenarios:
            block = world.block(held_out, s, "test", n_total)
            for wname, start in windows.items():
                if offline and wname == "cold":
                    continue  # measured once, on the adapted window (same model, same distribution)
                if wname == "adapted" and name in ONLINE and cfg.adapt_runs > 0:
                    explore = set_exploration(policy, 0.1 if name == "autoscale" else 0.0)
                    steps = [(block, i) for i in range(cfg.test_runs, cfg.test_runs + cfg.adapt_runs)]
                    run_steps(policy, steps, rng)
                    decisions += len(steps)
                    del explore
                set_exploration(policy, 0.0)
                idx = range(start, start + n_test)
                tr = run_steps(policy, [(block, i) for i in idx], rng)
                decisions += n_test
                agg = Agg()
                agg.add(tr, ids)
                agg.opt_energy_j = float(sum(block.energy[i, block.opt[i]] * block.noise[i, block.opt[i]] for i in idx))
                out[wname][s][name] = agg
                if offline:
                    out["cold"][s][name] = agg
    return {
        "device": world.device,
        "model": held_out,
        "aggs": {w: {s: {p: asdict(a) for p, a in d.items()} for s, d in by_s.items()} for w, by_s in out.items()},
        "seconds": time.perf_counter() - t0,
        "decisions": decisions,
    }


# ----------------------------------------------------------------------------- convergence & transfer


def _greedy_rewards(policy: Any, block: Block, i: int, rng: random.Random) -> tuple[float, float]:
    """Expected eq. 5 reward of the action the policy would exploit now, and of Opt's action."""
    from services.evaluation.simulator import _reward

    ctx = block.context(i)
    old = set_exploration(policy, 0.0)
    d = policy.decide(ctx, rng)
    if old is not None:
        set_exploration(policy, old)
    case = block.case
    j, k = case.index[d.target.id], int(block.opt[i])

    def r(x: int) -> float:
        return _reward(float(block.energy[i, x]), float(block.latency[i, x]), float(case.accuracy[x]), case.qos_s,
                       case.accuracy_min)

    return r(j), r(k)


def convergence_curve(
    cfg: EvalConfig, device: str, scenarios: Sequence[str], table: Any | None = None, tag: str = "conv"
) -> dict[str, Any]:
    """From scratch (or from ``table``): every (network, scenario) learnt in parallel, run by run.

    Run r = the r-th inference of each (network, scenario). Records the mean eq. 5 reward and the
    aggregate gap sum(R_opt - R_greedy) / sum(|R_opt|) of the action each block would exploit."""
    from services.decider.policies import QLearningPolicy, QParams, QTable

    world = _world(cfg, device)
    qt = table if table is not None else QTable()
    policy = QLearningPolicy(qt, QParams(init_seed=cfg.seed))
    rng = random.Random(_seed(cfg.seed, device, tag))
    n = cfg.convergence_runs
    blocks = [world.block(m, s, "conv", n) for m in world.features for s in scenarios]
    reward_curve, gap_curve = [], []
    for r in range(n):
        order = list(range(len(blocks)))
        rng.shuffle(order)
        tr = run_steps(policy, [(blocks[b], r) for b in order], rng)
        reward_curve.append(float(np.mean(tr.reward)))
        pairs = [_greedy_rewards(policy, blocks[b], r, rng) for b in order]
        # Aggregate shortfall of the exploited actions' expected reward vs Opt's, over every block.
        gap_curve.append(max(0.0, sum(o - g for g, o in pairs) / sum(abs(o) for _, o in pairs)))
    return {"reward": reward_curve, "gap": gap_curve, "runs_to_converge": runs_to_converge(gap_curve, cfg.convergence_tolerance),
            "table": qt}


def runs_to_converge(gap: Sequence[float], tol: float) -> int | None:
    """First run from which the greedy gap stays within ``tol`` (None: never)."""
    for r in range(len(gap)):
        if all(g <= tol for g in gap[r:]):
            return r + 1
    return None


def run_convergence_and_transfer(cfg: EvalConfig) -> dict[str, Any]:
    """Fig. 14: convergence from scratch per device and with a table transferred from the source."""
    from services.decider.policies import QTable
    from services.decider.policies.qlearning import transfer_table, validate_export

    names = list(_world(cfg, cfg.devices[0]).scenarios)
    static = [s for s in names if s in STATIC] or names[:1]
    out: dict[str, Any] = {"scenarios": static, "tolerance": cfg.convergence_tolerance, "scratch": {}, "transfer": {}}
    by_name = {_world(cfg, d).device: d for d in cfg.devices}
    src_name = cfg.transfer_source if cfg.transfer_source in by_name else next(iter(by_name))
    src = by_name[src_name]
    src_curve = None
    for name, d in by_name.items():
        c = convergence_curve(cfg, d, static, tag="conv")
        out["scratch"][name] = {k: v for k, v in c.items() if k != "table"}
        if d == src:
            src_curve = c
    out["source"] = src_name
    if src_curve is None:
        return out
    src_actions = [t.id for t in _world(cfg, src).mesh.targets()]
    exported = validate_export(src_curve["table"].export(src_name, src_actions))
    for name, d in by_name.items():
        if d == src:
            continue
        dest_actions = [t.id for t in _world(cfg, d).mesh.targets()]
        table, report = transfer_table(exported, name, dest_actions)
        qt = QTable()
        qt.load(table)
        c = convergence_curve(cfg, d, static, table=qt, tag="conv-transfer")
        out["transfer"][name] = {k: v for k, v in c.items() if k != "table"}
        out["transfer"][name]["entries_copied"] = report.entries_copied
    return out


def run_accuracy_targets(cfg: EvalConfig, device: str) -> dict[str, Any]:
    """Fig. 12: AutoScale (LOO + online adaptation, static scenarios) vs Opt and Edge (CPU FP32) per
    accuracy target; same protocol as the main experiment's adapted window, shorter training."""
    world = _world(cfg, device)
    static = [s for s in world.scenarios if s in STATIC] or list(world.scenarios)
    res: dict[str, Any] = {}
    refused: dict[str, list[str]] = {}
    for target in cfg.accuracy_targets:
        aggs = {p: Agg() for p in ("autoscale", "opt", "edge-cpu-fp32")}
        # The decider refuses (422) a request no target can satisfy, e.g. SSD (COCO mAP ~20 %) at 50 %:
        # eq. 5 would give every target R = accuracy - 100, with no energy signal to learn from.
        models = [m for m in world.features
                  if target is None or (world.case(m, target).accuracy >= target).any()]
        refused["none" if target is None else f"{target:g}"] = [m for m in world.features if m not in models]
        for k in models:
            train = [
                (world.block(m, s, "acc-train", cfg.accuracy_runs, target), i)
                for m in models if m != k for s in static for i in range(cfg.accuracy_runs)
            ]
            random.Random(_seed(cfg.seed, device, k, target)).shuffle(train)
            ids = [c.target.id for c in world.case(k, target).candidates]
            for name in aggs:
                policy = build_policy(name, cfg, _seed(cfg.seed, device, k, name, target) % (2**31))
                rng = random.Random(_seed(cfg.seed, device, k, name, "acc"))
                if name == "autoscale" and train:
                    run_steps(policy, train, rng)
                adapt = cfg.adapt_runs if name == "autoscale" else 0
                for s in static:
                    b = world.block(k, s, "acc-test", adapt + cfg.accuracy_test_runs, target)
                    if adapt:  # same protocol as the main experiment's adapted window
                        set_exploration(policy, 0.1)
                        run_steps(policy, [(b, i) for i in range(adapt)], rng)
                    set_exploration(policy, 0.0)
                    idx = range(adapt, adapt + cfg.accuracy_test_runs)
                    aggs[name].add(run_steps(policy, [(b, i) for i in idx], rng), ids)
        res["none" if target is None else f"{target:g}"] = {p: a.summary() for p, a in aggs.items()}
    return {"device": world.device, "targets": res, "refused": refused}


# ----------------------------------------------------------------------------- orchestration

_WORLDS: dict[tuple[str, str], DeviceWorld] = {}


def _world(cfg: EvalConfig, device: str) -> DeviceWorld:
    """The process-wide cache of worlds (blocks are reused by every fold of a device)."""
    cfg_key = repr(cfg.to_json())
    if any(k[0] != cfg_key for k in _WORLDS):
        _WORLDS.clear()  # one configuration at a time per process
    key = (cfg_key, device)
    w = _WORLDS.get(key)
    if w is None:
        w = _WORLDS[key] = load_device(cfg, device)
    return w


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

    return sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
               for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def evaluate(cfg: EvalConfig, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run everything; returns the results dict (see report.py for how it is read)."""
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
        with ProcessPoolExecutor(max_workers=min(cfg.workers, len(tasks)), mp_context=ctx,
                                 initializer=_init_worker, initargs=(dict(_FEATURES),)) as ex:
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
    res = assemble(cfg, models, results, time.perf_counter() - t0)
    res["timing"]["cpu_s"] = _cpu_s() - c0  # this process and its (finished) workers
    return res


def _key(arg: Any) -> Any:
    return tuple(arg) if isinstance(arg, (list, tuple)) else arg


def _agg_from(d: dict[str, Any]) -> Agg:
    return Agg(**d)


def assemble(cfg: EvalConfig, models: list[str], results: dict[tuple[str, Any], Any], seconds: float) -> dict[str, Any]:
    """Fold the per-task sums into the results document."""
    per: dict[str, dict[str, Any]] = {"adapted": {}, "cold": {}}  # window -> device -> scenario -> model -> policy
    decisions = 0
    cpu_seconds = 0.0
    for (kind, key), res in results.items():
        if kind != "fold":
            continue
        decisions += res["decisions"]
        cpu_seconds += res["seconds"]
        for w, by_s in res["aggs"].items():
            for s, pol in by_s.items():
                for p, a in pol.items():
                    agg = _agg_from(a)
                    summ = agg.summary()
                    summ["opt_energy_mj"] = 1e3 * agg.opt_energy_j / max(agg.n, 1)
                    per[w].setdefault(res["device"], {}).setdefault(s, {}).setdefault(res["model"], {})[p] = summ
    out: dict[str, Any] = {
        "config": cfg.to_json(),
        "models": models,
        "per_case": per["adapted"],
        "per_case_cold": per["cold"],
        "timing": {"wall_s": seconds, "fold_cpu_s": cpu_seconds, "decisions": decisions,
                   "decisions_per_s": decisions / seconds if seconds > 0 else math.nan},
    }
    from services.evaluation.report import summarise

    out["state_sharing"] = state_sharing(models)
    out["summary"] = summarise(out)
    out["summary_cold"] = summarise({"per_case": out["per_case_cold"]})
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
    from services.common.schemas import RuntimeConditions
    from services.common.state import observe

    feats = zoo_models(models)
    nn = {m: observe(f, RuntimeConditions()).labels() for m, f in feats.items()}
    key = {m: tuple(v for k, v in lab.items() if k in ("conv", "fc", "rc", "mac")) for m, lab in nn.items()}
    return {m: [o for o in feats if o != m and key[o] == key[m]] for m in feats}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
