"""Prometheus metrics of the mesh: one place for every name, unit and label set.

Conventions (design.md): prefix ``autoscale_``, base units (seconds, joules, watts, bytes,
ratios 0-1), ``_total`` counters, low-cardinality labels (model, target id, policy, role,
device, processor, link, reading name -- never a request id or a free-form message).

Every metric object is module level and created exactly once: the facades below
(``DeciderMetrics``, ``RunnerMetrics``, ``TelemetryMetrics``) only bind label values, so
building several apps in one process (tests) never registers a name twice.

Multiprocess: when ``PROMETHEUS_MULTIPROC_DIR`` is set *before* prometheus_client is first
imported (the launcher's job, e.g. for ``uvicorn --workers N``), values live in mmap files
and ``/metrics`` aggregates them with ``MultiProcessCollector``. Each gauge declares how
its per-process values combine (``multiprocess_mode``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess

PREFIX = "autoscale_"

# Buckets. Latency: 1 ms .. 10 s, with the two QoS targets of the paper (1/30 s streaming,
# 50 ms) as exact edges so "fraction under QoS" is readable straight from the histogram.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 1 / 30, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# A policy decision is a table lookup (~us) up to a model prediction (~ms).
DECISION_BUCKETS: tuple[float, ...] = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1,
)
# Phone energy of one inference: sub-mJ (tiny model on the DSP) .. several J (big model, weak link).
ENERGY_BUCKETS: tuple[float, ...] = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# Eq. 5 reward: -energy_mJ (+ small latency/accuracy terms), or accuracy-100 when masked out.
REWARD_BUCKETS: tuple[float, ...] = (
    -5000, -2000, -1000, -500, -200, -100, -50, -20, -10, -5, 0, 5, 10, 20, 50,
)


def _n(name: str) -> str:
    return PREFIX + name


class _Group:
    """The metrics of one service kind, registered on first use rather than at import.

    Every service imports this module; registering everything at import would make each
    runner and the telemetry service export the decider's unlabelled series (Q-table size,
    Redis errors) as zeros. (Multiprocess mode writes values at creation regardless: give
    each service its own PROMETHEUS_MULTIPROC_DIR.)"""

    def __init__(self, *metrics: Counter | Gauge | Histogram) -> None:
        self.metrics = metrics
        self.active = False
        self._lock = threading.Lock()

    def activate(self) -> None:
        if self.active:  # the per-call cost on hot paths: one attribute check
            return
        with self._lock:
            if not self.active:
                for m in self.metrics:
                    REGISTRY.register(m)
                self.active = True


# ============================================================================ decider

_D_REQUESTS = Counter(
    _n("decider_requests_total"), "Inference requests answered by the decider",
    ["model", "target", "policy", "outcome"], registry=None,
)
_D_ERRORS = Counter(
    _n("decider_errors_total"), "Inference requests that failed, by error code", ["model", "policy", "code"], registry=None,
)
_D_LATENCY = Histogram(
    _n("decider_latency_seconds"), "End-to-end request latency seen by the decider (host wall clock)",
    ["model", "target", "policy"], buckets=LATENCY_BUCKETS, registry=None,
)
_D_INFERENCE = Histogram(
    _n("decider_inference_seconds"), "Inference latency on the chosen target (measured or modelled)",
    ["model", "target"], buckets=LATENCY_BUCKETS, registry=None,
)
_D_TRANSFER = Histogram(
    _n("decider_transfer_seconds"), "Input+output transfer time to a remote target (0 for local targets)",
    ["model", "target"], buckets=LATENCY_BUCKETS, registry=None,
)
# Named "inference_energy" because a histogram "energy_joules" would collide with the
# counter below ("x_total" counters and "x" histograms share one family name).
_D_ENERGY = Histogram(
    _n("decider_inference_energy_joules"), "Phone energy of one inference (eqs. 1-4)",
    ["model", "target", "policy"], buckets=ENERGY_BUCKETS, registry=None,
)
# A plain counter as well as the histogram's _sum: rate() of it is the phone's inference power.
_D_ENERGY_TOTAL = Counter(
    _n("decider_energy_joules_total"), "Phone energy spent on inference, cumulative", ["model", "target", "policy"], registry=None,
)
# Rewards are mostly negative (-energy in mJ), and a histogram with negative buckets exports no
# _sum (prometheus_client, per OpenMetrics), while rate() on a decreasing sum would read resets.
# So: the histogram for the distribution and its _count, plus a gauge of the running sum, read
# with delta(): mean reward = delta(reward_cumulative[w]) / increase(reward_count[w]).
_D_REWARD = Histogram(
    _n("decider_reward"), "Reward of eq. 5 per answered request", ["model", "policy"], buckets=REWARD_BUCKETS,
    registry=None,
)
_D_REWARD_SUM = Gauge(
    _n("decider_reward_cumulative"), "Running sum of eq. 5 rewards (may decrease: use delta(), not rate())",
    ["model", "policy"], multiprocess_mode="sum", registry=None,
)
_D_QOS_VIOL = Counter(
    _n("decider_qos_violations_total"), "Answered requests whose target latency missed the QoS target",
    ["model", "target", "policy"], registry=None,
)
_D_ACC_VIOL = Counter(
    _n("decider_accuracy_violations_total"), "Answered requests whose expected accuracy missed accuracy_min",
    ["model", "target", "policy"], registry=None,
)
_D_EXPLORE = Counter(
    _n("decider_explorations_total"), "Requests whose target was chosen by exploration (epsilon)",
    ["model", "policy"], registry=None,
)
_D_DECISION = Histogram(
    _n("decider_decision_seconds"), "Time the policy took to pick a target", buckets=DECISION_BUCKETS, registry=None,
)
_Q_STATES = Gauge(
    _n("qtable_states"), "States with at least one Q entry", multiprocess_mode="mostrecent", registry=None,
)
_Q_ENTRIES = Gauge(
    _n("qtable_entries"), "Q entries (state x action) stored", multiprocess_mode="mostrecent", registry=None,
)
_Q_BYTES = Gauge(
    _n("qtable_bytes"), "Approximate size of the Q table", multiprocess_mode="mostrecent", registry=None,
)
_REDIS_ERRORS = Counter(_n("redis_errors_total"), "Failed Redis operations (Q-table reads/updates)", registry=None)
_Q_DROPPED = Counter(
    _n("qtable_updates_dropped_total"), "Q updates dropped (queue full or Redis unavailable)", registry=None,
)
_DECIDER = _Group(
    _D_REQUESTS, _D_ERRORS, _D_LATENCY, _D_INFERENCE, _D_TRANSFER, _D_ENERGY, _D_ENERGY_TOTAL, _D_REWARD, _D_REWARD_SUM,
    _D_QOS_VIOL, _D_ACC_VIOL, _D_EXPLORE, _D_DECISION, _Q_STATES, _Q_ENTRIES, _Q_BYTES, _REDIS_ERRORS, _Q_DROPPED,
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
                _n("redis_up"), "1 when the last Redis health check/operation succeeded, else 0",
                multiprocess_mode="livemin",
            )
        return _REDIS_UP


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
        _D_REQUESTS.labels(model, target, policy, outcome).inc()
        _D_LATENCY.labels(model, target, policy).observe(latency_s)
        _D_INFERENCE.labels(model, target).observe(inference_s)
        _D_TRANSFER.labels(model, target).observe(transfer_s)
        _D_ENERGY.labels(model, target, policy).observe(energy_j)
        _D_ENERGY_TOTAL.labels(model, target, policy).inc(max(energy_j, 0.0))
        _D_REWARD.labels(model, policy).observe(reward)
        _D_REWARD_SUM.labels(model, policy).inc(reward)
        # Touch the violation counters even when nothing is violated: a series that exists at 0
        # makes ratios in PromQL read 0 instead of "no data".
        qos = _D_QOS_VIOL.labels(model, target, policy)
        acc = _D_ACC_VIOL.labels(model, target, policy)
        exp = _D_EXPLORE.labels(model, policy)
        if not qos_met:
            qos.inc()
        if not accuracy_met:
            acc.inc()
        if explored:
            exp.inc()

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


decider_metrics = DeciderMetrics()


# ============================================================================ runners

_R_EXEC = Counter(
    _n("runner_executions_total"), "Network executions started on a runner", ["role", "target"], registry=None,
)
_R_ERRORS = Counter(
    _n("runner_errors_total"), "Network executions that raised", ["role", "target"], registry=None,
)
_R_QUEUE = Gauge(
    _n("runner_queue_depth"), "Executions in flight (waiting for or holding the executor)",
    ["role", "target"], multiprocess_mode="livesum", registry=None,
)
_R_BUSY = Counter(
    _n("runner_busy_seconds_total"), "Wall seconds spent executing; rate() is the utilisation", ["role", "target"], registry=None,
)
_R_DURATION = Histogram(
    _n("runner_execution_seconds"), "Host wall time of one execution", ["role", "target"], buckets=LATENCY_BUCKETS, registry=None,
)
_R_ENERGY = Counter(
    _n("runner_energy_joules_total"), "Energy the executing device spent (source: measured|modelled)",
    ["role", "target", "source"], registry=None,
)


_RUNNER = _Group(_R_EXEC, _R_ERRORS, _R_QUEUE, _R_BUSY, _R_DURATION, _R_ENERGY)


class RunnerMetrics:
    """Metrics of one runner role (edge, peer, cloud); the target label is the action id."""

    def __init__(self, role: str) -> None:
        self.role = role
        _RUNNER.activate()

    @contextmanager
    def track(self, target: str) -> Iterator[None]:
        """Wrap one execution: count, in-flight gauge, errors. Its time and energy go to
        ``record``, which the runner calls once the response is out."""
        labels = (self.role, target)
        _R_EXEC.labels(*labels).inc()
        _R_ERRORS.labels(*labels)  # create the series at 0 so error ratios have data
        queue = _R_QUEUE.labels(*labels)
        queue.inc()
        try:
            yield
        except BaseException:
            _R_ERRORS.labels(*labels).inc()
            raise
        finally:
            queue.dec()

    def record(self, target: str, seconds: float, joules: float, source: str) -> None:
        """One finished execution: host seconds (busy time, duration) and the device's energy."""
        labels = (self.role, target)
        _R_BUSY.labels(*labels).inc(seconds)
        _R_DURATION.labels(*labels).observe(seconds)
        _R_ENERGY.labels(self.role, target, source).inc(max(joules, 0.0))


# ============================================================================ telemetry

_T_POWER = Gauge(
    _n("telemetry_power_watts"), "Power draw per device and processor",
    ["device", "processor", "source"], multiprocess_mode="mostrecent", registry=None,
)
_T_ENERGY = Counter(
    _n("telemetry_energy_joules_total"), "Energy counted by a hardware energy meter (e.g. RAPL)",
    ["device", "processor", "source"], registry=None,
)
_T_RSSI = Gauge(
    _n("telemetry_rssi_dbm"), "Received signal strength per link (wifi, p2p)", ["link", "source"],
    multiprocess_mode="mostrecent", registry=None,
)
_T_CO_CPU = Gauge(
    _n("telemetry_corunner_cpu_ratio"), "CPU utilisation of co-running (non-mesh) processes, 0-1", ["source"],
    multiprocess_mode="mostrecent", registry=None,
)
_T_CO_MEM = Gauge(
    _n("telemetry_corunner_memory_ratio"), "Memory used by co-running (non-mesh) processes, 0-1", ["source"],
    multiprocess_mode="mostrecent", registry=None,
)
_T_AGE = Gauge(
    _n("telemetry_reading_age_seconds"), "Seconds since the reading was last refreshed successfully",
    ["reading"], multiprocess_mode="mostrecent", registry=None,
)
_T_STALE = Gauge(
    _n("telemetry_reading_stale"), "1 when the reading is older than the staleness threshold", ["reading"],
    multiprocess_mode="mostrecent", registry=None,
)
_T_CPU_FREQ = Gauge(
    _n("telemetry_cpu_frequency_hertz"), "Mean CPU frequency per cpufreq policy over the last interval", ["policy"],
    multiprocess_mode="mostrecent", registry=None,
)
_T_SOURCE_ERRORS = Counter(
    _n("telemetry_source_errors_total"), "Source reads that failed or timed out", ["source_name", "reason"], registry=None,
)
_T_READ = Histogram(
    _n("telemetry_read_seconds"), "Duration of one successful read of a source", ["source_name"],
    buckets=LATENCY_BUCKETS, registry=None,
)


_TELEMETRY = _Group(
    _T_POWER, _T_ENERGY, _T_RSSI, _T_CO_CPU, _T_CO_MEM, _T_AGE, _T_STALE, _T_CPU_FREQ, _T_SOURCE_ERRORS, _T_READ,
)


class TelemetryMetrics:
    """Gauges mirroring the telemetry service's current readings (module singleton
    ``telemetry_metrics``; the telemetry service calls ``activate()`` at start).

    When the source serving a value changes (measured <-> emulated), the old series is
    removed so a dashboard never shows a frozen value next to the live one."""

    def __init__(self) -> None:
        self._served_by: dict[tuple[int, tuple[str, ...]], tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def activate(self) -> None:
        _TELEMETRY.activate()

    def _switch(self, gauge: Gauge, key: tuple[str, ...], labels: tuple[str, ...]) -> None:
        ident = (id(gauge), key)  # the gauges are module singletons: their id is stable
        with self._lock:
            old = self._served_by.get(ident)
            if old is not None and old != labels:
                try:
                    gauge.remove(*old)
                except KeyError:
                    pass
            self._served_by[ident] = labels

    def set_power(self, *, device: str, processor: str, source: str, watts: float) -> None:
        labels = (device, processor, source)
        self._switch(_T_POWER, (device, processor), labels)
        _T_POWER.labels(*labels).set(watts)

    def add_energy(self, *, device: str, processor: str, source: str, joules: float) -> None:
        if joules > 0:  # a counter never goes back (meter wrap-around is handled by the source)
            _T_ENERGY.labels(device, processor, source).inc(joules)

    def set_rssi(self, *, link: str, source: str, dbm: float) -> None:
        self._switch(_T_RSSI, (link,), (link, source))
        _T_RSSI.labels(link, source).set(dbm)

    def set_corunner(self, *, cpu_ratio: float | None = None, memory_ratio: float | None = None, source: str) -> None:
        if cpu_ratio is not None:
            self._switch(_T_CO_CPU, (), (source,))
            _T_CO_CPU.labels(source).set(cpu_ratio)
        if memory_ratio is not None:
            self._switch(_T_CO_MEM, (), (source,))
            _T_CO_MEM.labels(source).set(memory_ratio)

    def set_cpu_frequency(self, *, policy: str, hertz: float) -> None:
        _T_CPU_FREQ.labels(policy).set(hertz)

    def set_age(self, *, reading: str, age_s: float, stale: bool) -> None:
        _T_AGE.labels(reading).set(age_s)
        _T_STALE.labels(reading).set(1 if stale else 0)

    def source_error(self, *, source_name: str, reason: str) -> None:
        _T_SOURCE_ERRORS.labels(source_name, reason).inc()

    def observe_read(self, *, source_name: str, seconds: float) -> None:
        _T_READ.labels(source_name).observe(seconds)


telemetry_metrics = TelemetryMetrics()


# ============================================================================ endpoint


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # A fresh registry per scrape is the documented multiprocess pattern: the collector
        # reads every worker's mmap files at collection time.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render_metrics() -> bytes:
    """The text exposition of this process (or all workers in multiprocess mode)."""
    return generate_latest(_registry())


def metrics_endpoint(app: FastAPI) -> None:
    """Add ``GET /metrics`` (Prometheus text format) to an app."""

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # sync: runs in the threadpool, collection never blocks the loop
        return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)
