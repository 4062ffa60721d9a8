"""The policies an evaluation pits against each other, built fresh for every fold.

A learner plugs in as a contender by name: any name ``make_policy`` knows that is not one of the
built-ins below is built with ``make_policy(name, seed=..., mesh=<the device profiles>)`` when
``make_policy`` takes a ``mesh`` -- the profiles the decider would know, never the simulator's
hidden world -- and is trained, tested and scored like AutoScale (``--policies NAME``).
"""

from __future__ import annotations

import inspect
from typing import overload

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
from services.core.policies.base import Policy
from services.core.policies.predictors import BayesOptPolicy, ClassifierPolicy, RegressionPolicy
from services.evaluation.config import AUTOSCALE, EvalConfig
from services.evaluation.simulator import NEXT_STATE, opt_chooser, static_chooser

PREDICTORS = ("lr", "svr", "svm", "knn", "bo", "linucb")  # trained on a uniformly explored sample
SKLEARN = ("lr", "svr", "svm", "knn", "bo")  # the paper's prediction-based comparators (refitted, not online)
ONLINE = (*AUTOSCALE, "linucb")  # keep learning on the held-out network
FIXED = ("edge-cpu-fp32", "cloud")  # always the same kind of target: nothing to learn
# The references an experimenter sets from measurements of the real devices, not deployable
# policies: they replay choices precomputed from the true costs (no policy is handed those).
REFERENCE_CHOOSERS = {"opt": opt_chooser, "edge-best": static_chooser("edge"), "connected-edge": static_chooser("peer")}
KNOWN = (*ONLINE, *FIXED, *PREDICTORS, *REFERENCE_CHOOSERS)  # anything else is a plugged-in learner


def build_policy(name: str, cfg: EvalConfig, seed: int, mesh: Mesh | None = None) -> Policy:
    """A fresh policy; predictors are set up to be fitted once on their training samples.
    ``mesh``: the device profiles, handed to a plugged-in learner that asks for them."""
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
    if mesh is not None and "mesh" in inspect.signature(make_policy).parameters:
        return make_policy(name, seed=seed, background_fit=False, mesh=mesh)  # type: ignore[call-arg,unused-ignore]
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
