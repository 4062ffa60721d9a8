"""The decision log's record: one JSON line per served inference, schema version 1. Pure.

The decider writes one (``AUTOSCALE_DECISION_LOG``) for every inference it served and learned
from, after the response; ``autoscale qtable replay`` reads them back to train a Q-table offline
(``services.core.policies.qlearning.replay``). A line holds what the Q update needs (the Table I
state, the candidates the policy chose among with their expected accuracies, the action, the
reward) and what explains it (the raw readings and their sources, the outcome and where each
figure came from, the QoS / accuracy targets)::

    {"v": 1, "ts": "2026-01-01T12:00:00.123Z", "request_id": "...", "trace_id": "...",
     "device": "mi8pro", "model": "digits", "policy": "autoscale",
     "state": {"index": 52, "bins": {"conv": 0, ...}, "raw": {"macs": 4736.0, ...},
               "sources": {"co_cpu": "measured", ...}},
     "candidates": {"edge/cpu/fp32@0": 97.222, ...},       # action id -> expected top-1, as offered
     "action": "edge/dsp/int8", "explored": false,
     "outcome": {"latency_s": 0.0012, "energy_j": 0.0004, "accuracy": 96.944,
                 "latency_source": "modelled", "energy_source": "modelled", "accuracy_source": "measured"},
     "reward": -0.41, "qos_ms": 50.0, "accuracy_min": null}

A reader refuses a line of another version, an unknown field, a non-finite number, an action
that is not among the candidates or a state index whose bins disagree with ``bins``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.core.policies.base import DecisionContext, Outcome
from services.core.schemas import EnergySource, InferResponse, Target
from services.core.state import N_STATES, StateBins

DECISION_LOG_VERSION: Literal[1] = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LoggedState(_Record):
    """The Table I state: its index, its bins, the raw readings binned and each reading's source."""

    index: int = Field(ge=0, lt=N_STATES)
    bins: dict[str, int]
    raw: dict[str, float]
    sources: dict[str, str] = Field(default_factory=dict)

    @field_validator("bins")
    @classmethod
    def _bins_match_index(cls, v: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        index = info.data.get("index")
        if index is not None and StateBins.from_index(index).as_dict() != v:
            raise ValueError(f"{v} are not the bins of state index {index}")
        return v


class LoggedOutcome(_Record):
    """What the served placement cost the phone and delivered, with where each figure came from."""

    latency_s: float = Field(ge=0, description="the target's: inference + transfers (what QoS and eq. 5 use)")
    energy_j: float = Field(description="the phone's energy (eqs. 1-4)")
    accuracy: float = Field(ge=0, le=100)
    latency_source: EnergySource
    energy_source: EnergySource
    accuracy_source: Literal["published", "measured", "declared"]


@lru_cache(maxsize=4096)
def _canonical(action: str) -> bool:
    try:
        return Target.parse(action).id == action
    except ValueError:
        return False


class DecisionRecord(_Record):
    """One served inference, as the decision log stores it (see the module docstring)."""

    v: Literal[1] = DECISION_LOG_VERSION
    ts: datetime
    request_id: str
    trace_id: str | None = None
    device: str = Field(description="the phone whose Q table this experience belongs to")
    model: str
    policy: str
    state: LoggedState
    candidates: dict[str, float] = Field(min_length=1, description="action id -> expected accuracy (%)")
    action: str
    explored: bool = False
    outcome: LoggedOutcome
    reward: float
    qos_ms: float = Field(gt=0)
    accuracy_min: float | None = Field(None, ge=0, le=100)

    @field_validator("candidates")
    @classmethod
    def _action_ids(cls, v: dict[str, float]) -> dict[str, float]:
        for action, accuracy in v.items():
            if not _canonical(action):
                raise ValueError(f"{action!r} is not an action id like 'edge/cpu/int8@3'")
            if not 0.0 <= accuracy <= 100.0:
                raise ValueError(f"accuracy of {action} must be within 0-100 %, got {accuracy}")
        return v

    @field_validator("action")
    @classmethod
    def _action_offered(cls, v: str, info: ValidationInfo) -> str:
        candidates = info.data.get("candidates")
        if candidates is not None and v not in candidates:
            raise ValueError(f"{v!r} is not among the candidates")
        return v


def record_of(
    ctx: DecisionContext, outcome: Outcome, response: InferResponse, device: str, ts: float
) -> DecisionRecord:
    """The log record of one answered ``/infer`` (``ts``: unix seconds when it was answered):
    ``ctx`` and ``outcome`` are those the policy learned from, ``response`` what the client got.

    Built from values the decider already validated, so nothing is checked again here."""
    r = response
    return DecisionRecord.model_construct(
        v=DECISION_LOG_VERSION,
        ts=datetime.fromtimestamp(ts, UTC),
        request_id=r.request_id,
        trace_id=r.trace_id,
        device=device,
        model=r.model,
        policy=r.policy,
        state=LoggedState.model_construct(
            index=r.state.index, bins=r.state.bins, raw=r.state.raw, sources=r.state.sources
        ),
        # A partitioned plan that a planning policy made is an action of its own, offered by that policy.
        candidates={c.action_id: c.accuracy for c in ctx.candidates} | {r.target_id: r.accuracy},
        action=r.target_id,
        explored=r.explored,
        outcome=LoggedOutcome.model_construct(
            latency_s=outcome.latency_s,
            energy_j=outcome.energy_j,
            accuracy=outcome.accuracy,
            latency_source=r.latency_source,
            energy_source=r.energy_source,
            accuracy_source=r.accuracy_source,
        ),
        reward=r.reward,
        qos_ms=r.qos_ms,
        accuracy_min=ctx.accuracy_min,
    )
