"""The policy interface shared by the decider and the simulator. Pure: no I/O.

A policy sees a DecisionContext (the observed state and the runnable candidates) and returns a
Decision; after the inference it is told the Outcome and the eq. 5 reward so that it can learn.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.core.schemas import ModelFeatures, RuntimeConditions, Target


@dataclass(frozen=True, slots=True)
class Candidate:
    """One runnable action for this request, with the model's expected accuracy there."""

    target: Target
    accuracy: float


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


@dataclass(frozen=True, slots=True)
class Decision:
    target: Target
    explored: bool = False


class Policy(Protocol):
    name: str

    def decide(self, ctx: DecisionContext, rng: random.Random) -> Decision: ...

    def learn(self, ctx: DecisionContext, decision: Decision, outcome: Outcome, reward: float) -> None: ...
