"""Policies by name: AutoScale's Q-learning, the paper's baselines and comparators (the
predictors, NeuroSurgeon and MOSAIC, which partition a network), LinUCB.

    policies = PolicySet(settings, store=qstore, mesh=mesh)  # the decider holds one
    policy = policies.get("autoscale")                # UnknownPolicy lists the valid names
    decision = policy.decide(ctx, rng)
    ...
    policy.learn(ctx, decision, outcome, reward)      # non-blocking for every policy

A PolicySet builds each policy on first use and keeps it, so learners keep their state
between requests. ``store`` is the Q table AutoScale reads rows from and learns into: the
Redis-backed ``QStore`` in the decider, an in-memory ``QTable`` (the default) in the simulator.
``mesh``: the device profiles the decider was configured with. AutoScale's default learner
(``Settings.learner = "prior"``, ``PriorPolicy``) needs them (without them AutoScale is the Q-table
learner the settings describe, ``QLearningPolicy``); NeuroSurgeon fits its regressions on them and
MOSAIC costs its slices with them (without them they refuse to decide, naming what they miss).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from services.core.costmodel import Mesh
from services.core.policies.bandit import LinUCBPolicy
from services.core.policies.base import (
    BatchPolicy,
    Candidate,
    Decision,
    DecisionContext,
    ExploringPolicy,
    Outcome,
    Policy,
    RefittablePolicy,
)
from services.core.policies.baselines import (
    OptPolicy,
    cloud,
    connected_edge,
    edge_best,
    edge_cpu_fp32,
    opt_choice,
)
from services.core.policies.errors import NoCandidate, OracleUnavailable, PolicyError, UnknownPolicy
from services.core.policies.mosaic import MosaicPolicy
from services.core.policies.neurosurgeon import NeuroSurgeonParams, NeuroSurgeonPolicy
from services.core.policies.predictors import BayesOptPolicy, ClassifierPolicy, PredictorParams, RegressionPolicy
from services.core.policies.prior import PriorParams, PriorPolicy
from services.core.policies.qlearning import (
    QLearningPolicy,
    QParams,
    QTable,
    QTableImportError,
    QUpdate,
    RowSource,
)
from services.core.schemas import POLICY_NAMES

if TYPE_CHECKING:
    from services.core.costmodel import Mesh

__all__ = [
    "POLICY_NAMES",
    "BatchPolicy",
    "Candidate",
    "Decision",
    "DecisionContext",
    "ExploringPolicy",
    "NoCandidate",
    "OracleUnavailable",
    "Outcome",
    "Policy",
    "PolicyError",
    "PolicySet",
    "PredictorParams",
    "PriorParams",
    "PriorPolicy",
    "QLearningPolicy",
    "QParams",
    "QTable",
    "QTableImportError",
    "QUpdate",
    "RefittablePolicy",
    "RowSource",
    "UnknownPolicy",
    "make_policy",
    "opt_choice",
]


def _qparams(settings_or_params: Any, seed: int | None) -> QParams:
    if settings_or_params is None:
        return QParams(init_seed=seed or 0)
    if isinstance(settings_or_params, QParams):
        if seed is not None and seed != settings_or_params.init_seed:
            from dataclasses import replace

            return replace(settings_or_params, init_seed=seed)
        return settings_or_params
    return QParams.from_settings(settings_or_params, seed)


def _prior_params(settings_or_params: Any, seed: int | None) -> PriorParams | None:
    """The prior learner's parameters, or None when the table learner was asked for."""
    if isinstance(settings_or_params, PriorParams):
        return settings_or_params
    if settings_or_params is None or isinstance(settings_or_params, QParams):
        return None
    if getattr(settings_or_params, "learner", "table") != "prior":
        return None
    return PriorParams.from_settings(settings_or_params, seed)


def make_policy(
    name: str,
    *,
    settings_or_params: Any = None,
    store: RowSource | None = None,
    seed: int | None = None,
    background_fit: bool | None = None,
    mesh: Mesh | None = None,
) -> Policy:
    """Build one policy.

    ``settings_or_params``: a ``Settings`` (learning_rate, discount, epsilon, accuracy_masking,
    seed, and the options beyond the paper: q_init, lr_schedule, lr_floor, explore_bonus,
    explore_untried) or a ``QParams``; ``None`` gives the paper's values (Algorithm 1 as
    published). The reward (``reward_mode``) is computed by the caller, not by the policy.
    ``store``: AutoScale's Q table (``QStore`` or ``QTable``; default a fresh ``QTable``).
    ``seed`` overrides the settings' seed (initial Q values; GP). ``background_fit``: refit the
    sklearn comparators on a thread (default: automatically when called inside a running event
    loop). ``mesh``: the device profiles (NeuroSurgeon, MOSAIC); with them, "autoscale" is the prior
    learner when the settings say ``learner="prior"`` (the default) or ``settings_or_params`` is a
    ``PriorParams``.
    """
    if name == "autoscale" and mesh is not None:
        prior = _prior_params(settings_or_params, seed)
        if prior is not None:
            return PriorPolicy(store if store is not None else QTable(), mesh, prior)
    if isinstance(settings_or_params, PriorParams):
        settings_or_params = QParams(
            epsilon=settings_or_params.epsilon,
            accuracy_masking=settings_or_params.accuracy_masking,
            init_seed=settings_or_params.init_seed,
        )
    p = _qparams(settings_or_params, seed)
    pred = PredictorParams(
        epsilon=p.epsilon, accuracy_masking=p.accuracy_masking, seed=p.init_seed, background_fit=background_fit
    )
    if name == "autoscale":
        return QLearningPolicy(store if store is not None else QTable(), p)
    if name == "edge-cpu-fp32":
        return edge_cpu_fp32()
    if name == "edge-best":
        return edge_best(accuracy_masking=p.accuracy_masking)
    if name == "cloud":
        return cloud()
    if name == "connected-edge":
        return connected_edge(accuracy_masking=p.accuracy_masking)
    if name == "opt":
        return OptPolicy()
    if name in ("lr", "svr"):
        return RegressionPolicy(name, pred)
    if name in ("svm", "knn"):
        return ClassifierPolicy(name, pred)
    if name == "bo":
        return BayesOptPolicy(
            PredictorParams(
                epsilon=0.0,
                accuracy_masking=p.accuracy_masking,
                buffer=400,
                refit_every=25,
                seed=p.init_seed,
                background_fit=background_fit,
            )
        )
    if name == "linucb":
        return LinUCBPolicy(accuracy_masking=p.accuracy_masking)
    if name in ("neurosurgeon", "neurosurgeon-latency"):
        params = NeuroSurgeonParams(mode="latency" if name == "neurosurgeon-latency" else "energy", seed=p.init_seed)
        return NeuroSurgeonPolicy(mesh, params, name=name)
    if name == "mosaic":
        return MosaicPolicy(mesh)
    raise UnknownPolicy(name)


class PolicySet:
    """The policies a decider (or a simulation run) serves, built lazily and kept."""

    def __init__(
        self,
        settings_or_params: Any = None,
        *,
        store: RowSource | None = None,
        seed: int | None = None,
        background_fit: bool | None = None,
        names: tuple[str, ...] = POLICY_NAMES,
        mesh: Mesh | None = None,
    ) -> None:
        unknown = [n for n in names if n not in POLICY_NAMES]
        if unknown:
            raise UnknownPolicy(unknown[0])
        self._settings = settings_or_params
        self.store: RowSource = store if store is not None else QTable()
        self._seed = seed
        self._background_fit = background_fit
        self.mesh = mesh
        self.names = tuple(names)
        self._policies: dict[str, Policy] = {}

    def get(self, name: str) -> Policy:
        p = self._policies.get(name)
        if p is None:
            if name not in self.names:
                raise UnknownPolicy(name, self.names)
            p = make_policy(
                name,
                settings_or_params=self._settings,
                store=self.store,
                seed=self._seed,
                background_fit=self._background_fit,
                mesh=self.mesh,
            )
            self._policies[name] = p
        return p

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)
