"""Offline replay: train a Q table from decision-log records. Pure.

Each record is fed to the deployment's learner (``QLearningPolicy``, or the prior learner with the
device profiles) over an in-memory ``QTable`` exactly as the decider fed the live one: the same
``learn(ctx, decision, outcome, reward)`` call, the same candidates in the same order, the logged
reward. Q-learning is off-policy, so experience served by any policy (a baseline, an exploring step)
is valid training data; ``policies`` restricts it if wanted. With the learner settings of the
deployment that wrote the log (``QParams.from_settings``) and a table that starts where the live one
started, replaying reproduces the live table's values (the prior learner's up to its memo's grid).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from services.core.decision_log import DecisionRecord
from services.core.policies.base import Candidate, DecisionContext, Outcome, Policy
from services.core.policies.qlearning.params import QParams
from services.core.policies.qlearning.policy import QLearningPolicy
from services.core.policies.qlearning.table import QTable
from services.core.schemas import ModelFeatures, Plan, RuntimeConditions, StrictModel, Target


class ReplaySummary(StrictModel):
    """What a replay did: records applied and skipped, and the table it produced."""

    device: str | None
    updates: int
    skipped_device: int  # records of another phone's table
    skipped_policy: int  # records served by a policy left out with ``policies``
    states: int
    entries: int
    visits_total: int


def _context(record: DecisionRecord, candidates: tuple[Candidate, ...]) -> DecisionContext:
    """The context the decider learned in. Features and conditions are not read by the update
    (the state index is): rebuilt from the raw readings as they were, without re-validation."""
    raw = record.state.raw
    features = ModelFeatures.model_construct(
        conv=int(raw.get("conv", 0)), fc=int(raw.get("fc", 0)), rc=int(raw.get("rc", 0)), macs=int(raw.get("macs", 0))
    )
    conditions = RuntimeConditions.model_construct(
        co_cpu=raw.get("co_cpu", 0.0),
        co_mem=raw.get("co_mem", 0.0),
        rssi_wifi_dbm=raw.get("rssi_wifi_dbm", -50.0),
        rssi_p2p_dbm=raw.get("rssi_p2p_dbm", -50.0),
    )
    return DecisionContext(
        model=record.model,
        features=features,
        conditions=conditions,
        state=record.state.index,
        candidates=candidates,
        qos_s=record.qos_ms / 1e3,
        accuracy_min=record.accuracy_min,
    )


def _candidate(action: str, accuracy: float) -> Candidate:
    """A logged action as a candidate: a target, or a partitioned plan (its id has cuts in it)."""
    if "|" in action:
        plan = Plan.parse(action)
        return Candidate(plan.parts[0].target, accuracy, plan)
    return Candidate(Target.parse(action), accuracy)


class Replayer:
    """Feed records in log order (``feed``), then read ``table`` / ``export()`` / ``summary()``.

    ``device``: the phone whose table is trained (None: the first record's); records of another
    device are skipped and counted. ``policies``: train only on what these served (None: all).
    ``learner``: the deployment's learner over a given table (the prior learner, which also needs the
    device profiles); None: ``QLearningPolicy`` with ``params``."""

    def __init__(
        self,
        params: QParams,
        *,
        device: str | None = None,
        policies: Collection[str] | None = None,
        learner: Callable[[QTable], Policy] | None = None,
    ) -> None:
        self.table = QTable()
        self.policy: Policy = learner(self.table) if learner is not None else QLearningPolicy(self.table, params)
        self.device = device
        self._policies = frozenset(policies) if policies is not None else None
        self.updates = self.skipped_device = self.skipped_policy = 0
        self._actions: set[str] = set()
        # One Candidate tuple per distinct offer: the policy memoises on the tuple's identity, as
        # it does on the decider's candidate lists (which are memoised per registry version).
        self._offers: dict[tuple[tuple[str, float], ...], tuple[tuple[Candidate, ...], dict[str, Candidate]]] = {}

    def _offer(self, candidates: dict[str, float]) -> tuple[tuple[Candidate, ...], dict[str, Candidate]]:
        key = tuple(candidates.items())
        hit = self._offers.get(key)
        if hit is None:
            cands = tuple(_candidate(a, acc) for a, acc in key)
            hit = self._offers[key] = (cands, {c.action_id: c for c in cands})
            self._actions.update(candidates)
        return hit

    def feed(self, record: DecisionRecord) -> bool:
        """Apply one record's Q update; False when it is skipped (another device or policy)."""
        if self.device is None:
            self.device = record.device
        elif record.device != self.device:
            self.skipped_device += 1
            return False
        if self._policies is not None and record.policy not in self._policies:
            self.skipped_policy += 1
            return False
        cands, targets = self._offer(record.candidates)
        ctx = _context(record, cands)
        o = record.outcome
        outcome = Outcome(latency_s=o.latency_s, energy_j=o.energy_j, accuracy=o.accuracy)
        c = targets[record.action]
        self.policy.learn(ctx, c.decision(record.explored), outcome, record.reward)
        self.updates += 1
        return True

    def export(self) -> dict[str, Any]:
        """The trained table in the export format (what ``POST /qtable/import`` accepts)."""
        if self.device is None:
            raise ValueError("nothing was replayed: no device to export a table for")
        return self.table.export(self.device, self._actions)

    def summary(self) -> ReplaySummary:
        counts = self.table.stats()
        return ReplaySummary(
            device=self.device,
            updates=self.updates,
            skipped_device=self.skipped_device,
            skipped_policy=self.skipped_policy,
            states=counts.states,
            entries=counts.entries,
            visits_total=counts.visits_total,
        )
