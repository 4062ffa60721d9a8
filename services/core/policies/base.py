"""The policy interface shared by the decider and the simulator. Pure: no I/O.

A policy sees a DecisionContext (the observed state and the runnable candidates) and returns a
Decision; after the inference it is told the Outcome and the eq. 5 reward so that it can learn.

What some policies can do beyond that is declared here as protocols, so that callers check a
type instead of probing attributes: ``BatchPolicy`` decides many contexts at once (the offline
predictors), ``ExploringPolicy`` explores with a probability ``params.epsilon`` that a caller may
change (Q-learning, the predictors), ``RefittablePolicy`` learns by refitting a model on the
observations it holds and can be told to refit now (the predictors). The Q table a Q-learning
policy reads is a ``RowSource`` (``services.core.policies.qlearning.table``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from services.core.schemas import CutPoint, ModelFeatures, Plan, RuntimeConditions, Target


@dataclass(frozen=True, slots=True)
class Candidate:
    """One runnable action for this request, with the model's expected accuracy there. A
    partitioned action also has a ``plan`` (its ``target`` is the first part's)."""

    target: Target
    accuracy: float
    plan: Plan | None = None

    @property
    def action_id(self) -> str:
        """The action's key (in the Q table): the target's id, or the plan's."""
        return self.target.id if self.plan is None else self.plan.id

    def decision(self, explored: bool = False) -> Decision:
        """Taking this action (a partitioned one carries its plan)."""
        return Decision(self.target, explored, self.plan)


@dataclass(frozen=True, slots=True)
class Outcome:
    latency_s: float
    energy_j: float  # the phone's energy (eqs. 1-4)
    accuracy: float


@dataclass(frozen=True, slots=True)
class DecisionContext:
    model: str
    features: ModelFeatures
    conditions: RuntimeConditions
    state: int  # Table I index (services.core.state)
    candidates: tuple[Candidate, ...]
    qos_s: float
    accuracy_min: float | None
    # True cost of a target, where known (simulator, profiled runners): enables `opt`.
    oracle: Callable[[Target], Outcome] | None = None
    # Where the network can be partitioned (ModelInfo.cut_points): what the partitioning policies plan with.
    cuts: Sequence[CutPoint] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    target: Target
    explored: bool = False
    plan: Plan | None = None  # a partitioned action: run these parts (``target`` is the first part's)

    @property
    def action_id(self) -> str:
        return self.target.id if self.plan is None else self.plan.id


class Policy(Protocol):
    name: str

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision: ...

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None: ...


@runtime_checkable
class BatchPolicy(Policy, Protocol):
    """A policy that decides a batch of contexts at once, exactly as one ``decide`` at a time
    would with no learning in between (``decide_many(ctxs)[k] == decide(ctxs[k])``)."""

    def decide_many(self, ctxs: Sequence[DecisionContext], rng: random.Random) -> list[Decision]: ...


class ExplorationParams(Protocol):
    """Parameters with an exploration probability: a frozen dataclass (``dataclasses.replace``
    gives a copy with another ``epsilon``)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def epsilon(self) -> float: ...


@runtime_checkable
class ExploringPolicy(Policy, Protocol):
    """A policy that explores with probability ``params.epsilon``; assigning ``params`` (a copy
    with another epsilon) changes how much it explores from the next decision on."""

    @property
    def params(self) -> ExplorationParams: ...


@runtime_checkable
class RefittablePolicy(Policy, Protocol):
    """A policy that learns by refitting a model on the observations it holds, on a schedule of
    its own; ``fit_now`` refits on them at once, inline (offline training: fit once, after the
    profiling samples)."""

    def fit_now(self) -> None: ...
