"""The policies an evaluation pits against each other, built fresh for every fold.

A learner plugs in as a contender by name: any name ``make_policy`` knows that is not one of the
built-ins below is built with ``make_policy(name, seed=..., mesh=<the device profiles>)`` when
``make_policy`` takes a ``mesh`` -- the profiles the decider would know, never the simulator's
hidden world -- and is trained, tested and scored like AutoScale (``--policies NAME``).

The partitioning contenders are registered here too (``PARTITIONING``): NeuroSurgeon and MOSAIC
(the paper's two related works, which split a network at layer granularity) and AutoScale with
split actions (``autoscale-splits``, beyond the paper). ``plan_columns`` lists the plans any of
them may run on a network, which the simulator costs as further columns of its blocks.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, overload

from services.core.costmodel import Mesh
from services.core.policies import (
    PredictorParams,
    PriorParams,
    PriorPolicy,
    QLearningPolicy,
    QParams,
    QTable,
    RefittablePolicy,
    make_policy,
)
from services.core.policies.base import Candidate, Decision, DecisionContext, Outcome, Policy
from services.core.policies.mosaic import MosaicPolicy
from services.core.policies.neurosurgeon import NeuroSurgeonPolicy
from services.core.policies.predictors import BayesOptPolicy, ClassifierPolicy, RegressionPolicy
from services.core.policies.splits import split_candidates
from services.core.schemas import CutPoint, ModelFeatures
from services.evaluation.config import AUTOSCALE, EvalConfig
from services.evaluation.simulator import NEXT_STATE, informed_chooser, opt_chooser, static_chooser

if TYPE_CHECKING:  # world.py imports this module
    from services.evaluation.world import DeviceWorld

PREDICTORS = ("lr", "svr", "svm", "knn", "bo", "linucb")  # trained on a uniformly explored sample
SKLEARN = ("lr", "svr", "svm", "knn", "bo")  # the paper's prediction-based comparators (refitted, not online)
SPLITS = "autoscale-splits"  # AutoScale whose action space has the networks' most promising splits
PLANNERS = ("neurosurgeon", "neurosurgeon-latency", "mosaic")  # plan from the profiles, never adapted
PARTITIONING = (*PLANNERS, SPLITS)
Q_LEARNERS = (*AUTOSCALE, SPLITS)  # trained online on the other networks, explore while adapting
ONLINE = (*Q_LEARNERS, "linucb")  # keep learning on the held-out network
FIXED = ("edge-cpu-fp32", "cloud")  # always the same kind of target: nothing to learn
# The references an experimenter sets from measurements of the real devices, not deployable
# policies: they replay choices precomputed from the true costs (no policy is handed those).
# "opt-informed": Opt's rule on the most a decider could learn of the truth (truth.py).
INFORMED = "opt-informed"
REFERENCE_CHOOSERS = {
    "opt": opt_chooser,
    INFORMED: informed_chooser,
    "edge-best": static_chooser("edge"),
    "connected-edge": static_chooser("peer"),
}
KNOWN = (*ONLINE, *FIXED, *PREDICTORS, *PLANNERS, *REFERENCE_CHOOSERS)  # anything else is a plugged-in learner
SPLITS_PER_LOCATION = 1  # split actions per remote location: 66 + 2 actions stay within the decision budget

# The contexts of a network with its split actions: the extended candidate tuple of a case.
SplitOffer = Callable[[DecisionContext], tuple[Candidate, ...]]


class WithSplits:
    """AutoScale's learner seeing each network's split actions beside its whole-network candidates
    (the decider does the same for ``autoscale`` with ``AUTOSCALE_PARTITION_ACTIONS``)."""

    def __init__(self, inner: QLearningPolicy | PriorPolicy, offer: SplitOffer) -> None:
        self.inner = inner
        self.name = SPLITS
        self._offer = offer

    @property
    def params(self) -> QParams | PriorParams:
        return self.inner.params

    @params.setter
    def params(self, value: QParams | PriorParams) -> None:
        self.inner.params = value

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        return self.inner.decide(replace(ctx, candidates=self._offer(ctx)), rng)

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None:
        self.inner.learn(replace(ctx, candidates=self._offer(ctx)), decision, outcome, reward)


def plan_columns(
    mesh: Mesh,
    policies: Sequence[str],
    features: ModelFeatures,
    cuts: Sequence[CutPoint],
    cands: Sequence[Candidate],
    qos_s: float,
    accuracy_min: float | None,
) -> tuple[tuple[Candidate, ...], tuple[Candidate, ...]]:
    """(every plan the partitioning contenders in ``policies`` may run on this network, as candidates
    with their accuracy; AutoScale's split actions among them)."""
    acc = {c.target.id: c.accuracy for c in cands}
    out: dict[str, Candidate] = {}
    splits = (
        tuple(split_candidates(mesh, features, cuts, cands, qos_s, SPLITS_PER_LOCATION)) if SPLITS in policies else ()
    )
    plans = [c.plan for c in splits if c.plan is not None]
    if "neurosurgeon" in policies or "neurosurgeon-latency" in policies:
        plans += NeuroSurgeonPolicy(mesh).plan_space(cuts, cands)
    if "mosaic" in policies:
        plans += MosaicPolicy(mesh).plan_space(features, cuts, cands, accuracy_min)
    for p in plans:
        out.setdefault(p.id, Candidate(p.parts[0].target, min(acc[q.target.id] for q in p.parts), p))
    return tuple(out.values()), splits


def build_policy(name: str, cfg: EvalConfig, seed: int, world: DeviceWorld | None = None) -> Policy:
    """A fresh policy; predictors are set up to be fitted once on their training samples. ``world``
    (a ``DeviceWorld``): the profiles and cases the partitioning contenders plan with, and the
    profiles handed to a plugged-in learner that asks for them (never the hidden true world)."""
    never = 10**12  # refit only when we say so: offline-trained predictors
    profiles = world.mesh if world is not None else None
    if name in AUTOSCALE:
        return autoscale_policy(name, cfg, seed, mesh=profiles)
    if name in PARTITIONING and world is None:
        raise ValueError(f"{name} plans with a device world's profiles and cut points: pass world")
    if name == SPLITS and world is not None:  # the default learner, its action space extended
        offer = world.split_offer
        return WithSplits(
            autoscale_policy("autoscale", cfg, seed, mesh=profiles),
            lambda ctx: offer(ctx.model, ctx.accuracy_min),
        )
    if name in PLANNERS:
        return make_policy(name, seed=seed, background_fit=False, mesh=profiles)
    if name == INFORMED:  # a reference: its chooser replays Block.informed, the policy is never asked
        return make_policy("opt", seed=seed, background_fit=False)
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
    if world is not None and "mesh" in inspect.signature(make_policy).parameters:
        return make_policy(name, seed=seed, background_fit=False, mesh=world.mesh)  # type: ignore[call-arg,unused-ignore]
    return make_policy(name, seed=seed, background_fit=False)


def autoscale_params(name: str, cfg: EvalConfig, seed: int, epsilon: float = 0.1) -> QParams:
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


@overload
def autoscale_policy(
    name: str, cfg: EvalConfig, seed: int, table: QTable | None = None, mesh: None = None
) -> QLearningPolicy: ...


@overload
def autoscale_policy(
    name: str, cfg: EvalConfig, seed: int, table: QTable | None = None, *, mesh: Mesh | None
) -> QLearningPolicy | PriorPolicy: ...


def autoscale_policy(
    name: str, cfg: EvalConfig, seed: int, table: QTable | None = None, mesh: Mesh | None = None
) -> QLearningPolicy | PriorPolicy:
    """AutoScale as configured (``cfg.learner``: the prior learner, given the device profiles, or the
    Q table alone) or as published (``autoscale-paper``)."""
    if name == "autoscale" and cfg.learner == "prior" and mesh is not None:
        params = PriorParams(init_seed=seed, reward_mode=cfg.reward_mode, weights=cfg.weights())
        return PriorPolicy(table if table is not None else QTable(), mesh, params, name=name)
    hook = NEXT_STATE if cfg.next_state == "observed" and name != "autoscale-paper" else None
    return QLearningPolicy(
        table if table is not None else QTable(), autoscale_params(name, cfg, seed), name=name, next_state=hook
    )


def fit_now(policy: Policy) -> None:
    """Fit an offline-trained predictor on its samples (a policy that does not refit: nothing)."""
    if isinstance(policy, RefittablePolicy):
        policy.fit_now()
