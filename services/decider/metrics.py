"""The decider's Prometheus metrics: requests, decisions, rewards and its Q-table store."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import (
    DECISION_BUCKETS,
    ENERGY_BUCKETS,
    LATENCY_BUCKETS,
    REWARD_BUCKETS,
    MetricGroup,
    metric_name,
)

_D_REQUESTS = Counter(
    metric_name("decider_requests_total"),
    "Inference requests answered by the decider",
    ["model", "target", "policy", "outcome"],
    registry=None,
)
_D_ERRORS = Counter(
    metric_name("decider_errors_total"),
    "Inference requests that failed, by error code",
    ["model", "policy", "code"],
    registry=None,
)
_D_LATENCY = Histogram(
    metric_name("decider_latency_seconds"),
    "End-to-end request latency seen by the decider (host wall clock)",
    ["model", "target", "policy"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
_D_INFERENCE = Histogram(
    metric_name("decider_inference_seconds"),
    "Inference latency on the chosen target (measured or modelled)",
    ["model", "target"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
_D_TRANSFER = Histogram(
    metric_name("decider_transfer_seconds"),
    "Input+output transfer time to a remote target (0 for local targets)",
    ["model", "target"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
# Named "inference_energy" because a histogram "energy_joules" would collide with the
# counter below ("x_total" counters and "x" histograms share one family name).
_D_ENERGY = Histogram(
    metric_name("decider_inference_energy_joules"),
    "Phone energy of one inference (eqs. 1-4)",
    ["model", "target", "policy"],
    buckets=ENERGY_BUCKETS,
    registry=None,
)
# A plain counter as well as the histogram's _sum: rate() of it is the phone's inference power.
_D_ENERGY_TOTAL = Counter(
    metric_name("decider_energy_joules_total"),
    "Phone energy spent on inference, cumulative",
    ["model", "target", "policy"],
    registry=None,
)
# Rewards are mostly negative (-energy in mJ), and a histogram with negative buckets exports no
# _sum (prometheus_client, per OpenMetrics), while rate() on a decreasing sum would read resets.
# So: the histogram for the distribution and its _count, plus a gauge of the running sum, read
# with delta(): mean reward = delta(reward_cumulative[w]) / increase(reward_count[w]).
_D_REWARD = Histogram(
    metric_name("decider_reward"),
    "Reward of eq. 5 per answered request",
    ["model", "policy"],
    buckets=REWARD_BUCKETS,
    registry=None,
)
_D_REWARD_SUM = Gauge(
    metric_name("decider_reward_cumulative"),
    "Running sum of eq. 5 rewards (may decrease: use delta(), not rate())",
    ["model", "policy"],
    multiprocess_mode="sum",
    registry=None,
)
_D_QOS_VIOL = Counter(
    metric_name("decider_qos_violations_total"),
    "Answered requests whose target latency missed the QoS target",
    ["model", "target", "policy"],
    registry=None,
)
_D_ACC_VIOL = Counter(
    metric_name("decider_accuracy_violations_total"),
    "Answered requests whose expected accuracy missed accuracy_min",
    ["model", "target", "policy"],
    registry=None,
)
_D_EXPLORE = Counter(
    metric_name("decider_explorations_total"),
    "Requests whose target was chosen by exploration (epsilon)",
    ["model", "policy"],
    registry=None,
)
_D_DECISION = Histogram(
    metric_name("decider_decision_seconds"),
    "Time the policy took to pick a target",
    buckets=DECISION_BUCKETS,
    registry=None,
)
_Q_STATES = Gauge(
    metric_name("qtable_states"),
    "States with at least one Q entry",
    multiprocess_mode="mostrecent",
    registry=None,
)
_Q_ENTRIES = Gauge(
    metric_name("qtable_entries"),
    "Q entries (state x action) stored",
    multiprocess_mode="mostrecent",
    registry=None,
)
_Q_BYTES = Gauge(
    metric_name("qtable_bytes"),
    "Approximate size of the Q table",
    multiprocess_mode="mostrecent",
    registry=None,
)
_REDIS_ERRORS = Counter(
    metric_name("redis_errors_total"), "Failed Redis operations (Q-table reads/updates)", registry=None
)
_Q_DROPPED = Counter(
    metric_name("qtable_updates_dropped_total"),
    "Q updates dropped (queue full or Redis unavailable)",
    registry=None,
)
_D_LOG = Counter(
    metric_name("decision_log_records_total"),
    "Decision-log records handed to the writer thread (queued) or dropped because its buffer was full",
    ["outcome"],
    registry=None,
)
_Q_PENDING = Gauge(
    metric_name("qtable_updates_pending"),
    "Q updates waiting for Redis (held while it is unreachable)",
    multiprocess_mode="sum",
    registry=None,
)
_Q_LOST = Counter(
    metric_name("qtable_updates_lost_total"),
    "Q updates Redis acknowledged, then lost (restart without them) and the replay window no longer held",
    registry=None,
)
_Q_REPLAYED = Counter(
    metric_name("qtable_updates_replayed_total"),
    "Acknowledged Q updates applied again after Redis restarted without them",
    registry=None,
)
_D_DISPATCH_FAILURES = Counter(
    metric_name("decider_dispatch_failures_total"),
    "Dispatches to a runner that failed (timeout, connection, http_5xx); the request falls back",
    ["runner", "reason"],
    registry=None,
)
_D_EJECTIONS = Counter(
    metric_name("decider_runner_ejections_total"),
    "Runners ejected by outlier detection (consecutive dispatch failures)",
    ["runner"],
    registry=None,
)
_D_EJECTED = Gauge(
    metric_name("decider_runner_ejected"),
    "1 while a replica of the runner role is ejected (not dispatched to), else 0",
    ["runner"],
    multiprocess_mode="max",
    registry=None,
)
_D_REPLICAS = Gauge(
    metric_name("decider_runner_replicas"),
    "Runner replicas the decider lists, by role and state (available: probed healthy and not ejected)",
    ["runner", "state"],
    multiprocess_mode="max",
    registry=None,
)
_D_REGISTRATIONS = Counter(
    metric_name("decider_runner_registrations_total"),
    "Runner registrations seen: joined, refused (the runner was refused; reported on the registry channel) "
    "or invalid (a record this decider does not accept)",
    ["runner", "outcome"],
    registry=None,
)
_D_DEREGISTRATIONS = Counter(
    metric_name("decider_runner_deregistrations_total"),
    "Registered replicas forgotten: left (deregistered on shutdown), expired (no heartbeat within its TTL) or "
    "invalid (its record no longer validates here)",
    ["runner", "reason"],
    registry=None,
)
_D_TELEMETRY_STALE = Gauge(
    metric_name("decider_telemetry_stale"),
    "1 when the decider's telemetry snapshot is stale (no reading for telemetry_stale_intervals refreshes)",
    multiprocess_mode="max",
    registry=None,
)
_D_TELEMETRY_AGE = Gauge(
    metric_name("decider_telemetry_age_seconds"),
    "Age of the decider's telemetry snapshot",
    multiprocess_mode="max",
    registry=None,
)
_D_LEARN_SKIPPED = Counter(
    metric_name("decider_learning_skipped_total"),
    "Answered requests whose Q update was not learned, by reason",
    ["reason"],
    registry=None,
)
_DECIDER = MetricGroup(
    _D_REQUESTS,
    _D_ERRORS,
    _D_LATENCY,
    _D_INFERENCE,
    _D_TRANSFER,
    _D_ENERGY,
    _D_ENERGY_TOTAL,
    _D_REWARD,
    _D_REWARD_SUM,
    _D_QOS_VIOL,
    _D_ACC_VIOL,
    _D_EXPLORE,
    _D_DECISION,
    _Q_STATES,
    _Q_ENTRIES,
    _Q_BYTES,
    _REDIS_ERRORS,
    _Q_DROPPED,
    _D_LOG,
    _Q_PENDING,
    _Q_LOST,
    _Q_REPLAYED,
    _D_DISPATCH_FAILURES,
    _D_EJECTIONS,
    _D_EJECTED,
    _D_REPLICAS,
    _D_REGISTRATIONS,
    _D_DEREGISTRATIONS,
    _D_TELEMETRY_STALE,
    _D_TELEMETRY_AGE,
    _D_LEARN_SKIPPED,
)
# Created on the first set_redis_up() call, not at import: a gauge that exists from the start
# reads 0 ("down") in a process that never talks to Redis and would fire the alert falsely.
_REDIS_UP: Gauge | None = None
_REDIS_UP_LOCK = threading.Lock()


def _redis_up_gauge() -> Gauge:
    global _REDIS_UP
    with _REDIS_UP_LOCK:
        if _REDIS_UP is None:
            _DECIDER.activate()
            _REDIS_UP = Gauge(
                metric_name("redis_up"),
                "1 when the last Redis health check/operation succeeded, else 0",
                multiprocess_mode="livemin",
            )
        return _REDIS_UP


class QStoreMetrics(Protocol):
    """What the Q-table store (``services.decider.qstore``) records; ``DeciderMetrics`` is one."""

    def set_qtable(self, *, states: int, entries: int, bytes_: int) -> None: ...

    def redis_error(self) -> None: ...

    def set_redis_up(self, up: bool) -> None: ...

    def update_dropped(self) -> None: ...

    def set_pending(self, n: int) -> None: ...

    def updates_lost(self, n: int) -> None: ...

    def updates_replayed(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class _RequestSeries:
    """The series one served request records, by (model, target, policy, outcome): looked up once per
    combination, since eleven ``labels()`` calls cost more per request than the observations themselves."""

    requests: Counter
    latency: Histogram
    inference: Histogram
    transfer: Histogram
    energy: Histogram
    energy_total: Counter
    reward: Histogram
    reward_sum: Gauge
    qos_violations: Counter
    accuracy_violations: Counter
    explored: Counter

    @classmethod
    def of(cls, model: str, target: str, policy: str, outcome: str) -> _RequestSeries:
        # The violation counters are created even when nothing is violated: a series that exists at 0
        # makes ratios in PromQL read 0 instead of "no data".
        return cls(
            requests=_D_REQUESTS.labels(model, target, policy, outcome),
            latency=_D_LATENCY.labels(model, target, policy),
            inference=_D_INFERENCE.labels(model, target),
            transfer=_D_TRANSFER.labels(model, target),
            energy=_D_ENERGY.labels(model, target, policy),
            energy_total=_D_ENERGY_TOTAL.labels(model, target, policy),
            reward=_D_REWARD.labels(model, policy),
            reward_sum=_D_REWARD_SUM.labels(model, policy),
            qos_violations=_D_QOS_VIOL.labels(model, target, policy),
            accuracy_violations=_D_ACC_VIOL.labels(model, target, policy),
            explored=_D_EXPLORE.labels(model, policy),
        )


_REQUEST_SERIES: dict[tuple[str, str, str, str], _RequestSeries] = {}


class DeciderMetrics:
    """What the decider records per request, per decision and about its Q-table store.

    The decider's series appear on /metrics from the first call of any method (or
    ``activate()``): call ``activate()`` (or ``set_qtable``/``set_redis_up``) at start-up so
    the alert series (Redis errors, dropped updates) exist before the first request."""

    def activate(self) -> None:
        _DECIDER.activate()

    def observe_request(
        self,
        *,
        model: str,
        target: str,
        policy: str,
        outcome: str,
        latency_s: float,
        inference_s: float,
        transfer_s: float,
        energy_j: float,
        reward: float,
        qos_met: bool,
        accuracy_met: bool,
        explored: bool,
    ) -> None:
        _DECIDER.activate()
        key = (model, target, policy, outcome)
        s = _REQUEST_SERIES.get(key) or _REQUEST_SERIES.setdefault(key, _RequestSeries.of(*key))
        s.requests.inc()
        s.latency.observe(latency_s)
        s.inference.observe(inference_s)
        s.transfer.observe(transfer_s)
        s.energy.observe(energy_j)
        s.energy_total.inc(max(energy_j, 0.0))
        s.reward.observe(reward)
        s.reward_sum.inc(reward)
        if not qos_met:
            s.qos_violations.inc()
        if not accuracy_met:
            s.accuracy_violations.inc()
        if explored:
            s.explored.inc()

    def observe_error(self, *, model: str, policy: str, code: str) -> None:
        _DECIDER.activate()
        _D_ERRORS.labels(model, policy, code).inc()

    def observe_decision(self, seconds: float) -> None:
        _DECIDER.activate()
        _D_DECISION.observe(seconds)

    def set_qtable(self, *, states: int, entries: int, bytes_: int) -> None:
        _DECIDER.activate()
        _Q_STATES.set(states)
        _Q_ENTRIES.set(entries)
        _Q_BYTES.set(bytes_)

    def redis_error(self) -> None:
        _DECIDER.activate()
        _REDIS_ERRORS.inc()

    def set_redis_up(self, up: bool) -> None:
        """Call with True after connecting/each successful flush, False when Redis fails."""
        _redis_up_gauge().set(1 if up else 0)

    def update_dropped(self) -> None:
        _DECIDER.activate()
        _Q_DROPPED.inc()

    def decision_logged(self, outcome: str) -> None:
        """``queued`` or ``dropped`` (the decision log's buffer was full)."""
        _DECIDER.activate()
        _D_LOG.labels(outcome).inc()

    def set_pending(self, n: int) -> None:
        _DECIDER.activate()
        _Q_PENDING.set(n)

    def updates_lost(self, n: int) -> None:
        _DECIDER.activate()
        _Q_LOST.inc(n)

    def updates_replayed(self, n: int) -> None:
        _DECIDER.activate()
        _Q_REPLAYED.inc(n)

    # ------------------------------------------------------------------ resilience
    def init_runners(self, runners: list[str]) -> None:
        """Series at 0 for every runner from the start, so alerts and ratios read 0, not "no data"."""
        _DECIDER.activate()
        for r in runners:
            _D_EJECTED.labels(r).set(0)
            _D_EJECTIONS.labels(r)
            for state in ("available", "unavailable"):
                _D_REPLICAS.labels(r, state).set(0)
            for outcome in ("joined", "refused", "invalid"):
                _D_REGISTRATIONS.labels(r, outcome)
            for why in ("left", "expired", "invalid"):
                _D_DEREGISTRATIONS.labels(r, why)
            for reason in ("timeout", "connection", "http_5xx"):
                _D_DISPATCH_FAILURES.labels(r, reason)
        _D_LEARN_SKIPPED.labels("stale_telemetry")

    def dispatch_failed(self, runner: str, reason: str) -> None:
        _DECIDER.activate()
        _D_DISPATCH_FAILURES.labels(runner, reason).inc()

    def runner_ejected(self, runner: str) -> None:
        """One replica of the role ejected."""
        _DECIDER.activate()
        _D_EJECTED.labels(runner).set(1)
        _D_EJECTIONS.labels(runner).inc()

    def set_ejected(self, runner: str, ejected: bool) -> None:
        """Whether any replica of the role is still ejected (after a readmission or a replica gone)."""
        _DECIDER.activate()
        _D_EJECTED.labels(runner).set(1 if ejected else 0)

    def set_replicas(self, runner: str, *, available: int, unavailable: int) -> None:
        _DECIDER.activate()
        _D_REPLICAS.labels(runner, "available").set(available)
        _D_REPLICAS.labels(runner, "unavailable").set(unavailable)

    def registration(self, runner: str, outcome: str) -> None:
        """``joined``, ``refused`` or ``invalid``; ``runner`` is a role (``unknown`` when it is not one)."""
        _DECIDER.activate()
        _D_REGISTRATIONS.labels(runner, outcome).inc()

    def deregistration(self, runner: str, reason: str) -> None:
        """``left``, ``expired`` or ``invalid``."""
        _DECIDER.activate()
        _D_DEREGISTRATIONS.labels(runner, reason).inc()

    def set_telemetry(self, *, stale: bool, age_s: float) -> None:
        _DECIDER.activate()
        _D_TELEMETRY_STALE.set(1 if stale else 0)
        _D_TELEMETRY_AGE.set(age_s)

    def learning_skipped(self, reason: str) -> None:
        _DECIDER.activate()
        _D_LEARN_SKIPPED.labels(reason).inc()


decider_metrics = DeciderMetrics()
