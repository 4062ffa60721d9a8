"""The mesh simulator: scenario -> conditions -> Table I state -> policy -> modelled outcome -> reward.

Everything a policy is evaluated on is precomputed per *block* (one network, one scenario, a
number of consecutive inferences): the conditions, the states, the true (expected) cost of every
candidate from the vectorised cost model, a multiplicative lognormal noise per (inference,
target), and Opt's choice. Every policy then replays the same block, so policies are compared on
common random numbers: two policies that pick the same target at the same inference observe the
same outcome.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from services.common.costmodel import CostTable, Mesh
from services.common.reward import RewardWeights
from services.common.reward import reward as eq5_reward
from services.common.scenarios import Scenario
from services.common.schemas import ModelFeatures, Precision, RuntimeConditions, Target
from services.common.state import observe
from services.decider.policies.base import Candidate, Decision, DecisionContext, Outcome, Policy

AccuracyFn = Callable[[str, Precision], float | None]

_FIELDS = ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm")


@dataclass
class ModelCase:
    """One network on one mesh: its runnable candidates and their vectorised cost table."""

    name: str
    features: ModelFeatures
    candidates: tuple[Candidate, ...]  # one tuple object, reused: the Q-learner memoises by identity
    accuracy: np.ndarray  # (T,) expected accuracy of each candidate, %
    table: CostTable
    qos_s: float
    accuracy_min: float | None
    index: dict[str, int] = field(default_factory=dict)  # action id -> candidate index

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {c.target.id: j for j, c in enumerate(self.candidates)}

    @property
    def targets(self) -> list[Target]:
        return [c.target for c in self.candidates]


def model_case(
    mesh: Mesh,
    name: str,
    features: ModelFeatures,
    accuracy_of: AccuracyFn,
    qos_s: float,
    accuracy_min: float | None = None,
) -> ModelCase:
    """Candidates = the mesh's targets that support the network at a precision it is offered in."""
    cands: list[Candidate] = []
    for t in mesh.targets(features):
        acc = accuracy_of(name, Precision(t.precision))
        if acc is not None:
            cands.append(Candidate(target=t, accuracy=float(acc)))
    if not cands:
        raise ValueError(f"{name}: no target of the mesh can run it")
    targets = [c.target for c in cands]
    return ModelCase(
        name=name,
        features=features,
        candidates=tuple(cands),
        accuracy=np.array([c.accuracy for c in cands]),
        table=CostTable(mesh, features, targets),
        qos_s=qos_s,
        accuracy_min=accuracy_min,
    )


def opt_indices(
    latency: np.ndarray, energy: np.ndarray, accuracy: np.ndarray, qos_s: float, accuracy_min: float | None
) -> np.ndarray:
    """Opt per row (vectorised ``baselines.opt_choice``): min energy meeting QoS and accuracy; else
    min energy meeting accuracy; else min energy among the most accurate. Ties: lower latency."""
    if accuracy_min is None:
        acc_ok = np.ones_like(accuracy, dtype=bool)
    else:
        acc_ok = accuracy >= accuracy_min
        if not acc_ok.any():
            acc_ok = accuracy == accuracy.max()
    ok = acc_ok[None, :] & (latency < qos_s)
    pool = np.where(ok.any(axis=1, keepdims=True), ok, acc_ok[None, :])
    # lexicographic (energy, latency): energy first, latency as a tiny tie-breaker
    key = np.where(pool, energy + latency * 1e-12, np.inf)
    return np.argmin(key, axis=1)


@dataclass
class Block:
    """``n`` consecutive inferences of one network in one scenario, with everything precomputed."""

    case: ModelCase
    scenario: str
    conditions: list[RuntimeConditions]
    states: np.ndarray  # (n,) Table I indices
    latency: np.ndarray  # (n, T) expected latency, s
    energy: np.ndarray  # (n, T) expected phone energy, J
    device_energy: np.ndarray  # (n, T) executing device's energy, J
    noise: np.ndarray  # (n, T) multiplicative lognormal noise of the measured outcome
    opt: np.ndarray  # (n,) Opt's candidate index per inference
    best_reward: np.ndarray  # (n,) index maximising the expected eq. 5 reward (what a perfect learner picks)
    _contexts: list[DecisionContext] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.states)

    def context(self, i: int) -> DecisionContext:
        if self._contexts is None:
            self._contexts = [self._make_context(j) for j in range(self.n)]
        return self._contexts[i]

    def _make_context(self, i: int) -> DecisionContext:
        case = self.case
        lat, en, acc = self.latency[i], self.energy[i], case.accuracy
        index = case.index

        def oracle(t: Target) -> Outcome:  # Opt's (and profiling baselines') true expected cost
            j = index[t.id]
            return Outcome(latency_s=float(lat[j]), energy_j=float(en[j]), accuracy=float(acc[j]))

        return DecisionContext(
            model=case.name,
            features=case.features,
            conditions=self.conditions[i],
            state=int(self.states[i]),
            candidates=case.candidates,
            qos_s=case.qos_s,
            accuracy_min=case.accuracy_min,
            oracle=oracle,
        )


def reward_matrix(
    energy_j: np.ndarray, latency_s: np.ndarray, accuracy: np.ndarray, qos_s: float, accuracy_min: float | None,
    weights: RewardWeights = RewardWeights(),
) -> np.ndarray:
    """Eq. 5 over arrays: the vectorised twin of ``services.common.reward.reward`` (tested equal)."""
    e_mj, l_ms = energy_j * 1e3, latency_s * 1e3
    acc = np.broadcast_to(accuracy, e_mj.shape)
    met = np.where(l_ms < qos_s * 1e3, -e_mj + weights.alpha * l_ms + weights.beta * acc, -e_mj + weights.beta * acc)
    if accuracy_min is None:
        return met
    return np.where(acc < accuracy_min, acc - 100.0, met)


def make_block(
    case: ModelCase, scenario: Scenario, n: int, rng: np.random.Generator, noise_sigma: float, t0_s: float = 0.0
) -> Block:
    series = scenario.conditions_series(n, rng, t0_s)
    costs = case.table.evaluate(*(series[f] for f in _FIELDS))
    conds = [
        RuntimeConditions.model_construct(**{f: float(series[f][i]) for f in _FIELDS}) for i in range(n)
    ]
    states = np.array([observe(case.features, c).index for c in conds], dtype=np.int64)
    t = len(case.candidates)
    # Lognormal with unit mean, so the expected outcome is the modelled one.
    noise = rng.lognormal(-0.5 * noise_sigma**2, noise_sigma, (n, t)) if noise_sigma > 0 else np.ones((n, t))
    opt = opt_indices(costs["latency_s"], costs["energy_j"], case.accuracy, case.qos_s, case.accuracy_min)
    best = np.argmax(reward_matrix(costs["energy_j"], costs["latency_s"], case.accuracy, case.qos_s, case.accuracy_min), axis=1)
    return Block(
        case=case,
        scenario=scenario.name,
        conditions=conds,
        states=states,
        latency=costs["latency_s"],
        energy=costs["energy_j"],
        device_energy=costs["device_energy_j"],
        noise=noise,
        opt=opt,
        best_reward=best,
    )


@dataclass
class Trace:
    """What one policy did over a sequence of (block, inference) steps."""

    choice: list[int] = field(default_factory=list)
    opt: list[int] = field(default_factory=list)
    best_reward: list[int] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    opt_reward: list[float] = field(default_factory=list)
    qos_s: list[float] = field(default_factory=list)
    accuracy_min: list[float] = field(default_factory=list)
    explored: list[bool] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def _reward(energy_j: float, latency_s: float, accuracy: float, qos_s: float, accuracy_min: float | None) -> float:
    return eq5_reward(
        energy_mj=energy_j * 1e3, latency_ms=latency_s * 1e3, accuracy=accuracy, qos_ms=qos_s * 1e3,
        accuracy_min=accuracy_min,
    )


def outcome_of(block: Block, i: int, j: int) -> Outcome:
    """The measured outcome of candidate ``j`` at inference ``i`` (expected cost x noise)."""
    f = float(block.noise[i, j])
    return Outcome(
        latency_s=float(block.latency[i, j]) * f,
        energy_j=float(block.energy[i, j]) * f,
        accuracy=float(block.case.accuracy[j]),
    )


def run_steps(
    policy: Policy,
    steps: Sequence[tuple[Block, int]],
    rng: random.Random,
    *,
    learn: bool = True,
    trace: Trace | None = None,
    chooser: Callable[[Block, int, random.Random], int] | None = None,
) -> Trace:
    """Replay ``steps`` through ``policy``: decide, observe the noisy outcome, reward, learn.

    ``chooser`` overrides the decision (e.g. uniform exploration to collect a predictor's
    training data); the policy still learns from the outcome."""
    tr = trace if trace is not None else Trace()
    for block, i in steps:
        ctx = block.context(i)
        case = block.case
        if chooser is not None:
            j = chooser(block, i, rng)
            decision = Decision(case.candidates[j].target, explored=True)
        else:
            decision = policy.decide(ctx, rng)
            j = case.index[decision.target.id]
        out = outcome_of(block, i, j)
        r = _reward(out.energy_j, out.latency_s, out.accuracy, case.qos_s, case.accuracy_min)
        if learn:
            policy.learn(ctx, decision, out, r)
        k = int(block.opt[i])
        o_opt = outcome_of(block, i, k)
        tr.choice.append(j)
        tr.opt.append(k)
        tr.best_reward.append(int(block.best_reward[i]))
        tr.energy_j.append(out.energy_j)
        tr.latency_s.append(out.latency_s)
        tr.accuracy.append(out.accuracy)
        tr.reward.append(r)
        tr.opt_reward.append(_reward(o_opt.energy_j, o_opt.latency_s, o_opt.accuracy, case.qos_s, case.accuracy_min))
        tr.qos_s.append(case.qos_s)
        tr.accuracy_min.append(math.nan if case.accuracy_min is None else case.accuracy_min)
        tr.explored.append(decision.explored)
    return tr


def uniform_chooser(block: Block, i: int, rng: random.Random) -> int:
    """Uniform over the candidates meeting the accuracy requirement (all, if none does)."""
    acc = block.case.accuracy
    amin = block.case.accuracy_min
    ok = np.flatnonzero(acc >= amin) if amin is not None else np.arange(len(acc))
    if len(ok) == 0:
        ok = np.arange(len(acc))
    return int(ok[rng.randrange(len(ok))])


def set_exploration(policy: Policy, epsilon: float) -> float | None:
    """Set a learner's exploration probability (test phases exploit); returns the previous one.

    Works for policies whose ``params`` dataclass has an ``epsilon`` (Q-learning, predictors);
    others (UCB, fixed baselines) are left alone and None is returned."""
    params = getattr(policy, "params", None)
    if params is None or not hasattr(params, "epsilon"):
        return None
    old = float(params.epsilon)
    policy.params = replace(params, epsilon=epsilon)  # type: ignore[attr-defined]
    return old
