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
from typing import Any

import numpy as np

from services.common.config_files import load_profile, load_scenario
from services.core.costmodel import Mesh
from services.core.scenarios import Scenario, qos_s
from services.core.schemas import ModelFeatures, Precision
from services.evaluation.config import (
    AUTOSCALE,
    STATIC,
    EvalConfig,
)
from services.evaluation.simulator import (
    Block,
    ModelCase,
    Trace,
    make_block,
    model_case,
    opt_chooser,
    run_steps,
    set_exploration,
    uniform_chooser,
)

PREDICTORS = ("lr", "svr", "svm", "knn", "bo", "linucb")
TRAINED = (*AUTOSCALE, *PREDICTORS)  # policies with a LOO training phase
# Fig. 13's target categories (DVFS steps aggregated).
CATEGORIES = ("edge-cpu-fp32", "edge-cpu-int8", "edge-gpu-fp32", "edge-gpu-fp16", "edge-dsp-int8", "cloud", "peer")


def category(target_id: str) -> str:
    runner, proc, prec = target_id.partition("@")[0].split("/")
    return f"edge-{proc}-{prec}" if runner == "edge" else runner


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


def _single_threaded_blas() -> Any:
    """One BLAS thread per process: the evaluation parallelises over processes, and OpenBLAS's
    spinning worker threads otherwise burn a second core per process for nothing (measured: a
    fold costs up to 3x the CPU time with the default 2 threads on 2 cores). Returns the limiter
    (a context manager that restores the previous setting), or a null context."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()


def _init_worker(features: dict[str, ModelFeatures]) -> None:
    _single_threaded_blas()
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
    mesh = Mesh(
        edge=edge, peer=load_profile(cfg.peer, cfg.profiles_dir), cloud=load_profile(cfg.cloud, cfg.profiles_dir)
    )
    scen = {s: load_scenario(s, cfg.scenarios_dir) for s in cfg.scenarios}
    return DeviceWorld(cfg, edge.name, mesh, {v.name: v for v in scen.values()}, zoo_models(cfg.models))


# ----------------------------------------------------------------------------- policies


def build_policy(name: str, cfg: EvalConfig, seed: int, mesh: Mesh | None = None) -> Any:
    """A fresh policy; predictors are set up to be fitted once on their training samples. ``mesh``:
    the device's profiles, which the prior learner (``EvalConfig.learner``) is given."""
    from services.core.policies import make_policy
    from services.core.policies.predictors import BayesOptPolicy, ClassifierPolicy, PredictorParams, RegressionPolicy

    never = 10**12  # refit only when we say so: offline-trained predictors
    if name in AUTOSCALE:
        return autoscale_policy(name, cfg, seed, mesh=mesh)
    if name in ("lr", "svr"):
        return RegressionPolicy(
            name, PredictorParams(buffer=cfg.predictor_samples, refit_every=never, seed=seed, background_fit=False)
        )
    if name in ("svm", "knn"):
        return ClassifierPolicy(
            name, PredictorParams(buffer=cfg.predictor_samples, refit_every=never, seed=seed, background_fit=False)
        )
    if name == "bo":
        # A GP's fit is cubic in the samples: keep its buffer small (the BO policy's own default is 400).
        return BayesOptPolicy(
            PredictorParams(
                epsilon=0.0, buffer=min(cfg.predictor_samples, 150), refit_every=never, seed=seed, background_fit=False
            )
        )
    return make_policy(name, seed=seed, background_fit=False)


def autoscale_params(name: str, cfg: EvalConfig, seed: int, epsilon: float = 0.1) -> Any:
    from services.core.policies import QParams

    if name == "autoscale-paper":
        return QParams.paper(init_seed=seed, epsilon=epsilon)
    return QParams(
        init_seed=seed,
        epsilon=epsilon,
        discount=cfg.discount,
        q_init=cfg.q_init,
        lr_schedule=cfg.lr_schedule,
        init_optimism=cfg.init_optimism,
        explore_bonus=cfg.explore_bonus,
        explore_untried=cfg.explore_untried,
        lr_floor=cfg.lr_floor,
        near_radius=cfg.near_radius,
    )


def autoscale_policy(name: str, cfg: EvalConfig, seed: int, table: Any | None = None, mesh: Mesh | None = None) -> Any:
    from services.core.policies import QLearningPolicy, QTable

    if name == "autoscale" and cfg.learner == "prior" and mesh is not None:
        from services.core.policies.prior import PriorParams, PriorPolicy

        params = PriorParams(init_seed=seed, reward_mode=cfg.reward_mode, weights=cfg.weights())
        return PriorPolicy(table if table is not None else QTable(), mesh, params, name=name)
    return QLearningPolicy(table if table is not None else QTable(), autoscale_params(name, cfg, seed), name=name)


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
    reward_oracle_match: int = 0  # choice == argmax of the expected reward (the policy's reward mode)
    reward_oracle_is_opt: int = 0  # that argmax == Opt's choice (the ceiling that reward allows)
    # Tie rule (paper Sec. VI-B: "mis-predicts only when the energy difference ... is less than
    # 1 %"): the choice's expected energy is within 1 % of Opt's and it meets QoS in expectation
    # whenever Opt's does. A separate metric; never replaces the exact match.
    opt_tie_match: int = 0
    qos_expected_miss: int = 0  # choices whose *expected* latency misses QoS while Opt's meets it
    expected_energy_j: float = 0.0  # sum of the choices' expected (noise-free) energy
    opt_expected_energy_j: float = 0.0
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
        ee, oe = a["expected_energy_j"][sl], a["opt_expected_energy_j"][sl]
        feas = a["expected_qos_met"][sl] | ~a["opt_expected_qos_met"][sl]
        self.opt_tie_match += int(((ch == op) | ((ee <= 1.01 * oe) & feas)).sum())
        self.qos_expected_miss += int((~feas).sum())
        self.expected_energy_j += float(ee.sum())
        self.opt_expected_energy_j += float(oe.sum())
        for c, o in zip(ch.tolist(), op.tolist(), strict=True):
            cc, oc = category(cands_ids[c]), category(cands_ids[o])
            self.choices[cc] = self.choices.get(cc, 0) + 1
            self.opt_choices[oc] = self.opt_choices.get(oc, 0) + 1
            self.opt_category_match += cc == oc

    def merge(self, o: Agg) -> None:
        for k in (
            "n",
            "energy_j",
            "latency_s",
            "qos_violations",
            "accuracy",
            "reward",
            "opt_energy_j",
            "opt_match",
            "opt_category_match",
            "reward_oracle_match",
            "reward_oracle_is_opt",
            "opt_tie_match",
            "qos_expected_miss",
            "expected_energy_j",
            "opt_expected_energy_j",
        ):
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
            "tie_accuracy": self.opt_tie_match / n,
            "qos_expected_miss": self.qos_expected_miss / n,
            "expected_energy_mj": 1e3 * self.expected_energy_j / n,
            "opt_expected_energy_mj": 1e3 * self.opt_expected_energy_j / n,
            "choices": dict(sorted(self.choices.items())),
            "opt_choices": dict(sorted(self.opt_choices.items())),
        }


# ----------------------------------------------------------------------------- main experiment


def _train_steps(world: DeviceWorld, held_out: str, rng: random.Random) -> list[tuple[Block, int]]:
    cfg = world.cfg
    steps = [
        (world.block(m, s, "train", cfg.runs), i)
        for m in world.features
        if m != held_out
        for s in world.scenarios
        for i in range(cfg.runs)
    ]
    rng.shuffle(steps)  # interleaved use, as a phone serving several apps would see
    return steps


ONLINE = (*AUTOSCALE, "linucb", "edge-best", "connected-edge")  # keep learning on the held-out network


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
    blocks = {s: world.block(held_out, s, "test", n_total) for s in world.scenarios}
    for name in cfg.policies:
        pseed = _seed(cfg.seed, device, held_out, name) % (2**31)
        policy = build_policy(name, cfg, pseed, world.mesh)
        rng = random.Random(pseed)
        mode, weights = cfg.reward_of(name)
        if name in AUTOSCALE and train:
            run_steps(policy, train, rng, reward_mode=mode, weights=weights, record=False)
            decisions += len(train)
        elif name in PREDICTORS and train:
            sample = random.Random(pseed).sample(train, min(cfg.predictor_samples, len(train)))
            run_steps(policy, sample, rng, chooser=uniform_chooser, reward_mode=mode, weights=weights, record=False)
            _fit_now(policy)
            decisions += len(sample)
        n_test = cfg.predictor_test_runs if name in PREDICTORS else cfg.test_runs
        offline = name in PREDICTORS and name not in ONLINE  # never refitted: both windows are alike
        for s in world.scenarios:
            block = blocks[s]
            for wname, start in windows.items():
                if offline and wname == "cold":
                    continue  # measured once, on the adapted window (same model, same distribution)
                if wname == "adapted" and name in ONLINE and cfg.adapt_runs > 0:
                    set_exploration(policy, 0.1 if name in AUTOSCALE else 0.0)
                    steps = [(block, i) for i in range(cfg.test_runs, cfg.test_runs + cfg.adapt_runs)]
                    run_steps(policy, steps, rng, reward_mode=mode, weights=weights, record=False)
                    decisions += len(steps)
                set_exploration(policy, 0.0)
                idx = range(start, start + n_test)
                # Opt replays the block's precomputed oracle choice (the vectorised opt_choice,
                # tested equal); offline predictors decide the whole window in one batch.
                tr = run_steps(
                    policy,
                    [(block, i) for i in idx],
                    rng,
                    reward_mode=mode,
                    weights=weights,
                    chooser=opt_chooser if name == "opt" else None,
                    batch=offline,
                )
                decisions += n_test
                agg = Agg()
                agg.add(tr, ids)
                _lat, en = block.measured
                agg.opt_energy_j = float(sum(en[i, block.opt[i]] for i in idx))
                out[wname][s][name] = agg
                if offline:
                    out["cold"][s][name] = agg
    return {
        "device": world.device,
        "model": held_out,
        "aggs": {w: {s: {p: asdict(a) for p, a in d.items()} for s, d in by_s.items()} for w, by_s in out.items()},
        "noise_floor": {
            s: noise_floor(blocks[s], [range(st, st + cfg.test_runs) for st in windows.values()])
            for s in world.scenarios
        },
        "seconds": time.perf_counter() - t0,
        "decisions": decisions,
    }


def noise_floor(block: Block, windows: Sequence[range]) -> dict[str, int]:
    """How close Opt's choice is to the runner-up on the measured test inferences.

    For each inference: the runner-up = the cheapest (expected energy) other target in Opt's own
    pool (meeting QoS and accuracy, or accuracy only where nothing meets QoS). ``lt1``: it is
    within 1 % of Opt's energy (the paper's tie rule); ``lt_sigma``: within the outcome noise's
    sigma, so that a single measurement of each orders them wrongly with probability > ~25 %."""
    c = block.case
    idx = np.array([i for w in windows for i in w], dtype=np.int64)
    lat, en = block.latency[idx], block.energy[idx]
    if c.accuracy_min is None:
        acc_ok = np.ones(len(c.accuracy), dtype=bool)
    else:
        acc_ok = c.accuracy >= c.accuracy_min
        if not acc_ok.any():
            acc_ok = c.accuracy == c.accuracy.max()
    ok = acc_ok[None, :] & (lat < c.qos_s)
    pool = np.where(ok.any(axis=1, keepdims=True), ok, acc_ok[None, :])
    e = np.where(pool, en, np.inf)
    opt = block.opt[idx]
    e_opt = e[np.arange(len(idx)), opt]
    e[np.arange(len(idx)), opt] = np.inf
    runner = e.min(axis=1)
    rel = runner / e_opt - 1.0
    sigma = max(block.noise_sigma, 1e-12)
    return {
        "n": len(idx),
        "lt1": int((rel < 0.01).sum()),
        "lt_sigma": int((rel < sigma).sum()),
        "lt_half_sigma": int((rel < sigma / 2).sum()),
    }


# ----------------------------------------------------------------------------- convergence & transfer


def convergence_curve(
    cfg: EvalConfig,
    device: str,
    scenarios: Sequence[str],
    table: Any | None = None,
    tag: str = "conv",
    variant: str = "autoscale",
) -> dict[str, Any]:
    """From scratch (or from ``table``): every (network, scenario) learnt in parallel, run by run.

    Run r = the r-th inference of each (network, scenario), in a shuffled order, epsilon 0.1.
    After each run, for every block, the action the learner would exploit now (epsilon 0) is
    scored on the noise-free model:

    * ``energy_gap``: expected energy of the exploited actions / Opt's - 1 (summed over blocks),
      and ``qos_miss``: share of blocks whose exploited action misses QoS in expectation where
      Opt's meets it -- the headline yardstick, the same for every variant.
      ``runs_to_converge`` (the reported one): the first run from which the 5-run trailing
      moving averages of both stay within ``convergence_tolerance`` (|energy gap| <= 5 %, QoS
      misses <= 5 % of the blocks); ``runs_to_converge_strict``: the same without smoothing.
    * ``gap``: sum over blocks of (best expected reward - the exploited action's expected reward)
      / sum |best expected reward|, "expected" under the outcome noise, "best" = what a perfect
      learner of this variant's own reward picks; ``runs_to_converge_reward``: first run from which
      its 5-run moving average stays within the tolerance.
    * ``reward``: the mean measured reward of the run (the curve of the paper's Fig. 14, with
      exploration); ``reward_stable_run``: the first run from which its 5-run moving average stays
      within the tolerance of the final level (mean of the last 10 runs).
    """
    world = _world(cfg, device)
    policy = autoscale_policy(variant, cfg, cfg.seed, table, mesh=world.mesh)
    qt = policy.source
    mode, weights = cfg.reward_of(variant)
    rng = random.Random(_seed(cfg.seed, device, tag))
    n = cfg.convergence_runs
    blocks = [world.block(m, s, "conv", n) for m in world.features for s in scenarios]
    exp_r = [b.expected_rewards(mode, weights) for b in blocks]
    best = [b.reward_argmax(mode, weights) for b in blocks]
    reward_curve, gap_curve, energy_curve, qos_curve = [], [], [], []
    for r in range(n):
        order = list(range(len(blocks)))
        rng.shuffle(order)
        tr = run_steps(policy, [(blocks[b], r) for b in order], rng, reward_mode=mode, weights=weights)
        reward_curve.append(float(np.mean(tr.reward)))
        old = set_exploration(policy, 0.0)
        g_sum = b_sum = e_g = e_o = 0.0
        misses = 0
        for b in order:
            blk = blocks[b]
            j = blk.case.index[policy.decide(blk.context(r), rng).target.id]
            k, o = int(best[b][r]), int(blk.opt[r])
            g_sum += exp_r[b][r, k] - exp_r[b][r, j]
            b_sum += abs(exp_r[b][r, k])
            e_g += blk.energy[r, j]
            e_o += blk.energy[r, o]
            q = blk.case.qos_s
            misses += bool(blk.latency[r, j] >= q and blk.latency[r, o] < q)
        set_exploration(policy, old if old is not None else 0.1)
        gap_curve.append(max(0.0, g_sum / b_sum) if b_sum > 0 else 0.0)
        energy_curve.append(e_g / e_o - 1.0 if e_o > 0 else 0.0)
        qos_curve.append(misses / len(blocks))
    tol = cfg.convergence_tolerance
    e_ma, q_ma, g_ma = _trailing_mean(energy_curve), _trailing_mean(qos_curve), _trailing_mean(gap_curve)
    return {
        "reward": reward_curve,
        "gap": gap_curve,
        "energy_gap": energy_curve,
        "qos_miss": qos_curve,
        "runs_to_converge": _first_run_from_which(
            [abs(e) <= tol and q <= tol for e, q in zip(e_ma, q_ma, strict=True)]
        ),
        "runs_to_converge_strict": _first_run_from_which(
            [abs(e) <= tol and q <= tol for e, q in zip(energy_curve, qos_curve, strict=True)]
        ),
        "runs_to_converge_reward": runs_to_converge(g_ma, tol),
        "reward_stable_run": reward_stable_run(reward_curve, tol),
        "table": qt,
    }


def _trailing_mean(x: Sequence[float], window: int = 5) -> list[float]:
    a = np.asarray(x, dtype=float)
    c = np.concatenate([[0.0], np.cumsum(a)])
    return [float((c[i + 1] - c[max(0, i + 1 - window)]) / (i + 1 - max(0, i + 1 - window))) for i in range(len(a))]


def _first_run_from_which(ok: Sequence[bool]) -> int | None:
    """1-based index of the first run from which ``ok`` holds to the end (None: never)."""
    bad = [i for i, v in enumerate(ok) if not v]
    if not ok:
        return None
    if not bad:
        return 1
    return bad[-1] + 2 if bad[-1] + 1 < len(ok) else None


def runs_to_converge(gap: Sequence[float], tol: float) -> int | None:
    """First run from which the greedy gap stays within ``tol`` (None: never)."""
    for r in range(len(gap)):
        if all(g <= tol for g in gap[r:]):
            return r + 1
    return None


def reward_stable_run(reward: Sequence[float], tol: float, window: int = 5, tail: int = 10) -> int | None:
    """First run from which the ``window``-run moving average of the reward stays within ``tol``
    (relative) of its final level, the mean of the last ``tail`` runs (None: never)."""
    if len(reward) < max(window, tail):
        return None
    x = np.asarray(reward, dtype=float)
    final = float(x[-tail:].mean())
    ma = np.convolve(x, np.ones(window) / window, mode="valid")  # ma[k] covers runs k .. k+window-1
    ok = np.abs(ma - final) <= tol * abs(final)
    for k in range(len(ma)):
        if ok[k:].all():
            return k + window
    return None


def run_convergence_and_transfer(cfg: EvalConfig) -> dict[str, Any]:
    """Fig. 14: convergence from scratch per device and with a table transferred from the source,
    for every AutoScale variant evaluated."""
    from services.core.policies.qlearning import transfer_table, validate_export

    names = list(_world(cfg, cfg.devices[0]).scenarios)
    static = [s for s in names if s in STATIC] or names[:1]
    variants = [v for v in AUTOSCALE if v in cfg.policies] or ["autoscale"]
    by_name = {_world(cfg, d).device: d for d in cfg.devices}
    src_name = cfg.transfer_source if cfg.transfer_source in by_name else next(iter(by_name))
    src = by_name[src_name]
    out: dict[str, Any] = {
        "scenarios": static,
        "tolerance": cfg.convergence_tolerance,
        "source": src_name,
        "variants": {},
    }
    for variant in variants:
        v_out: dict[str, Any] = {"scratch": {}, "transfer": {}}
        src_curve = None
        for name, d in by_name.items():
            c = convergence_curve(cfg, d, static, tag="conv", variant=variant)
            v_out["scratch"][name] = {k: v for k, v in c.items() if k != "table"}
            if d == src:
                src_curve = c
        if src_curve is not None:
            src_actions = [t.id for t in _world(cfg, src).mesh.targets()]
            exported = validate_export(src_curve["table"].export(src_name, src_actions))
            for name, d in by_name.items():
                if d == src:
                    continue
                from services.core.policies import QTable

                dest_actions = [t.id for t in _world(cfg, d).mesh.targets()]
                table, report = transfer_table(exported, name, dest_actions)
                qt = QTable()
                qt.load(table)
                c = convergence_curve(cfg, d, static, table=qt, tag="conv-transfer", variant=variant)
                v_out["transfer"][name] = {k: v for k, v in c.items() if k != "table"}
                v_out["transfer"][name]["entries_copied"] = report.entries_copied
        out["variants"][variant] = v_out
    # The configured AutoScale's curves at the top level too (the figures and older readers use them).
    main = out["variants"].get("autoscale") or next(iter(out["variants"].values()))
    out["scratch"], out["transfer"] = main["scratch"], main["transfer"]
    return out


def run_accuracy_targets(cfg: EvalConfig, device: str) -> dict[str, Any]:
    """Fig. 12: AutoScale (LOO + online adaptation, static scenarios) vs Opt and Edge (CPU FP32) per
    accuracy target; same protocol as the main experiment's adapted window, shorter training."""
    world = _world(cfg, device)
    static = [s for s in world.scenarios if s in STATIC] or list(world.scenarios)
    learners = ["autoscale"]  # the configured AutoScale (the paper's variant is compared in the main experiment)
    res: dict[str, Any] = {}
    refused: dict[str, list[str]] = {}
    for target in cfg.accuracy_targets:
        aggs = {p: Agg() for p in (*learners, "opt", "edge-cpu-fp32")}
        # The decider refuses (422) a request no target can satisfy, e.g. SSD (COCO mAP ~20 %) at 50 %:
        # eq. 5 would give every target R = accuracy - 100, with no energy signal to learn from.
        models = [m for m in world.features if target is None or (world.case(m, target).accuracy >= target).any()]
        refused["none" if target is None else f"{target:g}"] = [m for m in world.features if m not in models]
        for k in models:
            train = [
                (world.block(m, s, "acc-train", cfg.accuracy_runs, target), i)
                for m in models
                if m != k
                for s in static
                for i in range(cfg.accuracy_runs)
            ]
            random.Random(_seed(cfg.seed, device, k, target)).shuffle(train)
            ids = [c.target.id for c in world.case(k, target).candidates]
            for name in aggs:
                # the configured AutoScale keeps its historical seed stream
                policy = build_policy(name, cfg, _seed(cfg.seed, device, k, name, target) % (2**31), world.mesh)
                rng = random.Random(_seed(cfg.seed, device, k, name, "acc"))
                mode, weights = cfg.reward_of(name)
                learner = name in learners
                if learner and train:
                    run_steps(policy, train, rng, reward_mode=mode, weights=weights, record=False)
                adapt = cfg.adapt_runs if learner else 0
                for s in static:
                    b = world.block(k, s, "acc-test", adapt + cfg.accuracy_test_runs, target)
                    if adapt:  # same protocol as the main experiment's adapted window
                        set_exploration(policy, 0.1)
                        run_steps(
                            policy, [(b, i) for i in range(adapt)], rng, reward_mode=mode, weights=weights, record=False
                        )
                    set_exploration(policy, 0.0)
                    idx = range(adapt, adapt + cfg.accuracy_test_runs)
                    aggs[name].add(
                        run_steps(policy, [(b, i) for i in idx], rng, reward_mode=mode, weights=weights), ids
                    )
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

    return sum(
        resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
        for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def evaluate(cfg: EvalConfig, progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Run everything; returns the results dict (see report.py for how it is read)."""
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
            initargs=(dict(_FEATURES),),
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


def _agg_from(d: dict[str, Any]) -> Agg:
    return Agg(**d)


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
                    agg = _agg_from(a)
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
    from services.core.schemas import RuntimeConditions
    from services.core.state import observe

    feats = zoo_models(models)
    nn = {m: observe(f, RuntimeConditions()).labels() for m, f in feats.items()}
    key = {m: tuple(v for k, v in lab.items() if k in ("conv", "fc", "rc", "mac")) for m, lab in nn.items()}
    return {m: [o for o in feats if o != m and key[o] == key[m]] for m in feats}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
