"""The mesh simulator: scenario -> conditions -> Table I state -> policy -> outcome -> reward.

Everything a policy is evaluated on is precomputed per *block* (one network, one scenario, a
number of consecutive inferences): the conditions, the states, the true (expected) cost of every
candidate -- the vectorised cost model under the hidden ``TrueWorld`` deviations
(``services.evaluation.truth``), not the profiles -- a multiplicative lognormal run-to-run noise
per (inference, target), the phone estimator's bias per target, and Opt's choice. Every policy
then replays the same block, so policies are compared on common random numbers: two policies that
pick the same target at the same inference observe the same outcome.

Three views of one inference's cost, kept apart on purpose:

* ``latency`` / ``energy``: the true expected cost. Opt is defined on it (paper fn. 8).
* ``measured``: what really happened (true cost x the run's noise). Every score sums it.
* ``observed``: what the phone can know and a policy is told (``Outcome``) -- the measured latency
  (a clock reads it) and the energy *estimate* (eqs. 1-4 on that latency with the phone's power
  table, which errs by the hidden estimator bias). Every reward is computed from it.

Policies receive only ``DecisionContext``s (no oracle: Opt and the offline-profiled baselines
replay choices precomputed here) and observed ``Outcome``s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from services.core.costmodel import CostTable, Mesh
from services.core.partition import PlanCostTable
from services.core.policies.base import (
    BatchPolicy,
    Candidate,
    Decision,
    DecisionContext,
    ExploringPolicy,
    Outcome,
    Policy,
)
from services.core.reward import RewardWeights
from services.core.reward import reward as eq5_reward
from services.core.scenarios import Scenario
from services.core.schemas import CutPoint, ModelFeatures, Precision, RuntimeConditions, Target
from services.core.state import observe
from services.evaluation.reward_matrix import expected_reward_matrix, reward_matrix
from services.evaluation.truth import TrueWorld

AccuracyFn = Callable[[str, Precision], float | None]

# The scenario series a cost table is evaluated on, in its argument order.
CONDITION_FIELDS = ("co_cpu", "co_mem", "rssi_wifi_dbm", "rssi_p2p_dbm")


@dataclass
class ModelCase:
    """One network on one mesh: its runnable candidates and their vectorised cost table.

    Partitioned plans some contenders may run (``plans``: NeuroSurgeon's splits, MOSAIC's slicing,
    AutoScale's split actions) are further columns after the candidates' (``plan_table`` costs
    them); a context offers the candidates only, and Opt is defined over them (the paper's action
    space), so a case without plans is exactly what it was before plans existed."""

    name: str
    features: ModelFeatures
    candidates: tuple[Candidate, ...]  # one tuple object, reused: the Q-learner memoises by identity
    accuracy: np.ndarray  # (T + P,) expected accuracy of each candidate, then of each plan, %
    table: CostTable
    qos_s: float
    accuracy_min: float | None
    index: dict[str, int] = field(default_factory=dict)  # action id -> column
    plans: tuple[Candidate, ...] = ()
    plan_table: PlanCostTable | None = None
    cuts: tuple[CutPoint, ...] = ()

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {c.action_id: j for j, c in enumerate((*self.candidates, *self.plans))}

    @property
    def targets(self) -> list[Target]:
        return [c.target for c in self.candidates]

    @property
    def column_ids(self) -> list[str]:
        """The action id of every column: the candidates', then the plans'."""
        return [c.action_id for c in (*self.candidates, *self.plans)]


def model_case(
    mesh: Mesh,
    name: str,
    features: ModelFeatures,
    accuracy_of: AccuracyFn,
    qos_s: float,
    accuracy_min: float | None = None,
    plans: Sequence[Candidate] = (),
    cuts: Sequence[CutPoint] = (),
) -> ModelCase:
    """Candidates = the mesh's targets that support the network at a precision it is offered in;
    ``plans``: partitioned plans as further columns (``cuts``: the network's cut points)."""
    cands: list[Candidate] = []
    for t in mesh.targets(features):
        acc = accuracy_of(name, Precision(t.precision))
        if acc is not None:
            cands.append(Candidate(target=t, accuracy=float(acc)))
    if not cands:
        raise ValueError(f"{name}: no target of the mesh can run it")
    targets = [c.target for c in cands]
    plan_table = PlanCostTable(mesh, features, cuts, [c.plan for c in plans if c.plan is not None]) if plans else None
    return ModelCase(
        name=name,
        features=features,
        candidates=tuple(cands),
        accuracy=np.array([c.accuracy for c in (*cands, *plans)]),
        table=CostTable(mesh, features, targets),
        qos_s=qos_s,
        accuracy_min=accuracy_min,
        plans=tuple(plans),
        plan_table=plan_table,
        cuts=tuple(cuts),
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
    best_reward: np.ndarray  # (n,) index maximising the expected eq. 5 reward (noise-free)
    informed: np.ndarray  # (n,) Opt's rule on what a decider could learn of the truth (truth.py)
    noise_sigma: float = 0.0
    # (T,) the phone's energy estimate / the true energy per target (hidden; 1 = exact estimator)
    est_bias: np.ndarray | None = field(default=None, repr=False)
    _observed: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    static_choice: dict[str, int] = field(default_factory=dict, repr=False)  # offline-profiled baselines
    _contexts: list[DecisionContext] | None = field(default=None, repr=False)
    _measured: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _rewards: dict[tuple[str, RewardWeights], np.ndarray] = field(default_factory=dict, repr=False)
    _argmax: dict[tuple[str, RewardWeights], np.ndarray] = field(default_factory=dict, repr=False)
    _expected: dict[tuple[str, RewardWeights], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.states)

    def context(self, i: int) -> DecisionContext:
        if self._contexts is None:
            self._contexts = [self._make_context(j) for j in range(self.n)]
        return self._contexts[i]

    def _make_context(self, i: int) -> DecisionContext:
        # No oracle: what a deployed decider knows about an inference before running it.
        case = self.case
        return DecisionContext(
            model=case.name,
            features=case.features,
            conditions=self.conditions[i],
            state=int(self.states[i]),
            candidates=case.candidates,
            qos_s=case.qos_s,
            accuracy_min=case.accuracy_min,
            cuts=case.cuts,
        )

    def truth_context(self, i: int) -> DecisionContext:
        """Inference ``i``'s context *with* an oracle of the true expected costs: for checking Opt's
        fast path against ``opt_choice``; never handed to a policy."""
        lat, en, acc, index = self.latency[i], self.energy[i], self.case.accuracy, self.case.index

        def oracle(t: Target) -> Outcome:
            j = index[t.id]
            return Outcome(latency_s=float(lat[j]), energy_j=float(en[j]), accuracy=float(acc[j]))

        return replace(self.context(i), oracle=oracle)

    def condition_arrays(self) -> tuple[np.ndarray, ...]:
        """The conditions of every inference, one array per ``CONDITION_FIELDS`` entry (a cost table's arguments)."""
        return tuple(np.array([getattr(c, f) for c in self.conditions]) for f in CONDITION_FIELDS)

    @property
    def measured(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency_s, energy_j) as they really were: the true expected cost x the noise, (n, T) each."""
        if self._measured is None:
            self._measured = (self.latency * self.noise, self.energy * self.noise)
        return self._measured

    @property
    def estimated_energy(self) -> np.ndarray:
        """(n, T) expected energy as the phone's estimator reports it (true x its bias)."""
        return self.energy if self.est_bias is None else self.energy * self.est_bias

    @property
    def observed(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency_s, energy_j) as a policy is told: measured latency, estimated energy, (n, T) each."""
        if self._observed is None:
            lat, en = self.measured
            self._observed = (lat, en if self.est_bias is None else en * self.est_bias)
        return self._observed

    def rewards(self, mode: str = "paper", weights: RewardWeights = RewardWeights()) -> np.ndarray:
        """(n, T) reward of every observed outcome under ``mode``."""
        key = (mode, weights)
        r = self._rewards.get(key)
        if r is None:
            lat, en = self.observed
            r = self._rewards[key] = reward_matrix(
                en, lat, self.case.accuracy, self.case.qos_s, self.case.accuracy_min, weights, mode
            )
        return r

    def reward_argmax(self, mode: str = "paper", weights: RewardWeights = RewardWeights()) -> np.ndarray:
        """(n,) the candidate a perfect learner of ``mode``'s reward picks: the argmax of the
        reward's expectation under this block's outcome noise (``expected_reward_matrix``)."""
        key = (mode, weights)
        a = self._argmax.get(key)
        if a is None:
            c = self.case
            t = len(c.candidates)  # over the paper's action space, as Opt
            er = self.expected_rewards(mode, weights)[:, :t]
            if c.accuracy_min is not None:  # masking: never a target below the requirement
                ok = c.accuracy[:t] >= c.accuracy_min
                if ok.any():
                    er = np.where(ok[None, :], er, -np.inf)
            a = self._argmax[key] = np.argmax(er, axis=1)
        return a

    def expected_rewards(self, mode: str = "paper", weights: RewardWeights = RewardWeights()) -> np.ndarray:
        """(n, T) expectation of each candidate's reward (on observed outcomes) under this block's noise."""
        key = (mode, weights)
        er = self._expected.get(key)
        if er is None:
            c = self.case
            er = self._expected[key] = expected_reward_matrix(
                self.estimated_energy,
                self.latency,
                c.accuracy,
                c.qos_s,
                c.accuracy_min,
                self.noise_sigma,
                weights,
                mode,
            )
        return er

    def outcome(self, i: int, j: int) -> Outcome:
        """What a policy is told about candidate ``j`` at inference ``i`` (observed, not true)."""
        lat, en = self.observed
        return Outcome(latency_s=float(lat[i, j]), energy_j=float(en[i, j]), accuracy=float(self.case.accuracy[j]))


def informed_opt(
    case: ModelCase,
    x: Sequence[np.ndarray],
    truth: TrueWorld,
    est_bias: np.ndarray,
    *,
    interaction: bool = False,
    estimator: bool = True,
) -> np.ndarray:
    """Opt's rule per inference on the true costs under conditions ``x`` (``CONDITION_FIELDS``'s
    arrays), without the network's interaction terms (``interaction``) and with energy as the phone's
    estimator reports it (``estimator``, bias ``est_bias`` per candidate): by default "Opt (informed)",
    the most a cold decider could know (``truth``'s module doc)."""
    c = case.table.evaluate(*x, dev=truth.deviations(case.name, case.targets, interaction=interaction))
    energy = c["energy_j"] * est_bias if estimator else c["energy_j"]
    t = len(case.candidates)
    return opt_indices(c["latency_s"], energy, case.accuracy[:t], case.qos_s, case.accuracy_min)


def make_block(
    case: ModelCase,
    scenario: Scenario,
    n: int,
    rng: np.random.Generator,
    noise_sigma: float,
    t0_s: float = 0.0,
    truth: TrueWorld | None = None,
) -> Block:
    """``n`` inferences of ``case`` in ``scenario``; ``truth``: the hidden world (None: the profiles)."""
    series = scenario.conditions_series(n, rng, t0_s)
    dev = truth.deviations(case.name, case.targets) if truth is not None else None
    est_bias = truth.estimator_bias(case.targets) if truth is not None else None
    costs = case.table.evaluate(*(series[f] for f in CONDITION_FIELDS), dev=dev)
    co_cpu, co_mem, wifi, p2p = series["co_cpu"], series["co_mem"], series["rssi_wifi_dbm"], series["rssi_p2p_dbm"]
    conds = [
        RuntimeConditions.model_construct(
            co_cpu=float(co_cpu[i]), co_mem=float(co_mem[i]), rssi_wifi_dbm=float(wifi[i]), rssi_p2p_dbm=float(p2p[i])
        )
        for i in range(n)
    ]
    states = _observe_states(case.features, series)
    t = len(case.candidates)
    # Lognormal with unit mean, so the expected outcome is the modelled one.
    noise = rng.lognormal(-0.5 * noise_sigma**2, noise_sigma, (n, t)) if noise_sigma > 0 else np.ones((n, t))
    # Opt and the reward's argmax are over the candidates, not the plans
    acc = case.accuracy[:t]
    opt = opt_indices(costs["latency_s"], costs["energy_j"], acc, case.qos_s, case.accuracy_min)
    est_energy = costs["energy_j"] if est_bias is None else costs["energy_j"] * est_bias
    best = np.argmax(reward_matrix(est_energy, costs["latency_s"], acc, case.qos_s, case.accuracy_min), axis=1)
    x = tuple(series[f] for f in CONDITION_FIELDS)
    informed = opt if truth is None or est_bias is None else informed_opt(case, x, truth, est_bias)
    if case.plan_table is not None:  # plan columns, their noise drawn after everything above
        plan_dev = None if truth is None else partial(truth.deviations, case.name)
        plan_costs = case.plan_table.evaluate(*(series[f] for f in CONDITION_FIELDS), dev=plan_dev)
        costs = {k: np.hstack([v, plan_costs[k]]) for k, v in costs.items()}
        p = len(case.plans)
        extra = rng.lognormal(-0.5 * noise_sigma**2, noise_sigma, (n, p)) if noise_sigma > 0 else np.ones((n, p))
        noise = np.hstack([noise, extra])
        if truth is not None and est_bias is not None:
            # a plan's estimate is off by its parts' biases together: their geometric mean
            plan_bias = [
                np.exp(np.log(truth.estimator_bias([q.target for q in c.plan.parts])).mean())
                for c in case.plans
                if c.plan
            ]
            est_bias = np.concatenate([est_bias, plan_bias])
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
        informed=informed,
        noise_sigma=noise_sigma,
        est_bias=est_bias,
    )


def _observe_states(features: ModelFeatures, series: dict[str, np.ndarray]) -> np.ndarray:
    """Table I index of every inference (vectorised ``services.core.state.observe``)."""
    n = len(series[CONDITION_FIELDS[0]])
    memo: dict[tuple[float, ...], int] = {}
    out = np.empty(n, dtype=np.int64)
    cols = [np.asarray(series[f], dtype=float) for f in CONDITION_FIELDS]
    for i in range(n):
        key = (cols[0][i], cols[1][i], cols[2][i], cols[3][i])
        v = memo.get(key)
        if v is None:
            v = memo[key] = observe(
                features,
                RuntimeConditions.model_construct(
                    co_cpu=key[0], co_mem=key[1], rssi_wifi_dbm=key[2], rssi_p2p_dbm=key[3]
                ),
            ).index
        out[i] = v
    return out


@dataclass
class Trace:
    """What one policy did over a sequence of (block, inference) steps."""

    choice: list[int] = field(default_factory=list)
    opt: list[int] = field(default_factory=list)
    best_reward: list[int] = field(default_factory=list)  # argmax of the expected reward of the run's mode
    energy_j: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    opt_reward: list[float] = field(default_factory=list)
    qos_s: list[float] = field(default_factory=list)
    accuracy_min: list[float] = field(default_factory=list)
    explored: list[bool] = field(default_factory=list)
    # expected (noise-free) energy of the choice and of Opt's, J: the "within 1 %" tie rule
    expected_energy_j: list[float] = field(default_factory=list)
    opt_expected_energy_j: list[float] = field(default_factory=list)
    # expected latency meets QoS (the feasibility Opt is defined on)
    expected_qos_met: list[bool] = field(default_factory=list)
    opt_expected_qos_met: list[bool] = field(default_factory=list)
    opt_latency_s: list[float] = field(default_factory=list)  # Opt's measured latency on the same inference

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}

    def record(self, block: Block, i: int, j: int, explored: bool, mode: str, weights: RewardWeights) -> None:
        lat, en = block.measured
        rew = block.rewards(mode, weights)
        case = block.case
        k = int(block.opt[i])
        self.choice.append(j)
        self.opt.append(k)
        self.best_reward.append(int(block.reward_argmax(mode, weights)[i]))
        self.energy_j.append(float(en[i, j]))
        self.latency_s.append(float(lat[i, j]))
        self.accuracy.append(float(case.accuracy[j]))
        self.reward.append(float(rew[i, j]))
        self.opt_reward.append(float(rew[i, k]))
        self.qos_s.append(case.qos_s)
        self.accuracy_min.append(math.nan if case.accuracy_min is None else case.accuracy_min)
        self.explored.append(explored)
        self.expected_energy_j.append(float(block.energy[i, j]))
        self.opt_expected_energy_j.append(float(block.energy[i, k]))
        self.expected_qos_met.append(bool(block.latency[i, j] < case.qos_s))
        self.opt_expected_qos_met.append(bool(block.latency[i, k] < case.qos_s))
        self.opt_latency_s.append(float(lat[i, k]))


def _reward(
    energy_j: float,
    latency_s: float,
    accuracy: float,
    qos_s: float,
    accuracy_min: float | None,
    mode: str = "paper",
    weights: RewardWeights = RewardWeights(),
) -> float:
    return eq5_reward(
        energy_mj=energy_j * 1e3,
        latency_ms=latency_s * 1e3,
        accuracy=accuracy,
        qos_ms=qos_s * 1e3,
        accuracy_min=accuracy_min,
        weights=weights,
        mode=mode,
    )


def outcome_of(block: Block, i: int, j: int) -> Outcome:
    """The observed outcome of candidate ``j`` at inference ``i`` (what a policy is told)."""
    return block.outcome(i, j)


class NextState:
    """Algorithm 1's S' when it is "the state observed when the inference ends": in a replayed
    sequence, the next inference's state. A Q-learning policy built with ``next_state=NEXT_STATE``
    reads it when it learns; ``run_steps`` sets it before every learn (None: S' = S)."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self, ctx: DecisionContext) -> int:
        return ctx.state if self.value is None else self.value


NEXT_STATE = NextState()  # one per process: each worker replays one sequence at a time


def run_steps(
    policy: Policy,
    steps: Sequence[tuple[Block, int]],
    rng: random.Random,
    *,
    learn: bool = True,
    trace: Trace | None = None,
    chooser: Callable[[Block, int, random.Random], int] | None = None,
    reward_mode: str = "paper",
    weights: RewardWeights = RewardWeights(),
    record: bool = True,
    batch: bool = False,
) -> Trace:
    """Replay ``steps`` through ``policy``: decide, observe the noisy outcome, reward, learn.

    ``reward_mode`` / ``weights``: the reward the policy learns from (``services.core.reward``).
    ``chooser`` overrides the decision (e.g. uniform exploration to collect a predictor's
    training data); the policy still learns from the outcome. ``record=False`` skips the trace
    (training phases). ``batch=True``: every decision is made up front with the policy's
    ``decide_many`` -- only for a policy whose decisions do not depend on what it learns within
    ``steps`` (an offline-trained predictor); it still learns from every outcome afterwards."""
    tr = trace if trace is not None else Trace()
    pre: list[Decision] | None = None
    if batch and chooser is None and isinstance(policy, BatchPolicy):
        pre = policy.decide_many([b.context(i) for b, i in steps], rng)
    for k, (block, i) in enumerate(steps):
        ctx = block.context(i)
        case = block.case
        if chooser is not None:
            j = chooser(block, i, rng)
            decision = Decision(case.candidates[j].target, explored=True)
        else:
            decision = pre[k] if pre is not None else policy.decide(ctx, rng)
            j = case.index[decision.action_id]
        if learn:
            r = float(block.rewards(reward_mode, weights)[i, j])
            nb, ni = steps[k + 1] if k + 1 < len(steps) else (block, i)
            NEXT_STATE.value = int(nb.states[ni])
            policy.learn(ctx, decision, block.outcome(i, j), r)
            NEXT_STATE.value = None
        if record:
            tr.record(block, i, j, decision.explored, reward_mode, weights)
    return tr


def informed_chooser(block: Block, i: int, rng: random.Random) -> int:
    """Opt (informed): Opt's rule on the most a decider could learn of the truth (``Block.informed``)."""
    return int(block.informed[i])


def opt_chooser(block: Block, i: int, rng: random.Random) -> int:
    """Opt's choice, precomputed for the block (``opt_indices``, the vectorised ``opt_choice``)."""
    return int(block.opt[i])


def static_best_index(block: Block, location: str) -> int:
    """Edge (Best) / Connected Edge as the paper defines them (Sec. V-A): the one target of
    ``location`` with the highest energy efficiency for this network in this scenario -- the lowest
    true mean energy among the targets meeting QoS on most of the block's inferences, else the one
    meeting it most often -- chosen offline from the true costs (the paper set its baselines by
    measurement) and held for the whole block. Targets below the accuracy requirement are left out
    while any meets it."""
    key = f"static:{location}"
    hit = block.static_choice.get(key)
    if hit is not None:
        return hit
    c = block.case
    cols = np.array([j for j, cand in enumerate(c.candidates) if cand.target.runner == location], dtype=np.int64)
    if len(cols) == 0:
        raise ValueError(f"{c.name}: no {location} target to choose from")
    if c.accuracy_min is not None and (c.accuracy[cols] >= c.accuracy_min).any():
        cols = cols[c.accuracy[cols] >= c.accuracy_min]
    qos_share = (block.latency[:, cols] < c.qos_s).mean(axis=0)
    energy = block.energy[:, cols].mean(axis=0)
    ok = qos_share >= 0.5
    pick = int(cols[np.argmin(np.where(ok, energy, np.inf))]) if ok.any() else int(cols[np.argmax(qos_share)])
    block.static_choice[key] = pick
    return pick


def static_chooser(location: str) -> Callable[[Block, int, random.Random], int]:
    """A chooser replaying ``static_best_index`` (Edge Best: "edge", Connected Edge: "peer")."""

    def choose(block: Block, i: int, rng: random.Random) -> int:
        return static_best_index(block, location)

    return choose


def uniform_chooser(block: Block, i: int, rng: random.Random) -> int:
    """Uniform over the candidates meeting the accuracy requirement (all, if none does)."""
    acc = block.case.accuracy[: len(block.case.candidates)]
    amin = block.case.accuracy_min
    ok = np.flatnonzero(acc >= amin) if amin is not None else np.arange(len(acc))
    if len(ok) == 0:
        ok = np.arange(len(acc))
    return int(ok[rng.randrange(len(ok))])


def set_exploration(policy: Policy, epsilon: float) -> float | None:
    """Set a learner's exploration probability (test phases exploit); returns the previous one.

    Works for an ``ExploringPolicy`` (Q-learning, predictors); others (UCB, fixed baselines)
    are left alone and None is returned."""
    if not isinstance(policy, ExploringPolicy):
        return None
    params = policy.params
    old = float(params.epsilon)
    policy.params = replace(params, epsilon=epsilon)  # type: ignore[misc]  # a frozen dataclass, replaced whole
    return old
